"""Load through the critical paths, side by side with the same chains built from bare FastAPI +
httpx apps (a benchmark run by hand, not a test).

    python3 benchmarks/bench_load.py                            # both modes, all three phases
    python3 benchmarks/bench_load.py --modes embedded --phases latency throughput
    python3 benchmarks/bench_load.py --requests 2000 --burn-requests 5000 --burners 2

The load comes from wrk (Debian: `apt-get install wrk`), driven by benchmarks/wrk_flows.lua:
it costs far less CPU per request than the servers it loads, which on two cores matters. For
each mode (`nexus up --mode embedded|process`) the script starts the platform on the catalog's
ports and one bare chain per flow (benchmarks/bare_chain.py, run the same way: one process, or
one per hop), each hop doing the same data step (its database row, its cache key) as the Nexus
service at its place, then measures three phases:

1. latency: sequential requests on one kept-alive connection (wrk -c1): the gateway's /health,
   and /flows/<flow> at every hop of every flow, so the cost of one hop is the difference
   between two lines; the bare chains alike.
2. throughput: ``--requests`` at ``--concurrency`` on each flow through the gateway, then on
   its bare chain. Besides wrk's figures, the CPU the
   serving processes used per request (user + system, from /proc): on a machine shared with
   other jobs, throughput follows their load, CPU per request much less.
3. burn: ``--burn-requests`` at ``--concurrency``, the three flows in turn, with ``--burners``
   processes burning CPU beside the platform.

An error is any answer but 200 with ``"ok":true``, or no answer (wrk's socket errors, with a
30 s timeout). Errors are counted by kind: status, the hop the flow report names, its error.
The catalog's ports must be free, and the bare chain's (the catalog's highest port + 1...).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus.catalog import load_catalog
from nexus.catalog.models import Catalog
from nexus.catalog.naming import pkg
from nexus.local import infra, runstate

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "wrk_flows.lua"
TICKS = os.sysconf("SC_CLK_TCK")


def nexus(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the line)
    return total / TICKS


@dataclass
class Run:
    """What one wrk run measured."""

    answers: int = 0
    seconds: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    socket_errors: int = 0
    cpu_seconds: float = 0.0
    failed: Counter[str] = field(default_factory=Counter)  # "status hop error" -> count

    @property
    def errors(self) -> int:
        return sum(self.failed.values()) + self.socket_errors

    @property
    def rate(self) -> float:
        return self.answers / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.answers if self.answers else 0.0


def wrk(base: str, paths: list[str], requests: int, concurrency: int, pids: list[int]) -> Run:
    """``requests`` GETs of ``paths`` in turn at ``concurrency``, and the CPU ``pids`` used meanwhile."""
    limit = max(60, requests // 5)  # a bound, should the servers stop answering; the quota ends the run
    args = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{limit}s",
        "--timeout",
        "30s",
        "-s",
        str(SCRIPT),
        base,
        "--",
        str(requests),
        *paths,
    ]
    before = cpu_seconds(pids)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("quota reached"):
            proc.send_signal(signal.SIGINT)  # wrk then stops sleeping out -d and reports
            break
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"wrk failed: {err}")
    run = Run(cpu_seconds=cpu_seconds(pids) - before)
    for line in out.splitlines():
        kind, *rest = line.split("\t")
        if kind == "figure":
            name, value = rest
            setattr(run, name, type(getattr(run, name))(float(value)))
        elif kind == "failed":
            count, status, hop, why = rest
            run.failed[f"HTTP {status}, broken at {hop}: {why}".rstrip(": ")] += int(count)
    if run.socket_errors:
        run.failed["no answer (wrk socket errors: connect, read, write or 30 s timeout)"] += run.socket_errors
        run.socket_errors = 0
    return run


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"nothing answered at {url}")


@dataclass
class Target:
    """One side of the comparison: where each flow enters, and which processes serve it."""

    name: str
    entry: dict[str, list[int]]  # flow -> the port of each called hop, entry first
    health: int  # a port serving /health
    pids: list[int]


@contextmanager
def platform(catalog: Path, cat: Catalog, mode: str) -> Iterator[Target]:
    up = nexus("up", "--detach", "--mode", mode, "-c", str(catalog))
    if up.returncode != 0:
        raise SystemExit(up.stdout + up.stderr)
    try:
        state = runstate.read(catalog.parent)
        assert state is not None
        entry = {
            name: [cat.services[h].port for h in flow.names() if h in cat.services] for name, flow in cat.flows.items()
        }
        yield Target("nexus", entry, cat.services[cat.platform.gateway].port, [p.pid for p in state.processes()])
    finally:
        nexus("down", "-c", str(catalog))


@contextmanager
def bare(catalog: Path, cat: Catalog, mode: str) -> Iterator[Target]:
    """One bare chain per flow, each hop doing the data step of the Nexus service at its place
    (with that service's own database and cache user, from the running platform's credentials)."""
    state = runstate.read(catalog.parent)
    assert state is not None, "the platform must be up first"
    creds = infra.Credentials.load(infra.credentials_path(Path(state.run_dir)))
    port = max(s.port for s in cat.services.values()) + 1
    entry: dict[str, list[int]] = {}
    hops: list[dict[str, object]] = []
    for name, flow in sorted(cat.flows.items()):
        called = [h for h in flow.names() if h in cat.services]
        ports = list(range(port, port + len(called)))
        port += len(called)
        entry[name] = ports
        for i, service in enumerate(called):
            urls = infra.service_secrets(cat, service, state.infrastructure, creds)
            engines = {cat.infrastructure[c].engine: urls[f"{pkg(c)}_url"] for c in cat.services[service].uses}
            hops.append(
                {
                    "port": ports[i],
                    "next": ports[i + 1] if i + 1 < len(ports) else None,
                    "postgres": engines.get("postgres"),
                    "redis": engines.get("redis"),
                    "prefix": service,
                }
            )
    script = str(HERE / "bare_chain.py")
    specs = [hops] if mode == "embedded" else hops
    # quiet: under overload the bare hops log a traceback per timed-out call
    procs = [
        subprocess.Popen(
            [sys.executable, script, mode],
            env={**os.environ, "BARE_HOPS": json.dumps(spec)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for spec in specs
    ]
    try:
        for h in hops:
            wait_up(f"http://127.0.0.1:{h['port']}/health")
        yield Target("bare", entry, int(str(hops[0]["port"])), [p.pid for p in procs])
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


def called_hops(cat: Catalog) -> dict[str, int]:
    return {name: sum(1 for h in flow.names() if h in cat.services) for name, flow in sorted(cat.flows.items())}


def latency(targets: list[Target], cat: Catalog) -> None:
    print("\nlatency: sequential requests on one kept-alive connection (wrk -c1, 300 requests after 30), median ms")
    print(f"{'where':<42} {'hops':>4} " + " ".join(f"{t.name + ' ms':>9}" for t in targets))

    def median(port: int, path: str, t: Target) -> float:
        wrk(f"http://127.0.0.1:{port}", [path], 30, 1, t.pids)  # warm-up: connections, first-call paths
        return wrk(f"http://127.0.0.1:{port}", [path], 300, 1, t.pids).p50_ms

    print(
        f"{'GET /health (gateway; bare: first hop)':<42} {'':>4} "
        + " ".join(f"{median(t.health, '/health', t):>9.2f}" for t in targets)
    )
    for name, flow in sorted(cat.flows.items()):
        called = [h for h in flow.names() if h in cat.services]
        for i, hop in enumerate(called):
            left = len(called) - i
            cells = [median(t.entry[name][i], f"/flows/{name}", t) for t in targets]
            print(f"{f'{name} at {hop}':<42} {left:>4} " + " ".join(f"{c:>9.2f}" for c in cells))


def throughput(targets: list[Target], cat: Catalog, requests: int, concurrency: int) -> None:
    print(f"\nthroughput: {requests} requests per flow at concurrency {concurrency}")
    print(
        f"{'flow':<20} {'chain':<6} {'hops':>4} {'errors':>6} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'CPU ms/req':>10}"
    )
    ratios = []
    for name, hops in called_hops(cat).items():
        runs = {}
        for t in targets:
            port = t.entry[name][0]
            wrk(f"http://127.0.0.1:{port}", [f"/flows/{name}"], 100, concurrency, t.pids)  # warm-up: connection pools
            runs[t.name] = r = wrk(f"http://127.0.0.1:{port}", [f"/flows/{name}"], requests, concurrency, t.pids)
            print(
                f"{name:<20} {t.name:<6} {hops:>4} {r.errors:>6} {r.rate:>7.0f} {r.p50_ms:>7.1f} {r.p90_ms:>7.1f} "
                f"{r.p99_ms:>7.1f} {r.max_ms:>7.1f} {r.cpu_ms:>10.2f}"
            )
            report_errors(r)
        ratios.append((name, runs["bare"].rate / runs["nexus"].rate if runs["nexus"].rate else float("inf")))
    print("bare req/s over nexus req/s (target: at most 1.5): " + ", ".join(f"{n} {x:.2f}" for n, x in ratios))


def burn(target: Target, cat: Catalog, requests: int, concurrency: int, burners: int) -> None:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(burners)]
    try:
        paths = [f"/flows/{name}" for name in sorted(cat.flows)]
        r = wrk(f"http://127.0.0.1:{target.health}", paths, requests, concurrency, target.pids)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    print(
        f"\nburn: {requests} requests over the {len(paths)} flows in turn, concurrency {concurrency}, {burners} "
        "CPU-burning processes beside"
    )
    print(
        f"errors {r.errors} ({100 * r.errors / max(r.answers, 1):.1f}%), {r.rate:.0f} req/s, p50 {r.p50_ms:.0f} ms, "
        f"p99 {r.p99_ms:.0f} ms, max {r.max_ms:.0f} ms"
    )
    report_errors(r)


def report_errors(r: Run) -> None:
    for why, n in r.failed.most_common():
        print(f"    {n:>6} x {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=ROOT / "catalog.yaml")
    parser.add_argument("--modes", nargs="+", default=["embedded", "process"], choices=["embedded", "process"])
    parser.add_argument(
        "--phases", nargs="+", default=["latency", "throughput", "burn"], choices=["latency", "throughput", "burn"]
    )
    parser.add_argument("--requests", type=int, default=2000, help="per flow and chain, in the throughput phase")
    parser.add_argument("--burn-requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--burners", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    catalog = args.catalog.resolve()
    cat = load_catalog(catalog).catalog
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f} at start, Python {sys.version.split()[0]}, {wrk_version()}")
    for mode in args.modes:
        print(
            f"\n=== {mode} mode: {len(cat.services)} services; bare chain of {max(called_hops(cat).values())} hops, "
            "run the same way"
        )
        with platform(catalog, cat, mode) as nx, bare(catalog, cat, mode) as bare_chain:
            if "latency" in args.phases:
                latency([nx, bare_chain], cat)
            if "throughput" in args.phases:
                throughput([nx, bare_chain], cat, args.requests, args.concurrency)
            if "burn" in args.phases:
                burn(nx, cat, args.burn_requests, args.concurrency, args.burners)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"wrk\s+(\S+)", out.stdout + out.stderr)
    return f"wrk {found.group(1)}" if found else "wrk"


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main()
