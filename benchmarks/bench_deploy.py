"""How long `nexus deploy` and `nexus cluster-status --overlay` take on a real API server (the
testbed, or the cluster KUBECONFIG names), and what the testbed costs CI (a benchmark run by
hand, not a test).

    bash scripts/testbed.sh start && eval "$(bash scripts/testbed.sh env)"
    python3 benchmarks/bench_deploy.py                  # the bare dev overlay, 3 runs
    python3 benchmarks/bench_deploy.py --full --runs 1  # with the mesh and monitoring kinds (--install-crds)
    python3 benchmarks/bench_deploy.py --testbed 3      # also: testbed stop and start, warm, 3 times

Each run generates the shipped catalog into a fresh folder with its own namespace (mesh none
and no Prometheus Operator unless --full), then times, as whole commands (interpreter start
included): the first deploy until every wave is rolled out, a second deploy (nothing changes),
and `cluster-status --overlay dev`. The namespace is deleted after each run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def nexus(*args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    return time.perf_counter() - began, proc


def once(full: bool) -> dict[str, float]:
    namespace = f"nexus-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load((ROOT / "catalog.yaml").read_text(encoding="utf-8"))
        data["platform"]["namespace"] = namespace
        if not full:
            data["platform"]["mesh"] = "none"
            data["platform"].setdefault("monitoring", {})["operator"] = False
        catalog = Path(tmp) / "catalog.yaml"
        catalog.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        _, gen = nexus("generate", "-c", str(catalog))
        if gen.returncode != 0:
            raise SystemExit(gen.stderr)
        try:
            extra = ["--install-crds"] if full else []
            first, deployed = nexus("deploy", "-c", str(catalog), "--overlay", "dev", *extra)
            if deployed.returncode != 0:
                raise SystemExit(deployed.stdout[-2000:] + deployed.stderr[-2000:])
            again, _ = nexus("deploy", "-c", str(catalog), "--overlay", "dev")
            status, proc = nexus("cluster-status", "-c", str(catalog), "--overlay", "dev")
            if proc.returncode != 0:
                raise SystemExit(proc.stderr)
            objects = int(deployed.stdout.splitlines()[-1].split()[1])  # "done: 306 objects applied, ..."
        finally:
            subprocess.run(
                ["kubectl", "delete", "namespace", namespace, "--wait=true"], capture_output=True, check=False
            )
    return {"deploy": first, "redeploy": again, "cluster-status": status, "objects": objects}


def testbed(runs: int) -> list[tuple[float, float]]:
    """(stop, start) wall times of scripts/testbed.sh, the build already cached."""
    out = []
    for _ in range(runs):
        times = []
        for verb in ("stop", "start"):
            began = time.perf_counter()
            subprocess.run(
                ["bash", str(ROOT / "scripts" / "testbed.sh"), verb, *(["--force"] if verb == "stop" else [])],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - began)
        out.append((times[0], times[1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--full", action="store_true", help="the overlay with the mesh and monitoring kinds (CRDs installed)"
    )
    ap.add_argument(
        "--testbed", type=int, default=0, metavar="N", help="also time N warm stop/start cycles of the testbed"
    )
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    results = [once(args.full) for _ in range(args.runs)]
    print(
        f"{'full' if args.full else 'bare'} dev overlay, {results[0]['objects']:.0f} objects, {args.runs} runs "
        "(median, min, max in s):"
    )
    for key in ("deploy", "redeploy", "cluster-status"):
        values = [r[key] for r in results]
        print(f"  {key:<15} {statistics.median(values):6.1f}  {min(values):6.1f}  {max(values):6.1f}")
    if args.testbed:
        cycles = testbed(args.testbed)
        print(
            f"testbed, warm ({args.testbed} cycles, median s): stop {statistics.median(c[0] for c in cycles):.1f}, "
            f"start {statistics.median(c[1] for c in cycles):.1f}"
        )


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main()
