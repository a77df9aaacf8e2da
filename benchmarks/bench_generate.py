"""How fast `nexus generate` is, beside the floor and beside cookiecutter over the same template.

Run by hand:
    python benchmarks/bench_generate.py [--runs 3]
    python benchmarks/bench_generate.py --scale 1000 5000 10000 [--fan-in 10000] [--events 2000]

Every row is a fresh process (interpreter start included) in a fresh folder, with its own
user cache folder ($XDG_CACHE_HOME, never the user's own), started once the disk holds what
the rows before wrote (``os.sync``, not timed); each prints wall seconds, CPU seconds (user +
system of that process) and peak RSS, and beside them the kernel's share: the system CPU
seconds, and the seconds some task on the machine waited for the disk while the row ran (the
kernel's pressure stall information, /proc/pressure/io; 0 where there is none). A row the
file system held up shows there, not as a slower Nexus: on this machine's ext4 a 10,000-service
cold run took 87 s, 73.5 of them system CPU seconds (by perf, ext4 looking for a free inode:
find_inode_bit, recently_deleted), minutes after a benchmark had deleted its trees (over a
million files), and 38 s, 11.8 system seconds, a quarter of an hour later. The first and the
last lines give a CPU gauge (``gauge``), to compare tables of different hours. Rows for the
shipped catalog, timed round by round (each row once in every round, so that the machine's
drift in speed meets every row alike):

  - floor: `python -c "import typer, pydantic, jinja2, yaml"`;
  - cold, no cache: a fresh copy of the catalog, an empty cache folder;
  - cold, warm cache: a fresh copy again, the cache the previous row left;
  - no-op: the same folder, nothing changed;
  - one edit: one service's description changed;
  - next edit: that description changed again (a working copy's usual state: the earlier run
    left its record and the spare tree);
  - port edited: that service's port changed to a free one (its callers' manifests and
    policies, and the monitoring blocks it is in, change with it); then a service added by
    `nexus new` (as a team onboards one: in the first service's category and team, calling it),
    which validates the catalog with the entry added and regenerates;
  - cookiecutter API and CLI: the same service template rendered for every service with the
    very context Nexus renders it with (a replay file per service): the API from one fresh
    process, the CLI once per service. They write the service folders only; Nexus also writes
    the manifests, the docs and the runtime, and checks everything before it writes.
  - what a cold run cannot skip, and what an edit cannot skip: a fresh process that imports the
    very modules such a run imported (from an untimed run of its own, by `-X importtime`) and,
    for the cold run, compiles the very templates it compiled (those it left in the Jinja
    cache), and does nothing else. Beside the targets they show how much of each ratio is the
    Python stack's own start (typer, pydantic and the catalog's models, Jinja, PyYAML, the
    checks' and renderers' modules) and Jinja's compiling, which no work done faster lowers.

`--scale N...` runs the synthetic catalog of benchmarks/synth.py at each size (cold with no
cache, no-op, one edit and the next, a port edited, a service added, output bytes; the median
of `--runs`, once unless given); `--fan-in N` adds N services that all depend on one;
`--events C` the largest size again with C event channels.
The issue's targets are printed beside the figures; nothing here asserts them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
# synth.py and checkout.py beside this file (Nexus itself is the installed one: checkout.require)
sys.path.insert(0, str(Path(__file__).resolve().parent))


class Run(NamedTuple):
    wall: float
    cpu: float
    rss_mb: float
    sys: float = 0.0  # system CPU seconds, part of ``cpu``
    stall: float = 0.0  # seconds some task waited for the disk meanwhile, machine-wide (io_stalled)


PRESSURE = Path("/proc/pressure/io")


def io_stalled(text: str | None = None) -> float:
    """Seconds, since boot, that some task waited for the disk (the ``some`` line's ``total``,
    in microseconds, of /proc/pressure/io, or of ``text``); 0.0 where the kernel does not say."""
    if text is None:
        try:
            text = PRESSURE.read_text(encoding="ascii")
        except OSError:
            return 0.0
    for line in text.splitlines():
        kind, _, fields = line.partition(" ")
        if kind == "some":
            values = dict(f.split("=", 1) for f in fields.split() if "=" in f)
            return int(values.get("total", "0")) / 1e6
    return 0.0


def gauge() -> float:
    """CPU seconds of ``sum(range(3 * 10**7))`` here: pure interpreter work, the same each time,
    so that tables of different hours can be told apart by the machine's speed, not the code's."""
    start = time.process_time()
    sum(range(3 * 10**7))
    return time.process_time() - start


def environment(cache: Path) -> dict[str, str]:
    """A row's environment: its own user cache folder ``cache`` and temporary folder beside it."""
    # TMPDIR: a folder of the benchmark's own, removed with it: cookiecutter renders each hook into a
    # temporary file and never removes it (cookiecutter issue #886), 43 files a row in /tmp otherwise
    temp = cache.parent / "tmp"
    temp.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "TMPDIR": str(temp)}
    # as an installed Nexus runs: with its modules' bytecode cached (a shell that sets this would
    # add the compiling of every module to every row)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run(cmd: list[str], cwd: Path, cache: Path) -> Run:
    """One fresh process: wall, its own CPU seconds and peak RSS (from the kernel's accounting)."""
    env = environment(cache)
    # what earlier rows wrote is flushed first, outside the clock: a cold run at 10,000 services
    # leaves its 290 MB tree and the spare's folders to write back, and the two edits right
    # after it took 10.1 and 10.0 s without this, 6.6 and 6.4 s with it (17:21 and 17:33 UTC)
    os.sync()
    stalled = io_stalled()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stalled = io_stalled() - stalled
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    if proc.stderr:
        proc.stderr.close()
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, usage.ru_stime, stalled)


def median(runs: list[Run]) -> Run:
    return Run(*(statistics.median(getattr(r, f) for r in runs) for f in Run._fields))


def edit_one(catalog: Path, round_: int) -> None:
    """Change one service's description (the first `description:` of a service), as a user would."""
    text = catalog.read_text(encoding="utf-8")
    services = text.index("\nservices:")
    at = text.index("description:", services)
    end = text.index("\n", at)
    catalog.write_text(text[:at] + f'description: "Edited {round_}"' + text[end:], encoding="utf-8")


def first_service(catalog: Path) -> tuple[str, str, str, int]:
    """The catalog's first service: its name, category, team, and a port another service could
    take (the lowest free one of its category's block, by Nexus's own rule; not timed)."""
    from nexus.catalog import load_catalog
    from nexus.catalog.ports import next_port

    cat = load_catalog(catalog).catalog
    name, svc = next(iter(cat.services.items()))
    port = next_port(cat, svc.category)
    if port is None:
        raise SystemExit(f"{catalog}: no free port in {svc.category}'s block for the port edit")
    return name, svc.category, svc.team, port


def edit_port(catalog: Path, port: int) -> None:
    """Set the first service's port (its first `port:` line) to ``port``, as a user would."""
    text = catalog.read_text(encoding="utf-8")
    at = text.index("port:", text.index("\nservices:"))
    end = text.index("\n", at)
    catalog.write_text(text[:at] + f"port: {port}" + text[end:], encoding="utf-8")


def nexus_rows(catalog_text: str, work: Path, runs: int, label: str) -> dict[str, Run]:
    """cold (no cache), cold (warm cache), no-op, one edit and the next, a port edited and a
    service added (`nexus new`), each ``runs`` times, fresh folders."""
    py = sys.executable
    out: dict[str, list[Run]] = {
        "cold, no cache": [],
        "cold, warm cache": [],
        "no-op": [],
        "one edit": [],
        "next edit": [],
        "port edited": [],
        "service added (nexus new)": [],
    }
    for i in range(runs):
        cache = work / f"cache-{label}-{i}"
        for row in ("cold, no cache", "cold, warm cache"):
            folder = work / f"{label}-{i}-{row.replace(' ', '').replace(',', '-')}"
            folder.mkdir(parents=True)
            (folder / "catalog.yaml").write_text(catalog_text, encoding="utf-8")
            out[row].append(run([py, "-m", "nexus", "generate", "-c", "catalog.yaml"], folder, cache))
        out["no-op"].append(run([py, "-m", "nexus", "generate", "-c", "catalog.yaml"], folder, cache))
        edit_one(folder / "catalog.yaml", i)
        out["one edit"].append(run([py, "-m", "nexus", "generate", "-c", "catalog.yaml"], folder, cache))
        # a working copy's usual state: an earlier edit left the spare tree (write.py) and the record
        edit_one(folder / "catalog.yaml", runs + i)
        out["next edit"].append(run([py, "-m", "nexus", "generate", "-c", "catalog.yaml"], folder, cache))
        if i == runs - 1:  # the output of the catalog given (a service is added below)
            out_bytes = sum(p.stat().st_size for p in (folder / "generated").rglob("*") if p.is_file())
            files = sum(1 for p in (folder / "generated").rglob("*") if p.is_file())
        # edits of other kinds, each on what the one before left: a port (every service calling it,
        # the policies and the monitoring blocks it is in), and a service onboarded as a team does
        name, category, team, port = first_service(folder / "catalog.yaml")
        edit_port(folder / "catalog.yaml", port)
        out["port edited"].append(run([py, "-m", "nexus", "generate", "-c", "catalog.yaml"], folder, cache))
        added = [py, "-m", "nexus", "new", f"bench-added-{i}", "--category", category, "--team", team]
        added += ["--depends-on", name, "-c", "catalog.yaml"]
        out["service added (nexus new)"].append(run(added, folder, cache))
        # Folders are left until the whole benchmark ends (its caller removes ``work``): on a
        # file system mounted with online discard, creating files right after deleting a large
        # tree was 2 to 7 times slower (measured: 48,000 files in 2.3 s, then 13.7 s), which
        # would be charged to the next row.
    rows = {k: median(v) for k, v in out.items()}
    rows["_bytes"] = Run(out_bytes, files, 0)  # carried in the same shape: bytes, file count
    return rows


def cookiecutter_rows(work: Path, runs: int) -> dict[str, Run]:
    """The service template for every shipped service, with Nexus's own context for it."""
    from nexus.catalog import load_catalog
    from nexus.render.context import RenderContext
    from nexus.render.services import SERVICE_TEMPLATE, service_context

    loaded = load_catalog(ROOT / "catalog.yaml")
    ctx = RenderContext(loaded.catalog, loaded.plan)
    replays = work / "replays"
    replays.mkdir()
    names = sorted(loaded.catalog.services)
    for name in names:
        context = {**service_context(ctx, name), "_template": str(SERVICE_TEMPLATE)}
        (replays / f"{name}.json").write_text(json.dumps({"cookiecutter": context}), encoding="utf-8")
    api = (
        "import sys\nfrom pathlib import Path\nfrom cookiecutter.main import cookiecutter\n"
        "for replay in sorted(Path(sys.argv[1]).glob('*.json')):\n"
        "    cookiecutter(sys.argv[2], replay=str(replay), output_dir=sys.argv[3])\n"
    )
    py = sys.executable
    api_runs, cli_runs = [], []
    for i in range(runs):
        cache = work / f"cc-cache-{i}"
        folder = work / f"cc-api-{i}"
        folder.mkdir()
        api_runs.append(run([py, "-c", api, str(replays), str(SERVICE_TEMPLATE), str(folder)], folder, cache))
        folder = work / f"cc-cli-{i}"
        folder.mkdir()
        total = Run(0.0, 0.0, 0.0)
        for name in names:
            r = run(
                [py, "-m", "cookiecutter", str(SERVICE_TEMPLATE), "--replay-file", str(replays / f"{name}.json"),
                 "-o", str(folder)],
                folder,
                cache,
            )  # fmt: skip
            total = Run(
                total.wall + r.wall,
                total.cpu + r.cpu,
                max(total.rss_mb, r.rss_mb),
                total.sys + r.sys,
                total.stall + r.stall,
            )
        cli_runs.append(total)
        # like for like: the same files as Nexus renders for the services
        assert sorted(p.name for p in folder.iterdir()) == names
    return {
        f"cookiecutter API, {len(names)} services, one process": median(api_runs),
        f"cookiecutter CLI, {len(names)} services, a process each": median(cli_runs),
    }


# A fresh process that does only what a run cannot skip: imports the modules named in the file
# argv[1], in the order that run finished loading them, then compiles the templates in the file
# argv[2], if given, each from the environment it was compiled in, as a run with no cache
# compiles them; and nothing else. -X importtime names the modules a run tried and did without
# as well (_winapi on Linux): they fail here as they failed there.
FLOOR = """import importlib, sys
for name in open(sys.argv[1], encoding="utf-8").read().split():
    try:
        importlib.import_module(name)
    except ImportError:
        pass
if sys.argv[2:]:
    from nexus.render.context import make_env
    from nexus.render.services import template_env
    envs = {"main": make_env(), "service": template_env()}
    for line in open(sys.argv[2], encoding="utf-8").read().splitlines():
        env, name = line.split("\\t")
        envs[env].get_template(name)
"""


def imported(cmd: list[str], cwd: Path, cache: Path) -> list[str]:
    """The modules a run of ``cmd`` (a ``python ...`` command) imports, in the order they finished
    loading, as ``python -X importtime`` reports them (the run itself is not timed)."""
    proc = subprocess.run(
        [cmd[0], "-X", "importtime", *cmd[1:]], cwd=cwd, env=environment(cache), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    names = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    # the header line, and __main__ modules (importing one again would run the command)
    return [n for n in names if n != "imported package" and not n.endswith("__main__")]


def compiled_templates(cache: Path) -> list[str]:
    """The templates a run compiled, as 'environment<TAB>name' lines: those whose entry it left in
    the Jinja cache under ``cache`` (named by Jinja's key of the template's name and file): the
    catalog's templates (make_env), and the service template's files and their names (template_env)."""
    from nexus.render import services
    from nexus.render.context import bytecode_cache, make_env

    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        kept = bytecode_cache()
    finally:
        if saved is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = saved
    assert kept is not None, f"no usable Jinja cache under {cache}"
    present = {entry.name for entry in kept.folder.iterdir()}
    found: dict[str, str] = {}
    main, service = make_env(), services.template_env()
    for label, env, loader in (("main", main, main.loader), ("service", service, service.loader.loaders[1])):  # type: ignore[union-attr]
        for name in loader.list_templates():
            try:
                filename = loader.get_source(env, name)[1]
            except UnicodeDecodeError:
                continue  # a binary file (bytecode) beside the templates: never one
            found[kept.get_cache_key(name, filename)] = f"{label}\t{name}"
    for path in services._template_files():  # the files' names, rendered from the name alone
        found[kept.get_cache_key(services._NAME + path, None)] = f"service\t{services._NAME}{path}"
    missing = present - found.keys()
    assert not missing, f"{len(missing)} compiled templates of {len(present)} not found: {sorted(missing)[:3]}"
    return sorted(found[key] for key in present)


def floor_commands(catalog_text: str, work: Path) -> dict[str, list[str]]:
    """The rows of what a cold run (no cache) and an edit cannot skip, as commands (FLOOR run in
    ``work``): what they import and compile is taken from a cold run and an edit of their own,
    untimed (an edit compiles nothing: the cold run left its templates compiled)."""
    py = sys.executable
    folder, cache = work / "floor", work / "floor-cache"
    folder.mkdir()
    (folder / "catalog.yaml").write_text(catalog_text, encoding="utf-8")
    generate = [py, "-m", "nexus", "generate", "-c", "catalog.yaml"]
    (work / "cold-modules.txt").write_text("\n".join(imported(generate, folder, cache)), encoding="utf-8")
    templates = compiled_templates(cache)
    (work / "templates.txt").write_text("\n".join(templates), encoding="utf-8")
    edit_one(folder / "catalog.yaml", 0)
    (work / "edit-modules.txt").write_text("\n".join(imported(generate, folder, cache)), encoding="utf-8")
    return {
        f"what a cold run cannot skip: its imports, its {len(templates)} templates compiled": [
            py, "-c", FLOOR, "cold-modules.txt", "templates.txt"
        ],
        "what an edit cannot skip: its imports": [py, "-c", FLOOR, "edit-modules.txt"],
    }  # fmt: skip


FLOOR_ROW = "floor: import typer, pydantic, jinja2, yaml"


def shipped(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="nexus-bench-"))
    text = (ROOT / "catalog.yaml").read_text(encoding="utf-8")
    try:
        floors = floor_commands(text, work)
        # Round by round, each row once in every round: this machine's speed drifts by a third
        # within minutes (the CPU gauge read 0.61 s, then 0.42, around one table), and rows timed
        # in blocks of their own set one minute's floor against another's edit.
        rounds: list[dict[str, Run]] = []
        for i in range(runs):
            row = {FLOOR_ROW: run([sys.executable, "-c", "import typer, pydantic, jinja2, yaml"], work, work / "c")}
            row.update({f"nexus generate, {k}": v for k, v in nexus_rows(text, work, 1, f"shipped-{i}").items()})
            row.update({what: run(cmd, work, work / "c") for what, cmd in floors.items()})
            rounds.append(row)
        rows = {what: median([r[what] for r in rounds]) for what in rounds[0]}
        size = rows.pop("nexus generate, _bytes")
        rows.update(cookiecutter_rows(work, runs))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor = rows[FLOOR_ROW]
    print(
        f"shipped catalog: the median of {runs} rounds, each row once a round in a fresh process; output "
        f"{size.wall / 1e6:.1f} MB in {size.cpu:.0f} files; load average {os.getloadavg()[0]:.1f} at the end "
        "(other work on the machine inflates wall times)"
    )
    print(
        "| run | wall s | CPU s | CPU x floor | peak RSS MB | system CPU s | disk stall s |\n"
        "|---|---|---|---|---|---|---|"
    )
    for what, r in rows.items():
        print(
            f"| {what} | {r.wall:.2f} | {r.cpu:.2f} | {r.cpu / floor.cpu:.1f}x | {r.rss_mb:.0f} "
            f"| {r.sys:.2f} | {r.stall:.2f} |"
        )
    noop = rows["nexus generate, no-op"].cpu
    cold_floor, edit_floor = (rows[what].cpu for what in floors)
    print(
        f"targets: cold no cache <= 4x floor ({rows['nexus generate, cold, no cache'].cpu / floor.cpu:.1f}x; "
        f"what it cannot skip alone {cold_floor / floor.cpu:.1f}x), "
        f"no-op <= 2x floor ({noop / floor.cpu:.1f}x), "
        f"one edit <= 1.5x no-op ({rows['nexus generate, one edit'].cpu / noop:.1f}x; "
        f"the next edit {rows['nexus generate, next edit'].cpu / noop:.1f}x; "
        f"what an edit cannot skip alone {edit_floor / noop:.1f}x)"
    )


def fan_in(n: int) -> str:
    """A synthetic catalog whose every service also depends on one: an ``n``-edge fan-in."""
    import yaml
    from synth import synth

    data = synth(n)
    hub = next(iter(data["services"]))
    for name, svc in data["services"].items():
        if name not in (hub, "gateway"):
            svc.setdefault("depends_on", {})[hub] = "hard"
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False, width=1000)


def scale(sizes: list[int], fan: int | None, runs: int = 1, channels: int | None = None) -> None:
    from synth import synth_yaml

    work = Path(tempfile.mkdtemp(prefix="nexus-bench-scale-"))
    cases = [(f"{n:,} services", synth_yaml(n)) for n in sizes]
    if fan:
        cases.append((f"{fan:,}-edge fan-in", fan_in(fan)))
    if channels:
        cases.append((f"{max(sizes):,} services, {channels:,} channels", synth_yaml(max(sizes), 0, channels)))
    print(f"synthetic catalogs: {'one run' if runs == 1 else f'median of {runs} fresh runs'} each")
    print(
        "| catalog | cold wall s | cold CPU s | cold peak RSS MB | no-op wall s | one edit wall s | next edit wall s "
        "| port edited wall s | service added wall s | output MB | files | load after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    kernel = [
        "| catalog | cold system CPU s | cold disk stall s | one edit system CPU s | one edit disk stall s "
        "| next edit system CPU s | next edit disk stall s |",
        "|---|---|---|---|---|---|---|",
    ]
    try:
        for label, text in cases:
            # the folders' names: each row's own (two rows of 10,000 services share the first word)
            r = nexus_rows(text, work, runs, "-".join(label.replace(",", "").split()))
            kernel.append(
                f"| {label} | {r['cold, no cache'].sys:.1f} | {r['cold, no cache'].stall:.1f} | "
                f"{r['one edit'].sys:.2f} | {r['one edit'].stall:.2f} | "
                f"{r['next edit'].sys:.2f} | {r['next edit'].stall:.2f} |"
            )
            print(
                f"| {label} | {r['cold, no cache'].wall:.1f} | {r['cold, no cache'].cpu:.1f} | "
                f"{r['cold, no cache'].rss_mb:.0f} | {r['no-op'].wall:.2f} | {r['one edit'].wall:.2f} | "
                f"{r['next edit'].wall:.2f} | {r['port edited'].wall:.2f} | "
                f"{r['service added (nexus new)'].wall:.2f} | "
                f"{r['_bytes'].wall / 1e6:.1f} | {r['_bytes'].cpu:.0f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )
        print("the kernel's share of those rows (system CPU seconds, and seconds a task waited for the disk):")
        print("\n".join(kernel), flush=True)
    finally:
        # the folders go last, after the figures (removing them takes the disk for a while)
        shutil.rmtree(work, ignore_errors=True)
    print(
        "targets at 10,000: cold < 90 s wall and < 1.5 GB RSS, no-op < 3 s, one edit < 5 s, 10k/1k CPU <= 11x; "
        "a 10,000-edge fan-in < 60 s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="fresh runs of each row (3; with --scale, 1)")
    parser.add_argument("--scale", type=int, nargs="*", help="synthetic catalog sizes, e.g. 1000 5000 10000")
    parser.add_argument("--fan-in", type=int, default=None, help="services all depending on one (with --scale)")
    parser.add_argument(
        "--events", type=int, default=None, help="event channels, on the largest --scale catalog, as a row of its own"
    )
    args = parser.parse_args()
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f}, "
        f"CPU gauge {gauge():.3f} s"
    )
    if args.scale is not None:
        scale(args.scale, args.fan_in, args.runs or 1, args.events)
    else:
        shipped(args.runs or 3)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU gauge {gauge():.3f} s")


if __name__ == "__main__":
    from checkout import require  # benchmarks/checkout.py: measure this checkout, no other

    require()
    main()
