"""Event channels as the platform sees them: the rules a catalog's `events:` must follow (part of
the graph pass in validate.py), the publish/subscribe edges, and each service's broker
permissions, derived from those edges and nothing else.

Deployment order: the broker is infrastructure, started in its stage; `nexus up` and `nexus
deploy` create every channel's stream and every subscriber's durable consumer right after it,
before any service of a later stage starts. A consumer that starts later still gets every
message published since (its durable consumer was already collecting them); a service placed in
a stage *before* the broker's could never connect, and is refused here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from . import messages
from .models import Catalog, Channel

Report = Callable[[tuple[str | int, ...], str], None]
Role = Literal["publishes", "subscribes"]
BROKER_KIND = "message-queue"


def broker(cat: Catalog) -> str | None:
    """The infrastructure component events travel through: the one of kind message-queue."""
    found = sorted(n for n, c in cat.infrastructure.items() if c.kind == BROKER_KIND)
    return found[0] if len(found) == 1 else None


def edges(cat: Catalog) -> list[dict[str, str]]:
    """Every (service, channel) edge, sorted: the one list permissions, graphs and docs use."""
    out = [
        {"service": svc, "channel": name, "kind": ch.kind, "role": role}
        for name, ch in cat.events.items()
        for role, members in (("publishes", ch.publishers), ("subscribes", ch.subscribers))
        for svc in members
    ]
    return sorted(out, key=lambda e: (e["service"], e["channel"], e["role"]))


def participants(cat: Catalog) -> list[str]:
    """Services that publish or subscribe: each needs its own broker user."""
    return sorted({e["service"] for e in edges(cat)})


Channels = dict[tuple[str, Role], list[str]]  # (service, role) -> its channels, sorted


def channels(cat: Catalog) -> Channels:
    """Each service's channels by role, from one pass over ``edges``: for callers that ask of
    every service. (Asking each service by a pass over every edge was quadratic: 10,000
    services and 2,000 channels took 208 s to render instead of 30.)"""
    out: Channels = {}
    for e in edges(cat):
        out.setdefault((e["service"], e["role"]), []).append(e["channel"])  # type: ignore[arg-type]
    return out


def edges_by_service(cat: Catalog) -> dict[str, list[dict[str, str]]]:
    """``edges``, each service's on their own (in the same order): one pass, as ``channels``."""
    out: dict[str, list[dict[str, str]]] = {}
    for e in edges(cat):
        out.setdefault(e["service"], []).append(e)
    return out


# -- permissions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Permissions:
    """The subjects one service's broker user may publish to and subscribe to.

    Empty means nothing: `to_nats` never writes an empty allow list, which NATS reads as
    "no restriction"."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]

    def to_nats(self) -> dict[str, Any]:
        """The `permissions` block of a NATS user."""
        return {
            "publish": {"allow": list(self.publish)} if self.publish else {"deny": [">"]},
            "subscribe": {"allow": list(self.subscribe)} if self.subscribe else {"deny": [">"]},
        }


def consume_subjects(channel: str, service: str) -> list[str]:
    """What a subscriber must publish to use its pre-created durable pull consumer: ask for
    its info, fetch, acknowledge; and dead-letter what it gives up on."""
    stream, durable = messages.stream(channel), messages.durable(service)
    return [
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        messages.dead_subject(channel, service),
    ]


def handled_subjects(service: str) -> list[str]:
    """What a subscriber must publish to read and write its bucket of handled message ids."""
    bucket = messages.handled_bucket(service)
    return [
        f"$JS.API.STREAM.INFO.KV_{bucket}",
        f"$JS.API.DIRECT.GET.KV_{bucket}.>",
        f"$JS.API.STREAM.MSG.GET.KV_{bucket}",
        f"$KV.{bucket}.>",
    ]


def permissions(cat: Catalog) -> dict[str, Permissions]:
    """Service -> its broker permissions: exactly its publish and subscribe edges, plus its own
    inbox for replies. Every service is listed; one with no edge may publish and read nothing.
    This is what the broker's configuration is written from (one user per service)."""
    out: dict[str, Permissions] = {}
    index = channels(cat)
    for service in sorted(cat.services):
        publish: list[str] = []
        for name in index.get((service, "publishes"), []):
            publish.append(messages.subject(name, cat.events[name].message.version))
        consumed = index.get((service, "subscribes"), [])
        for name in consumed:
            publish.extend(consume_subjects(name, service))
        if consumed:
            publish.extend(handled_subjects(service))
        subscribe = [f"{messages.inbox(service)}.>"] if publish else []
        out[service] = Permissions(tuple(sorted(set(publish))), tuple(subscribe))
    return out


# -- what the broker holds ---------------------------------------------------------------------


def broker_objects(cat: Catalog) -> dict[str, Any]:
    """The streams, durable consumers and buckets `nexus up`/`deploy` create after the broker
    starts, as plain data (the runtime's `events.provision` reads it)."""
    channels = []
    for name, ch in sorted(cat.events.items()):
        channels.append(
            {
                "name": name,
                "kind": ch.kind,
                "stream": messages.stream(name),
                "subjects": [messages.stream_subjects(name)],
                "durables": [messages.durable(s) for s in sorted(ch.subscribers)],
            }
        )
    consumers = sorted({s for ch in cat.events.values() for s in ch.subscribers})
    return {
        "channels": channels,
        "dead_letter": {"stream": messages.DEAD_STREAM, "subjects": [f"{messages.DEAD_PREFIX}.>"]},
        "buckets": [messages.handled_bucket(s) for s in consumers],
    }


# -- rules ------------------------------------------------------------------------------------


def check(
    cat: Catalog,
    report: Report,
    stage_index: dict[str, int],
    did_you_mean: Callable[[str, Iterable[str]], str],
    assume: frozenset[str] = frozenset(),
) -> None:
    """Report (path, message) for every event rule the catalog breaks."""
    if not cat.events:
        return
    brokers = sorted(n for n, c in cat.infrastructure.items() if c.kind == BROKER_KIND)
    if not brokers:
        report(
            ("events",),
            "events need a message broker, and no infrastructure component has kind: message-queue; "
            "declare one (e.g. 'nats: {kind: message-queue, ...}') under infrastructure and a stage",
        )
    elif len(brokers) > 1:
        report(
            ("infrastructure", brokers[1]),
            f"two message brokers ({', '.join(brokers)}); events travel through one, so keep one of kind message-queue",
        )
    stage_of = cat.stage_of()
    broker_stage = next((s.name for s in cat.stages for c in s.infrastructure if c in brokers[:1]), None)
    known = set(cat.services) | assume
    for name, ch in sorted(cat.events.items()):
        _check_channel(cat, name, ch, report, known, stage_of, stage_index, broker_stage, brokers, did_you_mean)


def _check_channel(
    cat: Catalog,
    name: str,
    ch: Channel,
    report: Report,
    known: set[str],
    stage_of: dict[str, str],
    stage_index: dict[str, int],
    broker_stage: str | None,
    brokers: list[str],
    did_you_mean: Callable[[str, Iterable[str]], str],
) -> None:
    at = ("events", name)
    if not ch.publishers:
        report(
            (*at, "publishers") if "publishers" in ch.model_fields_set else at,
            f"nobody publishes on channel '{name}'; list the services that do under 'publishers:', "
            "or remove the channel",
        )
    if not ch.subscribers:
        report(
            (*at, "subscribers") if "subscribers" in ch.model_fields_set else at,
            f"nobody consumes channel '{name}'; list the services that do under 'subscribers:', or remove the channel",
        )
    if ch.kind == "queue" and len(set(ch.subscribers)) > 1:
        report(
            (*at, "subscribers"),
            f"queue '{name}' has {len(set(ch.subscribers))} consuming services, but a queue hands each message to one "
            "consumer; keep one service (its instances share the work), or make it kind: pubsub so every "
            "service gets each message",
        )
    for role in ("publishers", "subscribers"):
        members: list[str] = getattr(ch, role)
        seen: set[str] = set()
        for j, svc in enumerate(members):
            where = (*at, role, j)
            if svc in seen:
                report(where, f"'{svc}' is listed twice in {role}; remove one")
                continue
            seen.add(svc)
            if svc not in known:
                report(where, f"unknown service '{svc}'{did_you_mean(svc, cat.services)}")
                continue
            verb = "publishes on" if role == "publishers" else "consumes"
            if brokers and svc in cat.services and brokers[0] not in cat.services[svc].uses:
                report(
                    where,
                    f"'{svc}' {verb} '{name}', so it uses the broker; add '{brokers[0]}' to services.{svc}.uses "
                    "(the NetworkPolicies and mesh rules to the broker follow the uses)",
                )
            here = stage_of.get(svc)
            if broker_stage and here in stage_index and stage_index[here] < stage_index[broker_stage]:
                report(
                    where,
                    f"'{svc}' (stage '{here}') {verb} '{name}', whose stream and consumers are created in stage "
                    f"'{broker_stage}' with the broker '{brokers[0]}', later; move '{svc}' to stage '{broker_stage}' "
                    "or later, or the broker earlier",
                )
