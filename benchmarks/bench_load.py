"""Load through the critical paths with the whole platform up, and the cost of the generated
instrumentation (a benchmark run by hand, not a test).

    python3 benchmarks/bench_load.py                    # starts the platform, measures, stops it
    python3 benchmarks/bench_load.py --running          # use the platform `nexus up` already runs
    python3 benchmarks/bench_load.py --requests 2000 --concurrency 50 --mode process

1. Flows: for each critical path, ``--requests`` GETs of the gateway's /flows/<flow> at
   ``--concurrency`` (httpx, async), after a short warm-up. Any answer but 200 with ok=true is
   an error. Prints p50/p90/p99/max latency and throughput per flow.
2. Instrumentation overhead: a generated service (pv-keys: no dependencies) and a bare FastAPI
   app serving the same /health answer, each in its own process under the same uvicorn
   settings, loaded side by side in alternating rounds. The load comes from a minimal
   keep-alive HTTP/1.1 client over raw asyncio streams: httpx costs more CPU per request than
   these servers do, and on two cores it would measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus.local import runstate
from nexus.catalog import load_catalog

BARE_APP = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok", "service": "pv-keys"}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", access_log=False)
    """
)


def nexus(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def load_flow(url: str, requests: int, concurrency: int) -> tuple[list[float], Counter[str], float]:
    """Latencies, errors by reason, and the time the whole run took."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    todo = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def worker() -> None:
            for _ in todo:
                began = time.perf_counter()
                try:
                    r = await http.get(url)
                    body = r.json()
                    if r.status_code != 200 or body.get("ok") is not True:
                        broken = body.get("broken")
                        error = next((h.get("error", "") for h in body.get("hops", []) if h.get("service") == broken), "")
                        errors[f"HTTP {r.status_code}, broken at {broken}: {error}".rstrip(": ")] += 1
                except (httpx.HTTPError, ValueError) as exc:
                    errors[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - began)

        for _ in range(50):  # warm-up: connections, first-call paths
            await http.get(url)
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - began


def flows(catalog: Path, requests: int, concurrency: int) -> None:
    loaded = load_catalog(catalog)
    gateway = loaded.catalog.services[loaded.catalog.platform.gateway].port
    print(f"\nflows: {requests} requests each at concurrency {concurrency}, through the gateway (127.0.0.1:{gateway})")
    print(f"{'flow':<20} {'hops':>4} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    reasons: Counter[str] = Counter()
    for name, flow in sorted(loaded.catalog.flows.items()):
        lat, errors, took = asyncio.run(load_flow(f"http://127.0.0.1:{gateway}/flows/{name}", requests, concurrency))
        ms = [x * 1000 for x in lat]
        print(
            f"{name:<20} {len(flow.hops):>4} {sum(errors.values()):>6} {requests / took:>7.0f} {percentile(ms, 50):>7.1f} "
            f"{percentile(ms, 90):>7.1f} {percentile(ms, 99):>7.1f} {max(ms):>7.1f}"
        )
        reasons.update({f"{name}: {why}": n for why, n in errors.items()})
    for why, n in reasons.most_common():
        print(f"  {n} x {why}")


async def hammer(port: int, requests: int, concurrency: int) -> tuple[float, float]:
    """Requests per second and median latency (ms) of GET /health over keep-alive connections."""
    request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    per_conn = requests // concurrency
    latencies: list[float] = []

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(per_conn):
            began = time.perf_counter()
            writer.write(request)
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            assert b'"ok"' in body, body
            latencies.append(time.perf_counter() - began)
        writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(concurrency)))
    return per_conn * concurrency / (time.perf_counter() - began), statistics.median(latencies) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answered on port {port}")


def overhead(generated: Path, requests: int, concurrency: int, rounds: int) -> None:
    gen_port, bare_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(generated / "runtime"), str(generated / "services" / "pv-keys")])}
    env.update({"PORT": str(gen_port), "HOST": "127.0.0.1"})
    servers = {
        "generated pv-keys": (gen_port, subprocess.Popen([sys.executable, "-m", "pv_keys"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)),
        "bare FastAPI": (bare_port, subprocess.Popen([sys.executable, "-c", BARE_APP, str(bare_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)),
    }
    try:
        for port, _ in servers.values():
            wait_up(port)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for name, (port, _) in servers.items():
            asyncio.run(hammer(port, 2000, concurrency))  # warm-up
        for _ in range(rounds):
            for name, (port, _) in servers.items():
                results[name].append(asyncio.run(hammer(port, requests, concurrency)))
        print(f"\n/health throughput, one process each, {rounds} alternating rounds of {requests} requests at concurrency {concurrency}")
        print(f"{'server':<20} {'req/s (median)':>15} {'best':>7} {'p50 ms':>7}")
        medians = {}
        for name, runs in results.items():
            medians[name] = statistics.median(r for r, _ in runs)
            print(f"{name:<20} {medians[name]:>15.0f} {max(r for r, _ in runs):>7.0f} {statistics.median(m for _, m in runs):>7.2f}")
        gen, bare = medians["generated pv-keys"], medians["bare FastAPI"]
        print(f"instrumentation overhead: {100 * (1 - gen / bare):.0f}% fewer requests/s, {1e6 / gen - 1e6 / bare:.0f} us more CPU per request")
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=ROOT / "catalog.yaml")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--mode", default="embedded")
    parser.add_argument("--running", action="store_true", help="use the platform already running (do not start or stop it)")
    parser.add_argument("--health-requests", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    catalog = args.catalog.resolve()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    if not args.running:
        up = nexus("up", "--detach", "--mode", args.mode, "-c", str(catalog))
        if up.returncode != 0:
            raise SystemExit(up.stdout + up.stderr)
    try:
        state = runstate.read(catalog.parent)
        print(f"platform: {len(state.services) if state else '?'} services, {state.mode if state else '?'} mode")
        flows(catalog, args.requests, args.concurrency)
    finally:
        if not args.running:
            nexus("down", "-c", str(catalog))
    overhead(catalog.parent / "generated", args.health_requests, args.concurrency, args.rounds)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
