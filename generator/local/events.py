"""`nexus verify`'s event half: prove each event flow on the running broker, hop by hop.

For every channel: publish a probe message at the source (valid by the channel's schema, marked
as a probe so no team handler acts on it), then observe each expected consumer's durable
consumer acknowledge it (the service received it, parsed it and acknowledged it); for a stream,
also replay it from the first message and check the order. A failure names the hop: the
channel, and the publisher or the consumer that did not do its part.

It needs the broker's address and an administrator's credentials: `nexus verify` passes those
of the broker `nexus up` runs here (nexus.local.verify).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..catalog import messages
from ..catalog.models import Catalog

PROBE_HEADER = "Nexus-Probe"  # nexus_runtime.events.PROBE: the services ack it without their handler
# a value of each field type that its JSON Schema accepts (messages.SCALARS)
_SAMPLE: dict[str, Any] = {
    "string": "nexus-verify",
    "integer": 0,
    "number": 0.0,
    "boolean": False,
    "datetime": "2026-01-01T00:00:00Z",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


@dataclass
class EventHop:
    channel: str
    hop: str  # "publish", "consume <service>" or "replay"
    ok: bool
    detail: str = ""


@dataclass
class EventReport:
    hops: list[EventHop] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [f"event {h.channel}: {h.hop}: {h.detail}" for h in self.hops if not h.ok]


def probe(cat: Catalog, channel: str) -> bytes:
    """A message of ``channel`` that its schema accepts (required fields only)."""
    body = {}
    for name, text in cat.events[channel].message.fields.items():
        t = messages.field_type(text)
        if not t.optional:
            body[name] = [] if t.many else _SAMPLE[t.scalar]
    return json.dumps(body).encode()


async def verify_events(cat: Catalog, url: str, user: str, password: str, *, timeout: float = 10.0) -> EventReport:
    """Publish a probe on every channel and watch every consumer acknowledge it."""
    import nats  # the 'run' extra, as for the rest of nexus.local

    report = EventReport()
    nc = await nats.connect(url, user=user, password=password, allow_reconnect=False)
    try:
        js = nc.jetstream()
        for name, ch in sorted(cat.events.items()):
            stream = messages.stream(name)
            publisher = sorted(set(ch.publishers))[0]
            try:
                ack = await js.publish(
                    messages.subject(name, ch.message.version),
                    probe(cat, name),
                    headers={PROBE_HEADER: "1", "Nats-Msg-Id": f"nexus-verify-{secrets.token_hex(8)}"},
                )
            except Exception as exc:  # the broker's own words: no stream, no permission, timeout
                report.hops.append(EventHop(name, f"publish as {publisher}", False, f"{type(exc).__name__}: {exc}"))
                continue
            report.hops.append(EventHop(name, f"publish as {publisher}", True, f"stored as {stream} #{ack.seq}"))
            waits = [
                _acknowledged(js, stream, messages.durable(s), ack.seq, timeout) for s in sorted(set(ch.subscribers))
            ]
            for service, detail in zip(sorted(set(ch.subscribers)), await asyncio.gather(*waits), strict=True):
                report.hops.append(EventHop(name, f"consume by {service}", detail is None, detail or "acknowledged"))
            if ch.kind == "stream":
                report.hops.append(await _replay(js, name, ack.seq, timeout))
    finally:
        await nc.close()
    return report


async def _acknowledged(js: Any, stream: str, durable: str, seq: int, timeout: float) -> str | None:
    """None once ``durable`` acknowledged everything up to ``seq``, else what it did instead."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            info = await js.consumer_info(stream, durable)
        except Exception as exc:
            return f"its consumer {durable} on {stream} is missing ({type(exc).__name__}); run nexus up again"
        if info.ack_floor.stream_seq >= seq:
            return None
        if loop.time() > deadline:
            got = "received it but did not acknowledge it" if info.delivered.stream_seq >= seq else "never fetched it"
            return f"{got} within {timeout:g} s (is the service running and connected to the broker?)"
        await asyncio.sleep(0.1)


async def _replay(js: Any, channel: str, last: int, timeout: float) -> EventHop:
    """Read the stream from its first message: every message present, in order."""
    sub = await js.subscribe(messages.stream_subjects(channel), ordered_consumer=True)
    seqs: list[int] = []
    try:
        while not seqs or seqs[-1] < last:
            msg = await sub.next_msg(timeout=timeout)
            seqs.append(msg.metadata.sequence.stream)
    except Exception as exc:
        return EventHop(channel, "replay", False, f"stopped after {len(seqs)} messages: {type(exc).__name__}")
    finally:
        await sub.unsubscribe()
    info = await js.stream_info(messages.stream(channel))
    ordered = seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    whole = seqs[:1] == [info.state.first_seq] and len(seqs) >= min(info.state.messages, last)
    ok = ordered and whole
    detail = f"{len(seqs)} messages from #{seqs[0]} in order" if ok else f"out of order or incomplete: {seqs[:10]}..."
    return EventHop(channel, "replay", ok, detail)
