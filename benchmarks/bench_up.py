"""How long `nexus up --detach` takes until every service is ready, and how much memory the run
holds once it is, for each way of running (a benchmark run by hand, not a test).

    python3 benchmarks/bench_up.py                      # both modes, 3 runs each, shipped catalog
    python3 benchmarks/bench_up.py --modes embedded --runs 5

"ready" is the wall time of the whole command, interpreter start included, until it returns
with all services answering /health/ready. Memory is summed over every process the run
started and their children: RSS counts shared pages once per process, PSS shares them out
(the fairer total for many processes of one interpreter), stage 1's servers (PostgreSQL, Redis,
NATS) included. The catalog's ports must be free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus.local import procs, runstate

MB = 2**20


def nexus(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )


def once(catalog: Path, mode: str) -> dict[str, float]:
    began = time.perf_counter()
    up = nexus("up", "--detach", "--mode", mode, "-c", str(catalog))
    ready = time.perf_counter() - began
    if up.returncode != 0:
        nexus("down", "-c", str(catalog))
        raise SystemExit(f"nexus up failed:\n{up.stdout}{up.stderr}")
    state = runstate.read(catalog.parent)
    assert state is not None
    time.sleep(1.0)  # let start-up garbage settle before measuring what the run keeps
    roots = [p.pid for p in state.processes()]
    rss, pss = procs.memory(roots)
    count = len({pid for root in roots for pid in procs.descendants(root)})
    began = time.perf_counter()
    down = nexus("down", "-c", str(catalog))
    stopped = time.perf_counter() - began
    if down.returncode != 0:
        raise SystemExit(f"nexus down failed:\n{down.stdout}{down.stderr}")
    return {
        "ready": ready,
        "rss": rss / MB,
        "pss": pss / MB,
        "processes": count,
        "down": stopped,
        "services": len(state.services),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catalog", type=Path, default=ROOT / "catalog.yaml")
    parser.add_argument("--modes", nargs="+", default=["embedded", "process"])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    catalog = args.catalog.resolve()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start, Python {sys.version.split()[0]}")
    print(
        f"{'mode':<10} {'services':>8} {'ready s (median, min-max)':>28} {'RSS MB':>8} {'PSS MB':>8} {'procs':>6} "
        f"{'down s':>7}"
    )
    for mode in args.modes:
        runs = [once(catalog, mode) for _ in range(args.runs)]
        ready = [r["ready"] for r in runs]
        med = {k: statistics.median(r[k] for r in runs) for k in ("rss", "pss", "processes", "down", "services")}
        print(
            f"{mode:<10} {med['services']:>8.0f} {statistics.median(ready):>12.2f} "
            f"({min(ready):.2f}-{max(ready):.2f})      "
            f"{med['rss']:>8.0f} {med['pss']:>8.0f} {med['processes']:>6.0f} {med['down']:>7.2f}"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main()
