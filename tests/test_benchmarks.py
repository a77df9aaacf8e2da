"""The benchmark's synthetic catalogs stay valid, so its figures keep measuring a real validation."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

from nexus.catalog import load_catalog_text

SYNTH = ROOT / "benchmarks" / "synth.py"


def _module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synth = _module(SYNTH)


def test_2000_service_catalog_validates():
    loaded = load_catalog_text(synth.synth_yaml(2000), "synth.yaml")
    cat = loaded.catalog
    assert len(cat.services) == 2001  # and the gateway
    edges = sum(len(s.depends_on) for s in cat.services.values())
    assert 2.5 * 2000 <= edges <= 3.5 * 2000
    kinds = {e.kind for s in cat.services.values() for e in s.depends_on.values()}
    assert kinds == {"hard", "soft"}
    # every stage is used and the plan orders them: a real workload for plan, not one flat wave
    assert {w.stage for w in loaded.plan.waves} == {s.name for s in cat.stages}
    assert len(cat.flows) == 3


@pytest.mark.parametrize("n", [1, 2, 5, 43])
def test_small_catalogs_validate_too(n):
    load_catalog_text(synth.synth_yaml(n), "synth.yaml")


def test_channels_are_added_to_the_same_services():
    """With channels the catalog validates, every channel's members use the broker, and the
    services are those of the catalog without channels (the rows compare like with like)."""
    data = yaml.safe_load(synth.synth_yaml(2000, 0, 400))
    cat = load_catalog_text(synth.synth_yaml(2000, 0, 400), "synth.yaml").catalog
    assert len(cat.events) == 400
    assert all("nats" in cat.services[m].uses for ch in cat.events.values() for m in [*ch.publishers, *ch.subscribers])
    assert data["services"] == yaml.safe_load(synth.synth_yaml(2000))["services"]


def test_same_size_and_seed_give_the_same_catalog():
    assert synth.synth_yaml(300) == synth.synth_yaml(300)
    assert synth.synth_yaml(300) != synth.synth_yaml(300, seed=1)


def test_runs_as_a_script():
    result = subprocess.run([sys.executable, str(SYNTH), "50"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert len(yaml.safe_load(result.stdout)["services"]) == 51
    usage = subprocess.run([sys.executable, str(SYNTH)], capture_output=True, text=True, timeout=30, check=False)
    assert usage.returncode != 0 and "usage" in usage.stderr


def test_benchmark_script_loads():
    # not run here (it times things); only make sure it still imports
    assert callable(_module(ROOT / "benchmarks" / "bench_validate.py").main)


def test_generate_benchmark_script_loads():
    bench = _module(ROOT / "benchmarks" / "bench_generate.py")
    assert callable(bench.main) and callable(bench.scale) and callable(bench.shipped)


def test_a_benchmark_measures_only_its_own_checkout(tmp_path):
    """`import nexus` gives the installed package, wherever the benchmark lives: a benchmark of
    another checkout than the installed one refuses to run, saying what to install."""
    checkout = _module(ROOT / "benchmarks" / "checkout.py")
    assert checkout.imported_from() == ROOT / "generator"  # the tests run this checkout's Nexus
    checkout.require()  # so a benchmark here runs
    with pytest.raises(SystemExit) as refused:
        checkout.require(tmp_path)
    message = str(refused.value)
    assert str(tmp_path) in message and str(ROOT / "generator") in message
    assert f"pip install -e {tmp_path}" in message


def test_disk_stall_is_read_from_the_kernels_pressure_line():
    bench = _module(ROOT / "benchmarks" / "bench_generate.py")
    text = "some avg10=0.14 avg60=0.81 avg300=9.93 total=3674132305\nfull avg10=0.10 avg60=0.50 total=2731598732\n"
    assert bench.io_stalled(text) == 3674.132305  # the "some" line's microseconds, not the "full" one's
    assert bench.io_stalled("full avg10=0.00 total=5\n") == 0.0
    assert bench.io_stalled("") == 0.0


def test_a_row_carries_its_system_time_and_disk_stall(tmp_path):
    """A real process whose work is the kernel's (copying 2 GB out of /dev/zero, about 0.06 s):
    its system CPU shows, as part of its CPU, and the medians keep every field."""
    bench = _module(ROOT / "benchmarks" / "bench_generate.py")
    work = (
        "buf = bytearray(1 << 20)\n"
        "with open('/dev/zero', 'rb', buffering=0) as f:\n"
        "    for _ in range(2000): f.readinto(buf)\n"
        "open('done', 'w').close()"
    )
    runs = [bench.run([sys.executable, "-c", work], tmp_path, tmp_path / "cache") for _ in range(3)]
    for r in runs:
        assert r.wall > 0 and 0 < r.sys <= r.cpu and r.stall >= 0
    assert (tmp_path / "done").exists()  # it ran, in the row's folder
    middle = bench.median(runs)
    assert middle._fields == bench.Run._fields
    assert middle.sys == sorted(r.sys for r in runs)[1]


def test_parse_shapes_benchmark_runs_on_the_shipped_tree():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_parse_shapes.py"), str(ROOT / "generated")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "shapes" in result.stdout and "Python files" in result.stdout


def test_the_floor_imports_what_a_run_imported_and_does_nothing_else(tmp_path, monkeypatch):
    """The rows of what a run cannot skip: the modules a real process imported (-X importtime),
    read back in a fresh process that imports them all (a name the run only tried, like _winapi
    on Linux, fails there as it failed in the run) and runs nothing of the command itself."""
    bench = _module(ROOT / "benchmarks" / "bench_generate.py")
    (tmp_path / "marked.py").write_text("open('imported', 'w').close()\n", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    command = "import json, marked\nopen('ran', 'w').close()\n"
    names = bench.imported([sys.executable, "-c", command], tmp_path, tmp_path / "cache")
    assert {"json", "json.decoder", "marked"} <= set(names)
    assert names.index("json.decoder") < names.index("json")  # in the order they finished loading
    assert "imported package" not in names and not any(n.endswith("__main__") for n in names)
    (tmp_path / "imported").unlink()
    (tmp_path / "ran").unlink()
    (tmp_path / "modules.txt").write_text("\n".join([*names, "no_such_module_here"]), encoding="utf-8")
    row = bench.run([sys.executable, "-c", bench.FLOOR, "modules.txt"], tmp_path, tmp_path / "cache")
    assert (tmp_path / "imported").exists() and not (tmp_path / "ran").exists()
    assert row.cpu > 0


def test_the_cold_floor_compiles_the_templates_a_cold_run_compiled(tmp_path):
    """The templates of the cold run's floor are those a real cold run left compiled in its Jinja
    cache, every one of them found (the catalog's and the service template's), and the floor
    process compiles them from the environments they came from."""
    bench = _module(ROOT / "benchmarks" / "bench_generate.py")
    folder, cache = tmp_path / "run", tmp_path / "cache"
    folder.mkdir()
    (folder / "catalog.yaml").write_text(synth.synth_yaml(3), encoding="utf-8")
    modules = bench.imported([sys.executable, "-m", "nexus", "generate", "-c", "catalog.yaml"], folder, cache)
    assert {"nexus.pipeline", "nexus.render.services", "jinja2"} <= set(modules)
    assert (folder / "generated").is_dir()  # the run itself ran
    templates = bench.compiled_templates(cache)  # raises when a compiled entry is not found
    entries = [p for p in (cache / "nexus" / "jinja").rglob("*") if p.is_file()]
    assert len(templates) == len(entries) > 0
    assert {line.split("\t")[0] for line in templates} == {"main", "service"}
    assert any(line.startswith("main\tk8s/") for line in templates)
    (tmp_path / "modules.txt").write_text("\n".join(modules), encoding="utf-8")
    (tmp_path / "templates.txt").write_text("\n".join(templates), encoding="utf-8")
    row = bench.run([sys.executable, "-c", bench.FLOOR, "modules.txt", "templates.txt"], tmp_path, tmp_path / "c")
    assert row.cpu > 0
    assert not (tmp_path / "c" / "nexus" / "jinja").exists()  # compiled, not read from a cache


def test_the_edit_rows_make_the_edits_they_name(tmp_path):
    """Each row of a catalog runs for real on a small one: after them the folder's catalog has
    the first service's description and port changed and a service added by `nexus new`, valid,
    and generated/ holds the added service's files."""
    bench = _module(ROOT / "benchmarks" / "bench_generate.py")
    text = synth.synth_yaml(3)
    rows = bench.nexus_rows(text, tmp_path, 1, "small")
    assert set(rows) >= {"cold, no cache", "one edit", "port edited", "service added (nexus new)"}
    assert all(r.wall > 0 for what, r in rows.items() if what != "_bytes")
    (folder,) = [p for p in tmp_path.iterdir() if p.name.startswith("small-0-cold-warm")]
    before = yaml.safe_load(text)["services"]
    after = yaml.safe_load((folder / "catalog.yaml").read_text(encoding="utf-8"))["services"]
    first = next(iter(before))
    assert after[first]["port"] != before[first]["port"] and after[first]["description"] == "Edited 1"
    assert after["bench-added-0"]["depends_on"] == {first: "hard"}
    assert set(after) == {*before, "bench-added-0"}
    load_catalog_text((folder / "catalog.yaml").read_text(encoding="utf-8"), "catalog.yaml")
    assert (folder / "generated" / "services" / "bench-added-0").is_dir()
