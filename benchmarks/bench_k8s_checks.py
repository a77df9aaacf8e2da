"""Time the Kubernetes area for the shipped catalog: render, checks, and strict schemas cold and warm.

    python3 benchmarks/bench_k8s_checks.py            # median and fastest of 7 runs (5 for new interpreters)
    python3 benchmarks/bench_k8s_checks.py --naive    # also kubernetes_validate.validate() per document

"cold" is a fresh Jinja environment (templates compiled) and a fresh SchemaValidator (schemas read
and compiled, every manifest validated). "manifests cached": every manifest's hash is known (as
after a catalog change that leaves most of them alone), the other checks run. "whole run cached":
the same catalog and files already passed, so nothing runs. The last lines run a new interpreter
end to end (imports, catalog, render, checks), without and with the cache file that
SchemaValidator.save/load keep between runs.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nexus.catalog import load_catalog
from nexus.checks import k8s as k8s_checks
from nexus.checks.kubernetes_schema import K8S_VERSION, SchemaValidator
from nexus.render import RenderContext
from nexus.render import k8s as render_k8s
from nexus.render.context import make_env

RUNS = 7


def timed(fn, runs: int = RUNS) -> str:
    """'median ms (fastest ms)': the fastest run is the cost itself, the median what a busy machine adds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times) * 1000:7.1f} ms (fastest {min(times) * 1000:6.1f})"


def main() -> None:
    loaded = load_catalog(ROOT / "catalog.yaml")
    ctx = RenderContext(loaded.catalog, loaded.plan)
    files = render_k8s.render(ctx)
    docs = [
        d
        for p, t in files.items()
        if p.startswith("k8s/base/")
        for d in k8s_checks.documents(p, t)
        if d.kind != "Kustomization"
    ]
    print(
        f"shipped catalog: {len(loaded.catalog.services)} services, {len(files)} files, "
        f"{sum(map(len, files.values())) // 1024} KiB, {len(docs)} manifests"
    )

    documents_seen = SchemaValidator()
    k8s_checks.schema_failures(ctx, docs, documents_seen)  # every manifest's hash, but no whole run

    def documents_warm() -> None:
        validator = SchemaValidator()
        validator.seen = set(documents_seen.seen)
        k8s_checks.run(ctx, files, validator=validator)

    run_seen = SchemaValidator()
    k8s_checks.run(ctx, files, validator=run_seen)
    rows = {
        "render, templates compiled cold": lambda: render_k8s.render(
            RenderContext(loaded.catalog, loaded.plan, make_env())
        ),
        "render, templates compiled": lambda: render_k8s.render(ctx),
        "parse the YAML back (all k8s files)": lambda: [list(k8s_checks.documents(p, t)) for p, t in files.items()],
        "schemas only, cold": lambda: k8s_checks.schema_failures(ctx, docs, SchemaValidator()),
        "checks, strict_schema=False": lambda: k8s_checks.run(
            ctx, files, strict_schema=False, validator=SchemaValidator()
        ),
        "checks + strict schemas, cold": lambda: k8s_checks.run(ctx, files, validator=SchemaValidator()),
        "checks + strict schemas, manifests cached": documents_warm,
        "checks + strict schemas, whole run cached": lambda: k8s_checks.run(ctx, files, validator=run_seen),
    }
    for label, fn in rows.items():
        print(f"  {label:<46} {timed(fn)}")
    cold = timed(
        lambda: (
            render_k8s.render(RenderContext(loaded.catalog, loaded.plan, make_env())),
            k8s_checks.run(ctx, files, validator=SchemaValidator()),
        )
    )
    print(f"  {'render + checks + strict schemas, all cold':<46} {cold}")

    if "--naive" in sys.argv:
        import kubernetes_validate

        start = time.perf_counter()
        for d in docs:
            kubernetes_validate.validate(d.data, K8S_VERSION, strict=True)
        print(
            f"  {'kubernetes_validate.validate() per manifest':<46} {(time.perf_counter() - start) * 1000:7.1f} ms "
            "(one run)"
        )

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "schema-cache.json"
        script = (
            "import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path\n"
            "from nexus.catalog import load_catalog\nfrom nexus.render import RenderContext\n"
            "from nexus.render import k8s as render_k8s\nfrom nexus.checks import k8s as k8s_checks\nfrom "
            "nexus.checks.kubernetes_schema import DEFAULT\n"
            "DEFAULT.load(Path(sys.argv[2]))\nl = load_catalog(Path(sys.argv[1]) / 'catalog.yaml'); ctx = "
            "RenderContext(l.catalog, l.plan)\n"
            "files = render_k8s.render(ctx); assert k8s_checks.run(ctx, files) == []\nDEFAULT.save(Path(sys.argv[2]))\n"
        )
        for label in ("new interpreter, no schema cache", "new interpreter, schema cache file warm"):
            if label.endswith("no schema cache"):

                def run():
                    return (
                        cache.unlink(missing_ok=True),
                        subprocess.run([sys.executable, "-c", script, str(ROOT), str(cache)], check=True),
                    )
            else:
                run = lambda: subprocess.run([sys.executable, "-c", script, str(ROOT), str(cache)], check=True)  # noqa: E731
            print(f"  {label:<46} {timed(run, 5)} wall: imports, catalog, render, checks")
    floor = [sys.executable, "-c", "import typer, pydantic, jinja2, yaml"]
    floor_run = timed(lambda: subprocess.run(floor, check=True), 5)
    print(f"  {'python -c import typer, pydantic, jinja2, yaml':<46} {floor_run} wall")


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main()
