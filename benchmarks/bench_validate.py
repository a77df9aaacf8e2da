"""What `nexus validate` costs, next to what starting Python and importing cost at all.

    python benchmarks/bench_validate.py [--runs 7]

Each figure is the median of several fresh processes (after one warm-up run that fills the
disk cache and writes .pyc files): wall time, CPU time (user + system, which other load on
the machine disturbs less than wall time), and peak resident memory.
It runs this checkout's CLI (`python -m cli`), not whatever `nexus` is first on PATH.
Not a test: machines differ, so nothing here passes or fails; the README records the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYNTH = Path(__file__).resolve().parent / "synth.py"


def once(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one run of ``cmd``; exits if it fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        # wait4 reports the resources of this one child (getrusage(RUSAGE_CHILDREN) would
        # give the maximum over every child so far)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read().decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux reports KiB


def measure(cmd: list[str], runs: int) -> tuple[float, float, float, float]:
    """Median wall, fastest wall, median CPU, largest peak RSS."""
    once(cmd)  # warm-up
    results = [once(cmd) for _ in range(runs)]
    walls = [wall for wall, _, _ in results]
    return (
        statistics.median(walls),
        min(walls),
        statistics.median(cpu for _, cpu, _ in results),
        max(rss for _, _, rss in results),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (default 7)")
    args = parser.parse_args()

    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, list[str]]] = [
            ("python -c pass", [py, "-c", "pass"]),
            ("python -c 'import typer, pydantic, yaml, jinja2'", [py, "-c", "import typer, pydantic, yaml, jinja2"]),
            (
                "nexus validate (catalog.yaml, 43 services)",
                [py, "-m", "cli", "validate", "--catalog", str(ROOT / "catalog.yaml")],
            ),
        ]
        for n in (1_000, 10_000):
            path = Path(tmp) / f"synth-{n}.yaml"
            # in a child process: a forked child's peak RSS starts at its parent's, so this
            # process must stay small for the figures below to mean anything
            with path.open("w") as out:
                subprocess.run([py, str(SYNTH), str(n)], stdout=out, check=True)
            size = path.stat().st_size / 1e6
            cases.append(
                (
                    f"nexus validate (synthetic, {n:,} services, {size:.1f} MB)",
                    [py, "-m", "cli", "validate", "--catalog", str(path)],
                )
            )

        print(
            f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
            f"median of {args.runs} runs"
        )
        print(f"{'':<58} {'wall':>8} {'min wall':>9} {'CPU':>8} {'peak RSS':>9}")
        for label, cmd in cases:
            median, best, cpu, rss = measure(cmd, args.runs)
            print(f"{label:<58} {median:>7.3f}s {best:>8.3f}s {cpu:>7.3f}s {rss:>6.0f} MB", flush=True)


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main()
