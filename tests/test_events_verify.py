"""`nexus verify`'s event flows on a real broker: a probe per channel, each consumer seen to
acknowledge it, the audit stream replayed from its first message; a missing consumer is named."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import broker
import pytest
from test_events_delivery import FAST, PUB, SignedIn, catalog, rt, spec

from nexus.catalog import events as ev
from nexus.local.events import verify_events

pytest.importorskip("nats")


def test_verify_proves_each_hop_and_names_the_missing_consumer(tmp_path: Path) -> None:
    cat = catalog("stream", ["media", "gateway"])
    users = {name: p.to_nats() for name, p in ev.permissions(cat).items()}

    async def main() -> None:
        with broker.running(tmp_path / "nats", users) as server:
            await provisioned_as_admin(server, cat)
            handled: list[Any] = []

            async def handle(msg: SignedIn, _: Any) -> None:
                handled.append(msg)

            pub = rt.Broker(spec("auth"), FAST)
            await pub.start(server.url, "auth", "auth-secret")
            for n in range(3):  # the audit trail already holds entries
                await pub.publish(PUB, SignedIn(user_id="u", n=n))
            media, gateway = rt.Broker(spec("media", handle), FAST), rt.Broker(spec("gateway", handle), FAST)
            await media.start(server.url, "media", "media-secret")
            await gateway.start(server.url, "gateway", "gateway-secret")
            report = await verify_events(cat, server.url, *broker.ADMIN, timeout=5)
            assert report.failures == [], report.failures
            hops = [(h.hop, h.ok) for h in report.hops]
            assert hops == [
                ("publish as auth", True),
                ("consume by gateway", True),
                ("consume by media", True),
                ("replay", True),
            ]
            assert report.hops[-1].detail == "4 messages from #1 in order"
            assert len(handled) == 6  # the 3 entries, twice; the probe reached no handler

            await gateway.stop()  # a consumer that is down
            report = await verify_events(cat, server.url, *broker.ADMIN, timeout=1)
            assert report.failures == [
                "event signed-in: consume by gateway: never fetched it within 1 s "
                "(is the service running and connected to the broker?)"
            ]
            await media.stop()
            await pub.stop()

    asyncio.run(main())


async def provisioned_as_admin(server: broker.Server, cat: Any) -> None:
    import nats

    nc = await nats.connect(server.url, user=broker.ADMIN[0], password=broker.ADMIN[1])
    await rt.provision(nc.jetstream(), ev.broker_objects(cat), rt.Provisioning(ack_wait_seconds=2))
    await nc.close()
