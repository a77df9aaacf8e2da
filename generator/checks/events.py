"""Checks of the broker's permissions as rendered (events/broker-permissions.json): every
service's user may publish and subscribe to exactly what its catalog edges need, read back
subject by subject, as the NetworkPolicy check reads policies back against the HTTP edges."""

from __future__ import annotations

import json
import re
from typing import Any

from ..catalog import messages
from ..render.context import RenderContext
from ..render.events import PERMISSIONS
from .passes import NONE, Passes

# what a subject in a user's publish list means: (kind, channel or stream, rest)
_PUBLISH = re.compile(rf"^{messages.SUBJECT_PREFIX}\.([a-z0-9-]+)\.v([0-9]+)$")
_CONSUMER = re.compile(
    r"^\$JS\.(?:API\.CONSUMER\.(?:INFO|MSG\.NEXT)\.([A-Z0-9_]+)\.([A-Z0-9_]+)|ACK\.([A-Z0-9_]+)\.([A-Z0-9_]+)\.>)$"
)
_DEAD = re.compile(rf"^{messages.DEAD_PREFIX}\.([a-z0-9-]+)\.([a-z0-9-]+)$")
_BUCKET = re.compile(
    r"^\$(?:KV\.([A-Z0-9_]+)\.>|JS\.API\.(?:STREAM\.INFO|DIRECT\.GET|STREAM\.MSG\.GET)\.KV_([A-Z0-9_]+)(?:\.>)?)$"
)


def _allowed(block: Any) -> list[str] | None:
    """The allow list of a publish/subscribe block; [] for deny-all; None for anything else."""
    if block == {"deny": [">"]}:
        return []
    if isinstance(block, dict) and set(block) == {"allow"} and isinstance(block["allow"], list) and block["allow"]:
        return [str(s) for s in block["allow"]]
    return None


def run(ctx: RenderContext, files: dict[str, str], passes: Passes = NONE) -> list[str]:
    """Each service's broker user against its edges: nothing missing, nothing more. (No pass is
    kept, ``passes`` goes unused: every user is in one file, read once.)"""
    cat = ctx.catalog
    if not cat.events:
        return [f"{PERMISSIONS}: rendered, but the catalog has no events"] if PERMISSIONS in files else []
    if PERMISSIONS not in files:
        return [f"{PERMISSIONS}: was not rendered"]
    users: dict[str, Any] = json.loads(files[PERMISSIONS]).get("users", {})
    failures: list[str] = []
    for name in sorted(set(users) - set(cat.services)):
        failures.append(f"{PERMISSIONS}: {name}: a broker user for a service the catalog does not have")
    stream_of = {messages.stream(ch): ch for ch in cat.events}
    # each service's channels, from the catalog's own lists in one pass (a pass over every
    # channel for each service was most of an edit at 10,000 services and 2,000 channels)
    pubs_of: dict[str, set[str]] = {}
    subs_of: dict[str, set[str]] = {}
    for ch, c in cat.events.items():
        for who in c.publishers:
            pubs_of.setdefault(who, set()).add(ch)
        for who in c.subscribers:
            subs_of.setdefault(who, set()).add(ch)
    for name in sorted(cat.services):
        user = users.get(name)
        if user is None:
            failures.append(f"{PERMISSIONS}: {name}: has no broker user")
            continue
        publish, subscribe = _allowed(user.get("publish")), _allowed(user.get("subscribe"))
        if publish is None or subscribe is None or set(user) != {"publish", "subscribe"}:
            failures.append(f"{PERMISSIONS}: {name}: permissions must be a non-empty allow list or deny '>' each")
            continue
        pubs, subs = pubs_of.get(name, set()), subs_of.get(name, set())
        seen_pub: set[str] = set()
        seen_sub: dict[str, set[str]] = {}
        for subject in publish:
            why = _explain(name, subject, cat, pubs, subs, stream_of, seen_pub, seen_sub)
            if why:
                failures.append(f"{PERMISSIONS}: {name}: may publish to {subject}, {why}")
        for ch in sorted(pubs - seen_pub):
            failures.append(f"{PERMISSIONS}: {name}: publishes on {ch} in the catalog, but may not publish its subject")
        for ch in sorted(subs):
            missing = {"info", "next", "ack", "dead"} - seen_sub.get(ch, set())
            if missing:
                failures.append(
                    f"{PERMISSIONS}: {name}: consumes {ch} in the catalog, but lacks {', '.join(sorted(missing))}"
                )
        inbox = [f"{messages.inbox(name)}.>"] if publish else []
        if subscribe != inbox:
            failures.append(f"{PERMISSIONS}: {name}: may subscribe to {subscribe}, expected only its inbox {inbox}")
    return failures


def _explain(
    name: str,
    subject: str,
    cat: Any,
    pubs: set[str],
    subs: set[str],
    stream_of: dict[str, str],
    seen_pub: set[str],
    seen_sub: dict[str, set[str]],
) -> str | None:
    """None when a catalog edge of ``name`` needs ``subject`` (and records which), else why not."""
    if m := _PUBLISH.match(subject):
        ch, version = m.group(1), int(m.group(2))
        if ch not in pubs:
            return f"but the catalog does not list it as a publisher of {ch}"
        if version != cat.events[ch].message.version:
            return f"but {ch}'s message is version {cat.events[ch].message.version}"
        seen_pub.add(ch)
        return None
    if m := _CONSUMER.match(subject):
        stream, durable = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        ch = stream_of.get(stream)
        if ch not in subs:
            return f"but it consumes no channel whose stream is {stream}"
        if durable != messages.durable(name):
            return f"but {durable} is another consumer than its own ({messages.durable(name)})"
        what = "ack" if subject.startswith("$JS.ACK.") else ("next" if ".MSG.NEXT." in subject else "info")
        seen_sub.setdefault(ch, set()).add(what)
        return None
    if m := _DEAD.match(subject):
        ch, owner = m.groups()
        if owner != name or ch not in subs:
            return "but that is not the dead-letter subject of a channel it consumes"
        seen_sub.setdefault(ch, set()).add("dead")
        return None
    if m := _BUCKET.match(subject):
        bucket = m.group(1) or m.group(2)
        if bucket != messages.handled_bucket(name) or not subs:
            return "but that is not its own bucket of handled messages"
        return None
    return "which no catalog edge explains"
