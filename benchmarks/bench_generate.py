"""How fast `nexus generate` is, beside what a user would otherwise do (cookiecutter per service).

Run by hand:  python benchmarks/bench_generate.py [--runs 5]
Prints the median wall time of each, interpreter start included for the command lines:
  - python -c pass, and importing typer, pydantic, jinja2 and yaml (the floor);
  - nexus generate into an empty folder, with and without the cache of earlier runs (compiled
    templates and validated manifests, in the user's cache folder: here a fresh one of its own);
  - nexus generate with nothing changed;
  - nexus generate --check --strict (what CI runs);
  - cookiecutter's CLI once per service, and its Python API once per service, for the 43.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CACHE = Path(tempfile.mkdtemp(prefix="nexus-bench-cache-"))  # $XDG_CACHE_HOME: never the user's own cache
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(CACHE)}


def wall(cmd: list[str], runs: int, before=None) -> float:
    times = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="nexus-bench-", dir=ROOT.parent))
    out = tmp / "out"
    cache = CACHE / "nexus"
    rows: list[tuple[str, float]] = []

    def empty_out() -> None:
        shutil.rmtree(out, ignore_errors=True)

    def empty_out_and_cache() -> None:
        empty_out()
        shutil.rmtree(cache, ignore_errors=True)

    rows.append(("python -c pass", wall([py, "-c", "pass"], runs)))
    rows.append(
        ("import typer, pydantic, jinja2, yaml", wall([py, "-c", "import typer, pydantic, jinja2, yaml"], runs))
    )
    gen = [py, "-m", "cli", "generate"]
    rows.append(("generate, empty folder, no cache", wall([*gen, "--out", str(out)], runs, empty_out_and_cache)))
    rows.append(("generate, empty folder, warm cache", wall([*gen, "--out", str(out)], runs, empty_out)))
    rows.append(("generate, nothing changed", wall(gen, runs)))
    rows.append(("generate --check --strict (CI)", wall([*gen, "--check", "--strict"], runs)))
    rows.append(("nexus validate", wall([py, "-m", "cli", "validate"], runs)))

    # The alternative: the same template rendered once per service by cookiecutter.
    from nexus.catalog import load_catalog
    from nexus.render.context import RenderContext
    from nexus.render.services import SERVICE_TEMPLATE, service_context

    loaded = load_catalog(ROOT / "catalog.yaml")
    ctx = RenderContext(loaded.catalog, loaded.plan)
    contexts = [service_context(ctx, n) for n in sorted(loaded.catalog.services)]
    cc_out = tmp / "cc"
    start = time.perf_counter()
    for c in contexts:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cookiecutter",
                str(SERVICE_TEMPLATE),
                "--no-input",
                "-f",
                "-o",
                str(cc_out),
                f"name={c['name']}",
                f"port={c['port']}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    rows.append(("cookiecutter CLI x43", time.perf_counter() - start))
    from cookiecutter.main import cookiecutter

    start = time.perf_counter()
    for c in contexts:
        cookiecutter(
            str(SERVICE_TEMPLATE), no_input=True, overwrite_if_exists=True, output_dir=str(cc_out), extra_context=c
        )
    rows.append(("cookiecutter Python API x43", time.perf_counter() - start))
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(CACHE, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  seconds (median of {runs}; cookiecutter rows: one run)")
    for what, seconds in rows:
        print(f"{what:<{width}}  {seconds:7.3f}")


if __name__ == "__main__":
    main()
