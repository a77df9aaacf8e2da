"""Delivery semantics of the runtime's event layer, against a real nats-server with JetStream:
queue, fan-out, replay, retries then dead letter, deduplication, headers."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import broker
import pytest
from conftest import MINIMAL, dump, whole_lines

from nexus.catalog import events as ev
from nexus.catalog import load_catalog_text
from nexus.catalog import messages as names

nats = pytest.importorskip("nats")
sys_path_runtime = Path(__file__).resolve().parent.parent / "generated" / "runtime"


def _runtime() -> Any:
    import sys

    if str(sys_path_runtime) not in sys.path:
        sys.path.insert(0, str(sys_path_runtime))
    from nexus_runtime import events

    return events


rt = _runtime()
from nexus_runtime import tracing  # noqa: E402  (the generated runtime, put on the path above)


class SignedIn(rt.Message):
    user_id: str
    n: int


def catalog(kind: str, subscribers: list[str]) -> Any:
    data = copy.deepcopy(MINIMAL)
    data["infrastructure"]["nats"] = {"kind": "message-queue", "description": "NATS", "port": 4222}
    data["stages"][0]["infrastructure"].append("nats")
    for svc in data["services"].values():
        svc["uses"] = [*svc.get("uses", []), "nats"]
    data["events"] = {
        "signed-in": {
            "kind": kind,
            "description": "Signed in",
            "message": {"version": 1, "fields": {"user_id": "string", "n": "integer"}},
            "publishers": ["auth"],
            "subscribers": subscribers,
        }
    }
    return load_catalog_text(dump(data)).catalog


PUB = rt.Publication("signed-in", names.subject("signed-in", 1), SignedIn)


def spec(service: str, handler: Callable[[Any, Any], Awaitable[None]] | None = None) -> Any:
    subs = ()
    if handler is not None:
        subs = (
            rt.Subscription(
                "signed-in",
                names.stream("signed-in"),
                names.durable(service),
                names.dead_subject("signed-in", service),
                SignedIn,
                handler,
            ),
        )
    return rt.EventsSpec(names.inbox(service), names.handled_bucket(service), (PUB,), subs)


FAST = rt.Delivering(max_attempts=3, backoff_seconds=(0.05,), batch=32, fetch_wait_seconds=0.2)


async def provisioned(server: broker.Server, cat: Any, **limits: Any) -> None:
    nc = await nats.connect(server.url)
    try:
        await rt.provision(nc.jetstream(), ev.broker_objects(cat), rt.Provisioning(**limits))
    finally:
        await nc.close()


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with broker.running(tmp_path / "nats") as s:
        yield s


def test_queue_hands_each_message_to_one_instance(server: broker.Server) -> None:
    async def main() -> None:
        await provisioned(server, catalog("queue", ["media"]))
        seen: dict[str, list[int]] = {"a": [], "b": []}

        def recorder(tag: str) -> Callable[[Any, Any], Awaitable[None]]:
            async def handle(msg: SignedIn, _: Any) -> None:
                seen[tag].append(msg.n)
                await asyncio.sleep(0)

            return handle

        a, b = rt.Broker(spec("media", recorder("a")), FAST), rt.Broker(spec("media", recorder("b")), FAST)
        pub = rt.Broker(spec("auth"), FAST)
        for x in (a, b, pub):
            await x.start(server.url)
        for n in range(300):
            await pub.publish(PUB, SignedIn(user_id=f"u{n}", n=n))
        await until(lambda: len(seen["a"]) + len(seen["b"]) >= 300)
        await asyncio.sleep(0.3)
        for x in (a, b, pub):
            await x.stop()
        assert sorted(seen["a"] + seen["b"]) == list(range(300))  # each once, none lost
        assert seen["a"] and seen["b"]  # both instances took work

    asyncio.run(main())


def test_pubsub_gives_every_service_every_message_and_a_stream_replays_in_order(server: broker.Server) -> None:
    async def main() -> None:
        await provisioned(server, catalog("pubsub", ["media", "gateway"]))
        got: dict[str, list[int]] = {"media": [], "gateway": []}

        def into(name: str) -> Callable[[Any, Any], Awaitable[None]]:
            async def handle(msg: SignedIn, _: Any) -> None:
                got[name].append(msg.n)

            return handle

        pub = rt.Broker(spec("auth"), FAST)
        await pub.start(server.url)
        for n in range(50):  # published before any consumer runs: the durable consumers keep them
            await pub.publish(PUB, SignedIn(user_id="u", n=n))
        media, gateway = (
            rt.Broker(spec("media", into("media")), FAST),
            rt.Broker(spec("gateway", into("gateway")), FAST),
        )
        await media.start(server.url)
        await gateway.start(server.url)
        await until(lambda: len(got["media"]) == 50 and len(got["gateway"]) == 50)
        for x in (media, gateway, pub):
            await x.stop()
        assert got["media"] == got["gateway"] == list(range(50))

    asyncio.run(main())


def test_stream_is_replayable_from_the_first_message(server: broker.Server) -> None:
    async def main() -> None:
        await provisioned(server, catalog("stream", ["media"]))
        got: list[int] = []

        async def handle(msg: SignedIn, _: Any) -> None:
            got.append(msg.n)

        pub, media = rt.Broker(spec("auth"), FAST), rt.Broker(spec("media", handle), FAST)
        await pub.start(server.url)
        await media.start(server.url)
        for n in range(20):
            await pub.publish(PUB, SignedIn(user_id="u", n=n))
        await until(lambda: len(got) == 20)
        await media.stop()
        await pub.stop()
        # the stream keeps what was handled: a new reader replays all of it, in order
        nc = await nats.connect(server.url)
        sub = await nc.jetstream().subscribe(names.stream_subjects("signed-in"), ordered_consumer=True)
        replay = [json.loads((await sub.next_msg(timeout=2)).data)["n"] for _ in range(20)]
        await nc.close()
        assert got == replay == list(range(20))

    asyncio.run(main())


def test_failing_handler_is_retried_with_backoff_then_dead_lettered(server: broker.Server) -> None:
    async def main() -> None:
        await provisioned(server, catalog("queue", ["media"]))
        attempts: list[tuple[int, float]] = []

        async def handle(msg: SignedIn, delivery: Any) -> None:
            attempts.append((delivery.attempt, asyncio.get_running_loop().time()))
            raise RuntimeError("the invoice store is down")

        slow = rt.Delivering(max_attempts=3, backoff_seconds=(0.3, 0.6), batch=8, fetch_wait_seconds=0.2)
        media, pub = rt.Broker(spec("media", handle), slow), rt.Broker(spec("auth"), slow)
        await media.start(server.url)
        await pub.start(server.url)
        message_id = await pub.publish(PUB, SignedIn(user_id="u1", n=7))
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await until(lambda: len(attempts) == 3)
        dead = await js.subscribe(names.dead_subject("signed-in", "media"), ordered_consumer=True)
        letter = await dead.next_msg(timeout=5)
        await asyncio.sleep(0.8)  # nothing more: it was acknowledged after dead-lettering
        await media.stop()
        await pub.stop()
        await nc.close()
        assert [a for a, _ in attempts] == [1, 2, 3]
        gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.5  # the backoff, growing
        assert json.loads(letter.data) == {"user_id": "u1", "n": 7}
        assert letter.headers[rt.MSG_ID] == message_id
        assert "the invoice store is down" in letter.headers[rt.DEAD_ERROR]
        assert letter.headers[rt.DEAD_ATTEMPTS] == "3"

    asyncio.run(main())


def test_a_message_that_does_not_fit_the_schema_is_dead_lettered_at_once(server: broker.Server) -> None:
    async def main() -> None:
        await provisioned(server, catalog("queue", ["media"]))
        handled: list[Any] = []

        async def handle(msg: SignedIn, _: Any) -> None:
            handled.append(msg)

        media = rt.Broker(spec("media", handle), FAST)
        await media.start(server.url)
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.publish(PUB.subject, b'{"user_id": 5}', headers={rt.MSG_ID: "bad-1"})
        dead = await js.subscribe(names.dead_subject("signed-in", "media"), ordered_consumer=True)
        letter = await dead.next_msg(timeout=5)
        await media.stop()
        await nc.close()
        assert handled == []
        assert letter.headers[rt.DEAD_ATTEMPTS] == "1" and "does not fit SignedIn" in letter.headers[rt.DEAD_ERROR]

    asyncio.run(main())


def test_one_message_id_is_handled_once_and_carries_trace_and_request_id(server: broker.Server) -> None:
    async def main() -> None:
        await provisioned(server, catalog("queue", ["media"]))
        deliveries: list[Any] = []
        inside: list[Any] = []

        async def handle(msg: SignedIn, delivery: Any) -> None:
            deliveries.append(delivery)
            inside.append(tracing.current.get())

        media, pub = rt.Broker(spec("media", handle), FAST), rt.Broker(spec("auth"), FAST)
        await media.start(server.url)
        await pub.start(server.url)
        trace = tracing.Trace("req-42", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        token = tracing.current.set(trace)
        try:
            for _ in range(3):  # a publisher retrying: same id, one message
                await pub.publish(PUB, SignedIn(user_id="u", n=1), message_id="payment-123")
        finally:
            tracing.current.reset(token)
        await until(lambda: len(deliveries) >= 1)
        await asyncio.sleep(0.5)
        await media.stop()
        await pub.stop()
        assert len(deliveries) == 1
        d = deliveries[0]
        assert d.message_id == "payment-123" and d.request_id == "req-42"
        assert d.traceparent.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        # the handler runs in the publisher's trace (a span of its own) with its request id
        assert inside[0].trace_id == trace.trace_id and inside[0].request_id == "req-42"

    asyncio.run(main())


# -- a consumer killed with kill -9 (real processes) ------------------------------------------

CONSUMER = """
import asyncio, os, sys
sys.path.insert(0, {runtime!r})
from nexus_runtime import events as rt

class SignedIn(rt.Message):
    user_id: str
    n: int

LOG = {log!r}

def write(line):
    with open(LOG, "a") as f:
        f.write(line + "\\n")
        f.flush()
        os.fsync(f.fileno())

async def handle(msg, delivery):
    write(f"start {{delivery.message_id}} {{os.getpid()}} {{delivery.attempt}}")
    await asyncio.sleep(float(os.environ["HOLD"]))
    write(f"done {{delivery.message_id}} {{os.getpid()}} {{delivery.attempt}}")

async def main():
    spec = rt.EventsSpec({inbox!r}, {bucket!r}, (), (
        rt.Subscription("signed-in", {stream!r}, {durable!r}, {dead!r}, SignedIn, handle),))
    broker = rt.Broker(spec, rt.Delivering(batch=1, fetch_wait_seconds=0.2))
    await broker.start({url!r})
    write(f"ready {{os.getpid()}}")
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _consumer(tmp_path: Path, server: broker.Server, log: Path, hold: float) -> Any:
    import os
    import subprocess
    import sys

    script = tmp_path / "consumer.py"
    script.write_text(
        CONSUMER.format(
            runtime=str(sys_path_runtime),
            log=str(log),
            inbox=names.inbox("media"),
            bucket=names.handled_bucket("media"),
            stream=names.stream("signed-in"),
            durable=names.durable("media"),
            dead=names.dead_subject("signed-in", "media"),
            url=server.url,
        )
    )
    return subprocess.Popen([sys.executable, str(script)], env={**os.environ, "HOLD": str(hold)})


def _lines(log: Path) -> list[list[str]]:
    return [line.split() for line in whole_lines(log)]


def test_a_consumer_killed_mid_message_gets_it_redelivered_and_handled_once(
    tmp_path: Path, server: broker.Server
) -> None:
    import os
    import signal

    log = tmp_path / "handled.log"

    async def publish(message_id: str) -> None:
        nc = await nats.connect(server.url)
        await nc.jetstream().publish(
            PUB.subject, SignedIn(user_id="u", n=1).model_dump_json().encode(), headers={rt.MSG_ID: message_id}
        )
        await nc.close()

    async def wait_for(check: Callable[[], bool], timeout: float = 20) -> None:
        await until(check, timeout)

    async def main() -> None:
        await provisioned(server, catalog("queue", ["media"]), ack_wait_seconds=1.5)
        first = _consumer(tmp_path, server, log, hold=60)
        await wait_for(lambda: any(x[0] == "ready" for x in _lines(log)))
        await publish("pay-1")
        await wait_for(lambda: ["start", "pay-1", str(first.pid), "1"] in _lines(log))
        os.kill(first.pid, signal.SIGKILL)  # mid-message: the handler started, never finished
        first.wait()
        second = _consumer(tmp_path, server, log, hold=0)
        try:
            await wait_for(lambda: any(x[:2] == ["done", "pay-1"] for x in _lines(log)))
            await asyncio.sleep(2.5)  # past another ack wait: nothing is delivered again
            done = [x for x in _lines(log) if x[:2] == ["done", "pay-1"]]
            assert done == [["done", "pay-1", str(second.pid), "2"]]

            # killed after its handler returned and recorded the id, before the ack: the
            # redelivery is recognised and acknowledged without running the handler again
            os.kill(second.pid, signal.SIGKILL)
            second.wait()
            third = _consumer(tmp_path, server, log, hold=60)
            await wait_for(lambda: sum(x[0] == "ready" for x in _lines(log)) == 3)
            await publish("pay-2")
            await wait_for(lambda: ["start", "pay-2", str(third.pid), "1"] in _lines(log))
            nc = await nats.connect(server.url)
            kv = await nc.jetstream().key_value(names.handled_bucket("media"))
            await kv.put("pay-2", b"")  # what the runtime writes when a handler returns
            os.kill(third.pid, signal.SIGKILL)
            third.wait()
            fourth = _consumer(tmp_path, server, log, hold=0)
            try:
                js = nc.jetstream()

                async def settled() -> bool:
                    info = await js.consumer_info(names.stream("signed-in"), names.durable("media"))
                    return info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.stream_seq >= 2

                deadline = asyncio.get_running_loop().time() + 20
                while not await settled():
                    assert asyncio.get_running_loop().time() < deadline, "pay-2 was never acknowledged"
                    await asyncio.sleep(0.1)
                await nc.close()
                assert not any(x[:2] == ["start", "pay-2"] and x[2] == str(fourth.pid) for x in _lines(log))
            finally:
                fourth.kill()
                fourth.wait()
        finally:
            second.kill()
            second.wait()

    asyncio.run(main())


def test_a_slow_handler_keeps_its_message(server: broker.Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler running past the ack wait tells the broker it is still working: the message is
    not handed to another instance meanwhile."""
    monkeypatch.setattr(rt, "HEARTBEAT_SECONDS", 0.3)

    async def main() -> None:
        await provisioned(server, catalog("queue", ["media"]), ack_wait_seconds=1.0)
        starts: list[str] = []

        async def slow(msg: SignedIn, delivery: Any) -> None:
            starts.append(delivery.message_id)
            await asyncio.sleep(3.0)  # three ack waits

        a, b = rt.Broker(spec("media", slow), FAST), rt.Broker(spec("media", slow), FAST)
        pub = rt.Broker(spec("auth"), FAST)
        for x in (a, b, pub):
            await x.start(server.url)
        await pub.publish(PUB, SignedIn(user_id="u", n=1), message_id="slow-1")
        await asyncio.sleep(4.0)
        for x in (a, b, pub):
            await x.stop()
        assert starts == ["slow-1"]

    asyncio.run(main())
