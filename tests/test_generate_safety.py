"""`nexus generate` under attack and accident (issue 12): a tree copied from another catalog, two
runs at once, a kill just after the swap, caches planted in the checkout, file systems that
refuse (a symlinked, read-only, full or forbidden output folder) and --force's backups.

Concurrency, kills and file-system failures are tested with real `nexus` processes.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import pickle
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml
from conftest import ROOT, can_mount, dump, fill, nexus
from test_generate import big_catalog, tree

from nexus import usercache, write
from nexus.catalog import load_catalog
from nexus.checks import k8s, mesh
from nexus.checks.kubernetes_schema import SchemaValidator
from nexus.errors import (
    CatalogError,
    DriftError,
    EditedDuringRun,
    HandEditedError,
    OutputBusy,
    OutputCheckError,
    OutputError,
)
from nexus.paths import TEMPLATES
from nexus.pipeline import generate
from nexus.render import RenderContext
from nexus.render.services import SERVICE_TEMPLATE


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def popen(*args: str, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def leftovers(project: Path) -> list[str]:
    """What a run may leave beside generated/: only the (empty, git-ignored) lock file."""
    return sorted(p.name for p in project.glob(".generated.nexus-*") if p.name != ".generated.nexus-lock")


def edit(catalog: Path, description: str) -> None:
    data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    data["services"]["auth"]["description"] = description
    catalog.write_text(dump(data), encoding="utf-8")


@pytest.fixture
def project(tmp_path: Path, minimal: dict) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    generate(root / "catalog.yaml")
    return root


# -- --check trusts nothing in the tree -------------------------------------------------------------


def test_check_fails_on_a_tree_rendered_from_another_catalog_whatever_its_manifest_says(
    tmp_path: Path, minimal: dict
) -> None:
    """Two clones; the second changes a description and generates; its generated/ (manifest
    included) is copied over the first's, as `rsync -a --delete` would. The first's catalog
    did not change, so --check must fail."""
    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        root.mkdir()
        (root / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
        assert nexus("generate", "--catalog", str(root / "catalog.yaml")).returncode == 0
    assert nexus("generate", "--check", "--catalog", str(first / "catalog.yaml")).returncode == 0
    edit(second / "catalog.yaml", "Auth, as another branch has it")
    assert nexus("generate", "--catalog", str(second / "catalog.yaml")).returncode == 0
    shutil.rmtree(first / "generated")
    shutil.copytree(second / "generated", first / "generated", symlinks=True)

    result = nexus("generate", "--check", "--catalog", str(first / "catalog.yaml"))
    assert result.returncode == 1, result.stdout
    assert "stale: services/auth/auth/spec.py" in result.stderr
    assert "Traceback" not in result.stderr
    # a plain run puts the first catalog's files back, and the check passes again
    assert nexus("generate", "--catalog", str(first / "catalog.yaml")).returncode == 0
    assert nexus("generate", "--check", "--catalog", str(first / "catalog.yaml")).returncode == 0


KILL_AFTER_SWAP = """
import os, signal, sys
import nexus.write as w
real = w._exchange
def exchange(a, b):
    done = real(a, b)
    os.kill(os.getpid(), signal.SIGKILL)  # the new tree is in place; nothing after the swap has run
    return done
w._exchange = exchange
from nexus.cli import main
sys.argv = ["nexus", *sys.argv[1:]]
main()
"""


def test_a_kill_just_after_the_swap_never_gives_a_false_pass(project: Path) -> None:
    """A real run SIGKILLed right after its swap: the tree is the new catalog's. With the old
    catalog back, --check fails (it used to pass); the next run recovers by itself."""
    catalog = project / "catalog.yaml"
    before = catalog.read_text(encoding="utf-8")
    old_tree = tree(project / "generated")
    edit(catalog, "Auth, changed by a run that gets killed")
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SWAP, "generate", "--catalog", str(catalog)],
        env=env(),
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    changed = catalog.read_text(encoding="utf-8")
    assert tree(project / "generated") != old_tree  # the swap happened

    catalog.write_text(before, encoding="utf-8")  # e.g. `git checkout catalog.yaml`
    result = nexus("generate", "--check", "--catalog", str(catalog))
    assert result.returncode == 1 and "stale: services/auth/auth/spec.py" in result.stderr, (
        result.stdout + result.stderr
    )
    catalog.write_text(changed, encoding="utf-8")
    assert nexus("generate", "--check", "--catalog", str(catalog)).returncode == 0  # the tree is this catalog's

    catalog.write_text(before, encoding="utf-8")
    assert nexus("generate", "--catalog", str(catalog)).returncode == 0
    assert tree(project / "generated") == old_tree
    assert leftovers(project) == []  # the staging tree the kill left (the old tree) is gone
    assert nexus("generate", "--check", "--catalog", str(catalog)).returncode == 0


# -- one run at a time -------------------------------------------------------------------------------


def test_two_generates_at_once_never_collide(tmp_path: Path, minimal: dict) -> None:
    """`nexus generate & nexus generate & wait` after a catalog change, again and again: both
    succeed (the second waits for the first, naming it), no traceback, and the tree is complete
    and passes --check."""
    catalog = tmp_path / "catalog.yaml"
    waited = 0
    for trial in range(6):
        catalog.write_text(big_catalog(copy.deepcopy(minimal), 40, tag=f"trial {trial}: "), encoding="utf-8")
        procs = [popen("generate", "--catalog", str(catalog)) for _ in range(2)]
        results = [p.communicate(timeout=600) for p in procs]
        for proc, (out, err) in zip(procs, results, strict=True):
            assert proc.returncode == 0, f"trial {trial}: {out}{err}"
            assert "Traceback" not in err
        for i, (_, err) in enumerate(results):
            if "waiting for" in err:
                waited += 1
                assert f"(pid {procs[1 - i].pid})" in err, err
        generate(catalog, check_only=True)  # raises DriftError on a missing, stale or extra file
        assert leftovers(tmp_path) == []
    assert waited  # the two overlapped at least once


HOLD_LOCK = """
import sys, time
from pathlib import Path
from nexus import write
with write.locked(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_the_lock_names_its_holder_and_a_killed_holders_lock_is_free(project: Path) -> None:
    """The holder's note is its command line, shown with control characters escaped: an
    argument holding a newline or an escape sequence (here one that clears the screen) went to
    the waiting run's terminal as it was."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(project / "generated"), "\x1b[2J\nx"],
        env=env(),
        text=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(OutputBusy, match=rf"in use by nexus .*\(pid {holder.pid}\).*kill {holder.pid}") as busy:
            generate(project / "catalog.yaml", lock_timeout=0.5)
        assert "generated \\x1b[2J\\nx (pid" in str(busy.value) and "\x1b" not in str(busy.value), busy.value

        edit(project / "catalog.yaml", "Auth, written once the holder is gone")
        waiting = popen("generate", "--catalog", str(project / "catalog.yaml"))
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert f"(pid {holder.pid}) to finish with {project / 'generated'}" in line, line
        holder.send_signal(signal.SIGKILL)  # the kernel drops its flock: nothing stale to clear by hand
        holder.wait()
        out, err = waiting.communicate(timeout=300)
        assert waiting.returncode == 0, err
        assert "files written or removed" in out
    finally:
        holder.kill()
        holder.wait()
    generate(project / "catalog.yaml", check_only=True)


def test_a_run_that_waited_for_the_lock_renders_the_catalog_as_it_is_then(project: Path) -> None:
    """The catalog changed while a run waited for the folder's lock (the holder wrote it, as
    `nexus new` does): the run renders what it holds once it has the lock, never the text it
    read before it waited, after the holder's newer one."""
    out = project / "generated"
    with write.locked(out):
        edit(project / "catalog.yaml", "Auth, as read before the wait")
        waiting = popen("generate", "--catalog", str(project / "catalog.yaml"))
        assert waiting.stderr is not None
        line = waiting.stderr.readline()
        assert f"(pid {os.getpid()}) to finish with {out}" in line, line
        edit(project / "catalog.yaml", "Auth, as written during the wait")
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0 and "Traceback" not in err, err
    generate(project / "catalog.yaml", check_only=True)  # DriftError: the older catalog was rendered


KILLED_WITH_A_WORKER = """
import os, sys, time
import nexus.parallel as parallel
import nexus.render as render
parallel.os.cpu_count = lambda: 2
render.PARALLEL_FROM = 1  # the areas are shared with a worker even for this small catalog
PARENT = os.getpid()
def lingering(area):
    def run(ctx):
        out = area(ctx)
        if os.getpid() == PARENT:
            time.sleep(0.5)  # the worker takes an area meanwhile
            return out
        print(os.getpid(), flush=True)  # the worker's pid: it is still rendering when its parent is killed
        time.sleep(3)
        return {**out, f"docs/large-{area.__module__}.md": "x" * 10_000_000}  # more than a pipe holds
    return run
wrapped = {a: lingering(a) for a in render.AREAS}
render.AREAS = tuple(wrapped[a] for a in render.AREAS)
render.LONGEST_FIRST = tuple(wrapped[a] for a in render.LONGEST_FIRST)
from nexus.cli import main
sys.argv = ["nexus", "generate", "--catalog", sys.argv[1]]
main()
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"  # a zombie nobody reaps in a container has ended all the same
    except FileNotFoundError:
        return True


def _kill_and_await_its_worker(script: str, catalog: Path) -> tuple[int, int]:
    """Run ``script`` (a `nexus generate` whose worker prints its pid and lingers), kill it
    (SIGKILL) once the worker has said its pid, and wait until the worker has ended too; a
    worker that outlives its run fails the test, and is killed so that none is left behind.
    The run's pid and the worker's."""
    run = subprocess.Popen([sys.executable, "-c", script, str(catalog)], env=env(), text=True, stdout=subprocess.PIPE)
    try:
        assert run.stdout is not None
        worker = int(run.stdout.readline())
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 15
        while not _gone(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(worker), f"worker {worker} outlived its killed run"
    finally:
        run.kill()
        run.wait()
        if "worker" in locals() and not _gone(worker):
            os.kill(worker, signal.SIGKILL)  # a failed check leaves no process behind
    return run.pid, worker


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_worker_whose_run_is_killed_ends_and_frees_the_lock(project: Path) -> None:
    """A run killed (SIGKILL) while a forked worker renders: the worker ends too, instead of
    blocking for ever on a result nobody reads while it holds the folder's lock it inherited;
    the next run goes ahead."""
    edit(project / "catalog.yaml", "Auth, while a run is killed")
    _kill_and_await_its_worker(KILLED_WITH_A_WORKER, project / "catalog.yaml")
    generate(project / "catalog.yaml", lock_timeout=10)  # not OutputBusy: nothing holds the lock
    generate(project / "catalog.yaml", check_only=True)


WORKERS_UNDER_CTRL_C = """
import json, os, signal, sys, time
from nexus import parallel
parallel.os.cpu_count = lambda: 2
MAIN = os.getpid()
pressed = []
def ctrl_c():  # a terminal's Ctrl-C goes to every process of the group; this one lives on (a run handling it)
    signal.signal(signal.SIGINT, lambda *_: pressed.append(1))
    for _ in range(20):
        os.killpg(0, signal.SIGINT)
        time.sleep(0.01)
def task():
    if os.getpid() == MAIN:
        ctrl_c()
    else:
        time.sleep(1.0)  # the worker is at work while Ctrl-C is pressed
    return os.getpid()
def first():
    time.sleep(1.0)
    return os.getpid()
job = parallel.ahead(first, lambda made, payload: made, worth=True)
job.send(b"")
shared = parallel.shared([task, task], worth=True)
print(json.dumps({"main": MAIN, "shared": shared, "ahead": job.result(), "pressed": len(pressed)}))
job.close()
"""


def test_forked_workers_leave_ctrl_c_to_their_run() -> None:
    """A terminal's Ctrl-C reaches every process of the run. The workers ignore it: the run
    decides (it stops, and ends or waits for them). Before, a pool's worker raised it into its
    task (here the run got KeyboardInterrupt back from a worker), or halfway through sending its
    result, which left the run reading the rest for ever (a `nexus generate` of 10,000 services
    hung on Ctrl-C); the early worker died with a traceback on the terminal, and its work was
    done again in the run."""
    run = subprocess.run(
        [sys.executable, "-c", WORKERS_UNDER_CTRL_C],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    got = json.loads(run.stdout)
    assert got["pressed"] > 0
    assert len(set(got["shared"])) == 2 and got["main"] in got["shared"]  # the worker did its task
    assert got["ahead"] != got["main"]  # and the early worker its own, not done again here


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_ctrl_c_pressed_again_and_again_stops_a_run_with_a_worker_at_once_and_cleanly(project: Path) -> None:
    """Ctrl-C to the whole run, again and again (someone in a hurry), while its worker renders
    and then sends a result larger than a pipe holds: the run waits for the worker's current
    area, then says "interrupted" and exits 130; no traceback, no process left, the lock free
    and the tree as it was."""
    catalog = project / "catalog.yaml"
    before = tree(project / "generated")
    edit(catalog, "Auth, while Ctrl-C is pressed")
    run = subprocess.Popen(
        [sys.executable, "-c", KILLED_WITH_A_WORKER, str(catalog)],
        env=env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert run.stdout is not None
        worker = int(run.stdout.readline())
        deadline = time.monotonic() + 30
        while run.poll() is None and time.monotonic() < deadline:
            with suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGINT)
            time.sleep(0.02)
        _, err = run.communicate(timeout=5)
    finally:
        run.kill()
        run.wait()
    assert run.returncode == 130 and err == "interrupted\n", err
    until = time.monotonic() + 15
    while not _gone(worker) and time.monotonic() < until:
        time.sleep(0.1)
    assert _gone(worker), f"worker {worker} outlived its interrupted run"
    assert tree(project / "generated") == before
    generate(catalog, lock_timeout=10)  # not OutputBusy: nothing holds the lock
    generate(catalog, check_only=True)


@pytest.fixture
def ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tree large enough for the comparison to begin before the catalog is loaded, on a
    second core (write.Comparison, pipeline._compare_ahead)."""
    from nexus import parallel

    monkeypatch.setattr(write, "COMPARE_AHEAD_FROM", 1)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)


def test_the_comparison_begun_before_the_load_writes_what_a_run_in_turn_writes(
    project: Path, tmp_path: Path, ahead: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tree is looked at in a worker while the catalog loads: the load waits here until
    the worker has begun (it would wait in vain if the comparison began after it), and the
    tree written is the one a run from nothing writes."""
    from nexus import pipeline

    edit(project / "catalog.yaml", "Auth, compared ahead")
    begun = tmp_path / "surveyed-in"
    real_survey, real_load = write._survey, pipeline._load
    monkeypatch.setattr(write, "_survey", lambda *a: begun.write_text(str(os.getpid())) and real_survey(*a))

    def load_once_begun(*args: object) -> object:
        deadline = time.monotonic() + 30
        while not begun.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert begun.exists(), "the comparison did not begin before the catalog was loaded"
        return real_load(*args)

    monkeypatch.setattr(pipeline, "_load", load_once_begun)
    result = generate(project / "catalog.yaml")
    assert begun.read_text() != str(os.getpid())  # in a worker
    assert result.touched and tree(project / "generated") == _fresh(project, tmp_path)
    assert leftovers(project) == []


def test_a_kept_file_replaced_after_the_comparison_looked_is_written_as_it_is_then(
    project: Path, ahead: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison's worker settles which kept files the write links from what it saw of the
    tree before the load (write.scan_spare); the write then stats folders, not files. A kept
    file replaced after that (another inode: its folder changed) and one edited in place (the
    same inode, shared with the spare) are both in the new tree as they are then, never swapped
    out with the old tree; the next run names them as hand edits."""
    # the local clock with no margin, not the file system's (write.clock): what was just written is
    # trusted at once, however soon each comparison looks
    monkeypatch.setattr(write, "clock", lambda out: None)
    monkeypatch.setattr(write.Known, "RACY_NS", 0)
    catalog, out = project / "catalog.yaml", project / "generated"
    edit(catalog, "Auth, a first edit")
    generate(catalog)  # the tree it replaced is the spare
    edit(catalog, "Auth, a second edit")
    replaced, in_place = out / "k8s/base/default-deny.yaml", out / "k8s/base/services/media.yaml"
    real = write._take_spare

    def meanwhile(out_: Path, staging: Path) -> bool:
        aside = replaced.with_name("default-deny.yaml.new")
        aside.write_bytes(replaced.read_bytes() + b"# replaced by hand\n")
        os.replace(aside, replaced)
        with in_place.open("ab") as f:
            f.write(b"# edited in place\n")
        return real(out_, staging)

    monkeypatch.setattr(write, "_take_spare", meanwhile)
    result = generate(catalog)
    assert result.touched  # the edit was written
    assert replaced.read_bytes().endswith(b"# replaced by hand\n")
    assert in_place.read_bytes().endswith(b"# edited in place\n")
    monkeypatch.undo()
    with pytest.raises(HandEditedError) as next_run:
        generate(catalog)
    assert sorted(next_run.value.paths) == ["k8s/base/default-deny.yaml", "k8s/base/services/media.yaml"]


@pytest.mark.parametrize("when", ["read, on a tree compared ahead", "locked"])
def test_a_catalog_saved_while_a_run_reads_it_is_the_next_runs_input(
    project: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, when: str
) -> None:
    """A run names its inputs by the catalog's bytes and loads those very bytes: an edit saved
    while it runs is the next run's input, never rendered under this run's name (its record
    would vouch for a tree of another catalog: undoing the edit said "nothing to do"). Saved
    right after the run read it, where the run takes the lock at once (a large tree's, compared
    ahead), or once it holds the lock. (One saved while it waits for the lock is what it
    renders: test_a_run_that_waited_for_the_lock_renders_the_catalog_as_it_is_then.)"""
    from nexus import pipeline

    catalog, readme = project / "catalog.yaml", project / "generated/services/auth/README.md"
    edit(catalog, "Auth, as read")
    as_read = catalog.read_text(encoding="utf-8")
    if when == "locked":
        real_recover = write.recover

        def locked_then_saved(out: Path) -> None:  # what a run does first once it holds the lock
            real_recover(out)
            edit(catalog, "Auth, saved meanwhile")

        monkeypatch.setattr(write, "recover", locked_then_saved)
    else:
        request.getfixturevalue("ahead")
        real_of = pipeline._Last.of

        def read_then_saved(*args: object) -> object:
            last = real_of(*args)
            edit(catalog, "Auth, saved meanwhile")
            return last

        monkeypatch.setattr(pipeline._Last, "of", read_then_saved)
    generate(catalog)
    monkeypatch.undo()
    assert "Auth, as read" in readme.read_text(encoding="utf-8")
    generate(catalog)  # the catalog saved meanwhile
    assert "Auth, saved meanwhile" in readme.read_text(encoding="utf-8")
    catalog.write_text(as_read, encoding="utf-8")  # the edit undone
    generate(catalog)
    assert "Auth, as read" in readme.read_text(encoding="utf-8")
    generate(catalog, check_only=True)


def test_a_catalog_error_ends_the_comparison_begun_before_the_load(project: Path, ahead: None) -> None:
    """A catalog that does not load stops the run as ever: one CatalogError, the worker gone
    with the run, the lock free, the tree untouched; while another run holds the lock nothing
    begins early, and the catalog's error still comes at once, not after the wait."""
    import multiprocessing

    catalog = project / "catalog.yaml"
    good, before = catalog.read_text(encoding="utf-8"), tree(project / "generated")
    catalog.write_text(good.replace("services:", "services: [", 1), encoding="utf-8")
    with pytest.raises(CatalogError, match=r"catalog\.yaml:\d+:\d+"):
        generate(catalog, lock_timeout=0.5)
    assert multiprocessing.active_children() == []
    assert tree(project / "generated") == before and leftovers(project) == []

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(project / "generated")], env=env(), text=True, stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        started = time.monotonic()
        with pytest.raises(CatalogError):
            generate(catalog, lock_timeout=60)
        assert time.monotonic() - started < 30
    finally:
        holder.kill()
        holder.wait()
    catalog.write_text(good, encoding="utf-8")
    edit(catalog, "Auth, after the error")
    assert generate(catalog, lock_timeout=0.5).touched  # not OutputBusy: nothing holds the lock
    generate(catalog, check_only=True)


KILLED_WHILE_SURVEYING = """
import os, sys, time
import nexus.parallel as parallel
import nexus.write as write
parallel.os.cpu_count = lambda: 2
write.COMPARE_AHEAD_FROM = 1  # the comparison begins before the load even for this small tree
real = write._survey
def slow(*args):
    print(os.getpid(), flush=True)  # the early worker's pid: still surveying when its run is killed
    time.sleep(60)  # only its watch on the run ends it in time
    return real(*args)
write._survey = slow
from nexus.cli import main
sys.argv = ["nexus", "generate", "--catalog", sys.argv[1]]
main()
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_early_worker_of_a_killed_run_ends_and_frees_the_lock(project: Path) -> None:
    """The comparison's worker, forked before the catalog loads, holds the output's lock it
    inherited: a run killed (SIGKILL) while it surveys takes it along, and the next run goes ahead."""
    edit(project / "catalog.yaml", "Auth, while a run is killed early")
    run, worker = _kill_and_await_its_worker(KILLED_WHILE_SURVEYING, project / "catalog.yaml")
    assert worker != run
    assert generate(project / "catalog.yaml", lock_timeout=10).touched  # not OutputBusy: nothing holds the lock
    generate(project / "catalog.yaml", check_only=True)


def test_a_planted_lock_link_is_refused(project: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (project / ".generated.nexus-lock").unlink()  # the lock file an earlier run left (empty)
    (project / ".generated.nexus-lock").symlink_to(victim)
    result = nexus("generate", "--catalog", str(project / "catalog.yaml"))
    assert result.returncode == 1 and "nexus-lock is a symbolic link" in result.stderr, result.stderr
    assert victim.read_text() == "keep me\n"


# -- no executable (or trusted) cache in the checkout --------------------------------------------------


class _Plant:
    """A pickle that, when loaded, creates a folder: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _template_keys() -> list[tuple[str, str | None]]:
    """(name, file name) of every template the old FileSystemBytecodeCache could be asked for."""
    keys: list[tuple[str, str | None]] = []
    for root in (TEMPLATES, SERVICE_TEMPLATE):
        for path in root.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                rel = path.relative_to(root).as_posix()
                keys.append((rel, os.path.normpath(path)))
                keys.append(("name-of:" + rel, None))
    return keys


def test_a_crafted_bytecode_file_in_the_checkout_is_never_loaded(project: Path, tmp_path: Path) -> None:
    """Jinja's FileSystemBytecodeCache unpickles what it finds; a pull request could add such a
    file under .nexus/cache/jinja. Plant one under every name it would look for: no run loads it."""
    marker = tmp_path / "code-ran"
    folder = project / ".nexus/cache/jinja"
    folder.mkdir(parents=True, exist_ok=True)  # (the old code kept its real cache there)
    naming = jinja2.FileSystemBytecodeCache(str(folder))
    for name, filename in _template_keys():
        key = naming.get_cache_key(name, filename)
        (folder / f"__jinja2_{key}.cache").write_bytes(jinja2.bccache.bc_magic + pickle.dumps(_Plant(marker)))
    edit(project / "catalog.yaml", "Auth, rendered again")  # not the no-op path: templates are compiled
    for args in (["generate"], ["generate", "--check", "--strict"], ["diff", "--json"]):
        result = nexus(*args, "--catalog", str(project / "catalog.yaml"))
        assert not marker.exists(), f"`nexus {' '.join(args)}` ran code from the checkout's cache"
        assert "Traceback" not in result.stderr


def test_a_forged_schema_cache_in_the_checkout_does_not_skip_the_checks(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old validator cache lived in .nexus/cache/k8s-schema.json: hashes of documents that
    "passed". Forge it with the hashes of a broken render: the checks still run and fail."""
    import nexus.render as stage  # the pipeline imports the render stage when it renders

    real_render = stage.render

    def broken(ctx: RenderContext, meanwhile: Any = None) -> dict[str, str]:
        files = real_render(ctx, meanwhile)
        path = "k8s/base/services/auth.yaml"
        files[path] = files[path].replace("containerPort:", "containerPorts:")  # not in the schema
        return files

    edit(project / "catalog.yaml", "Auth, checked again")
    loaded = load_catalog(project / "catalog.yaml")
    ctx = RenderContext(loaded.catalog, loaded.plan)
    files = broken(ctx)
    spy = SchemaValidator()
    keys: list[str] = []
    real_key = spy.key
    spy.key = lambda text: keys.append(real_key(text)) or keys[-1]  # type: ignore[method-assign]
    k8s.run(ctx, files, validator=spy)
    mesh.run(ctx, files, validator=spy)
    (project / ".nexus/cache").mkdir(parents=True, exist_ok=True)
    (project / ".nexus/cache/k8s-schema.json").write_text(json.dumps(keys))

    monkeypatch.setattr(stage, "render", broken)
    with pytest.raises(OutputCheckError, match="containerPorts"):
        generate(project / "catalog.yaml")


def test_the_user_cache_is_used_only_while_private_and_intact(project: Path, tmp_path: Path) -> None:
    """In the user's cache folder a compiled template is trusted (only the user can write it),
    but only while the folder is owner-only and each entry's hash holds."""
    marker = tmp_path / "code-ran"
    base = usercache.root()
    assert usercache.folder() == base and stat.S_IMODE(base.stat().st_mode) == 0o700
    entries = [p for p in (base / "jinja").rglob("*") if p.is_file()]
    assert entries, "compiled templates are kept in the user's cache folder"
    code = compile(f"import os; os.mkdir({str(marker)!r})", "<planted>", "exec")
    for entry in entries:
        checksum = usercache.read(entry).partition(b"\n")[0]  # type: ignore[union-attr]
        usercache.write(entry, checksum + b"\n" + __import__("marshal").dumps(code))

    os.chmod(base, 0o777)  # anyone could have written these: not used
    try:
        edit(project / "catalog.yaml", "Auth, the cache folder is open to all")
        generate(project / "catalog.yaml")
        assert not marker.exists()
    finally:
        os.chmod(base, 0o700)
    for entry in entries:  # owner-only again, but every entry altered after its hash was taken
        entry.write_bytes(entry.read_bytes().replace(b"nexus-cache-2 ", b"nexus-cache-2 0", 1)[:-1] + b"\0")
    edit(project / "catalog.yaml", "Auth, the entries are torn")
    generate(project / "catalog.yaml")
    assert not marker.exists()


def test_render_cache_entries_of_another_shape_are_rendered_again(project: Path) -> None:
    """A render cache's shard that is intact (its CRC-32 holds) but whose entries are not what
    this code keeps there (another layout's, or written by the user's own hand): each such entry
    is a miss and renders again, never a traceback, never a file taken from it."""
    import marshal

    from nexus.render import render

    shapes = [
        b"\0",  # the layout that marshalled each entry on its own
        ("one",),
        ({"services/x.py": 1}, {"services/x.py": "0" * 64}),  # a text that is not text
        ({"services/x.py": "x = 1\n"}, {}),  # a file without its SHA-256
        "no-such-key",  # a neighbourhood's key naming nothing
    ]
    shards = [p for p in (usercache.root() / "renders").glob("*/*/*") if p.is_file() and not p.name.startswith(".")]
    assert shards, "the first run kept what it rendered"
    altered = 0
    for shard in shards:
        entries = marshal.loads(usercache.read(shard))  # type: ignore[arg-type]
        usercache.write(shard, marshal.dumps({k: shapes[(altered := altered + 1) % len(shapes)] for k in entries}))
    assert altered > len(shapes)  # every shape, in every area

    edit(project / "catalog.yaml", "Auth, from a cache of another shape")
    result = nexus("generate", "--catalog", str(project / "catalog.yaml"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    loaded = load_catalog(project / "catalog.yaml")
    rendered = render(RenderContext(loaded.catalog, loaded.plan))  # no cache at all
    on_disk = tree(project / "generated")
    assert {p: on_disk[p].decode("utf-8") for p in rendered} == rendered


# -- file systems that refuse --------------------------------------------------------------------------


def test_an_output_folder_whose_name_is_not_utf8_is_written_and_found_unchanged(project: Path, tmp_path: Path) -> None:
    """A folder name is bytes on Linux, UTF-8 or not (an archive unpacked from Latin-1): its
    cache record is named by those bytes, and the lock notes the command as it was given."""
    out = tmp_path / os.fsdecode(b"gen\xe9r\xe9")

    def run(*args: bytes) -> subprocess.CompletedProcess[bytes]:
        catalog = bytes(project / "catalog.yaml")
        command = [sys.executable, "-m", "cli", "generate", b"-c", catalog, b"-o", bytes(out), *args]
        return subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)

    first, again, check = run(), run(), run(b"--check")
    for result in (first, again, check):
        assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode(errors="replace")
    assert b"files written or removed" in first.stdout and b"nothing to do" in again.stdout
    assert tree(out) == tree(project / "generated")


def test_a_symlinked_output_folder_is_refused_and_nothing_is_written_through_it(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    shutil.move(project / "generated", elsewhere)
    (project / "generated").symlink_to(elsewhere)
    before = tree(elsewhere)
    edit(project / "catalog.yaml", "Auth, written through a link?")
    for args in (["generate"], ["generate", "--force"], ["generate", "--check"]):
        result = nexus(*args, "--catalog", str(project / "catalog.yaml"))
        assert result.returncode == 1, result.stdout
        assert "generated is a symbolic link" in result.stderr and f"--out {elsewhere}" in result.stderr
        assert "Traceback" not in result.stderr
    assert tree(elsewhere) == before
    assert leftovers(project) == []
    (project / "generated").unlink()  # the fix the message gives; the next run recovers
    assert nexus("generate", "--catalog", str(project / "catalog.yaml")).returncode == 0
    generate(project / "catalog.yaml", check_only=True)


def modes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_a_read_only_output_folder_is_refused_not_unprotected(project: Path) -> None:
    out = project / "generated"
    spec = out / "services/auth/auth/spec.py"
    spec.chmod(0o444)
    (out / "services/auth").chmod(0o555)
    edit(project / "catalog.yaml", "Auth, behind a read-only folder")
    before, before_modes = tree(out), modes(out)
    try:
        result = nexus("generate", "--catalog", str(project / "catalog.yaml"))
        assert result.returncode == 1, result.stdout
        assert (
            "write-protected (services/auth/, services/auth/auth/spec.py read-only)" in result.stderr
            and "chmod -R u+w" in result.stderr
        ), result.stderr
        assert "Traceback" not in result.stderr
        assert tree(out) == before and modes(out) == before_modes  # the protection is still there
        assert leftovers(project) == []
    finally:
        (out / "services/auth").chmod(0o755)
        spec.chmod(0o644)
    assert nexus("generate", "--catalog", str(project / "catalog.yaml")).returncode == 0
    generate(project / "catalog.yaml", check_only=True)


@pytest.mark.parametrize("ahead", [False, True])
def test_read_only_folders_are_found_by_the_comparisons_walk(
    project: Path, monkeypatch: pytest.MonkeyPatch, ahead: bool
) -> None:
    """The write refuses the read-only folders the comparison's walk found, whether it walked in
    this process or in its worker forked ahead (a large tree's: here every tree's): the top
    folder and one deep inside, each named, and nothing written."""
    if ahead:
        monkeypatch.setattr(write, "COMPARE_AHEAD_FROM", 1)
    out = project / "generated"
    deep = out / "services/auth/auth"
    edit(project / "catalog.yaml", "Auth, behind read-only folders")
    before = tree(out)
    deep.chmod(0o555)
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=r"write-protected \(\./, services/auth/auth/ read-only\)"):
            generate(project / "catalog.yaml")
    finally:
        out.chmod(0o755)
        deep.chmod(0o755)
    assert tree(out) == before
    generate(project / "catalog.yaml")
    generate(project / "catalog.yaml", check_only=True)


@pytest.mark.skipif(not can_mount(), reason="needs root and mount to make a small tmpfs")
def test_a_full_disk_leaves_the_old_tree_and_no_staging(tmp_path: Path, minimal: dict) -> None:
    """A real full disk: a 6 MiB tmpfs filled to the last byte, then a catalog change."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], check=True)
    try:
        catalog = disk / "catalog.yaml"
        catalog.write_text(big_catalog(copy.deepcopy(minimal), 10), encoding="utf-8")
        assert nexus("generate", "--catalog", str(catalog)).returncode == 0
        edit(catalog, "Auth, on a full disk " * 20)
        before = tree(disk / "generated")
        fill(disk)
        result = nexus("generate", "--catalog", str(catalog))
        assert result.returncode == 1, result.stdout
        assert "No space left on device" in result.stderr and "generated/ is unchanged" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert tree(disk / "generated") == before
        assert leftovers(disk) == []  # the partial staging copy was removed: the disk is not kept full
        (disk / "filler").unlink()
        assert nexus("generate", "--catalog", str(catalog)).returncode == 0
        generate(catalog, check_only=True)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))


def test_a_file_size_limit_leaves_the_old_tree_and_no_staging(project: Path) -> None:
    """A real process under `ulimit -f` (RLIMIT_FSIZE): every write past 2000 bytes fails, EFBIG."""
    edit(
        project / "catalog.yaml", "Auth, " * 160
    )  # spec.py and the docs grow past the limit (descriptions stop at 1,000)
    before = tree(project / "generated")
    result = subprocess.run(
        [sys.executable, "-m", "cli", "generate", "--catalog", str(project / "catalog.yaml")],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        preexec_fn=_limit_file_size,
    )
    assert result.returncode == 1, result.stdout
    assert (
        "File too large" in result.stderr
        and "ulimit -f" in result.stderr
        and "generated/ is unchanged" in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr
    assert tree(project / "generated") == before
    assert leftovers(project) == []
    assert nexus("generate", "--catalog", str(project / "catalog.yaml")).returncode == 0
    generate(project / "catalog.yaml", check_only=True)


def test_no_space_while_staging_or_backing_up_is_one_message(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection for machines where no small file system can be mounted: ENOSPC on the
    third file written into staging, then while writing a --force backup."""
    out = project / "generated"
    edit(project / "catalog.yaml", "Auth, no space")
    before = tree(out)
    real_write = write._write_new
    calls = []

    def full(path: str, text: str) -> None:
        calls.append(path)
        if len(calls) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real_write(path, text)

    monkeypatch.setattr(write, "_write_new", full)
    with pytest.raises(OutputError, match=r"No space left on device .*generated/ is unchanged.*free some space"):
        generate(project / "catalog.yaml")
    monkeypatch.undo()
    assert tree(out) == before and leftovers(project) == []

    spec = out / "services/auth/auth/spec.py"
    spec.write_text(spec.read_text() + "# hand edit\n")
    before = tree(out)
    real_fdopen = os.fdopen

    def fdopen(fd: int, mode: str = "r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if mode == "wb":
            f.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return f

    monkeypatch.setattr(write.os, "fdopen", fdopen)
    with pytest.raises(OutputError, match=r"cannot back up .*No space left on device"):
        generate(project / "catalog.yaml", force=True)
    monkeypatch.undo()
    assert tree(out) == before
    assert not any((project / ".nexus/backups").iterdir())  # the partial backup folder was removed


def test_permission_denied_is_one_message_and_the_old_tree_stays(tmp_path: Path, minimal: dict) -> None:
    """A real refusal by the kernel. As root (who may write anything) the run is made as `nobody`
    on a tree root owns, in a sticky folder open to all (like /tmp): the staging copy is built,
    then the swap is refused (EPERM). As another user, a generated file it may not read (EACCES)."""
    base = Path(tempfile.mkdtemp(prefix="nexus-perm-"))
    try:
        base.chmod(0o1777)
        (base / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
        generate(base / "catalog.yaml")
        (base / "catalog.yaml").chmod(0o644)
        edit(base / "catalog.yaml", "Auth, written by somebody else")
        before = tree(base / "generated")
        command = [sys.executable, "-m", "cli", "generate", "--catalog", str(base / "catalog.yaml")]
        if os.geteuid() == 0:
            if not shutil.which("setpriv"):
                pytest.skip("needs setpriv to run as nobody")
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
            run_env = {**env(), "XDG_CACHE_HOME": str(base / "nobody-cache"), "HOME": str(base)}
        else:
            (base / "generated/services/auth/auth/spec.py").chmod(0o000)
            run_env = env()
        result = subprocess.run(command, cwd=ROOT, env=run_env, capture_output=True, text=True)
        assert result.returncode == 1, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        if os.geteuid() == 0:
            assert "cannot write" in result.stderr and "Operation not permitted" in result.stderr, result.stderr
            assert "generated/ is unchanged and no partial copy was left" in result.stderr
        else:
            assert "cannot read" in result.stderr and "Permission denied" in result.stderr, result.stderr
        (base / "generated/services/auth/auth/spec.py").chmod(0o644)
        assert tree(base / "generated") == before
        assert leftovers(base) == []
        generate(base / "catalog.yaml")  # as the owner: recovers
        generate(base / "catalog.yaml", check_only=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_staging_leftovers_are_git_ignored_and_removed_by_the_next_run(project: Path, tmp_path: Path) -> None:
    for name in (
        ".generated.nexus-staging/x.py",
        ".generated.nexus-old/x.py",
        ".generated.nexus-spare/x.py",
        ".generated.nexus-lock",
    ):
        ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT)
        assert ignored.returncode == 0, f"{name} is not git-ignored"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("mine\n")
    (project / ".generated.nexus-staging").symlink_to(outside)  # a planted link, not a folder
    (project / ".generated.nexus-old").mkdir()
    (project / ".generated.nexus-old/half.py").write_text("a killed run's rest\n")
    (project / ".generated.nexus-spare/services").mkdir(parents=True)  # a first spare's folders, half made
    edit(project / "catalog.yaml", "Auth, after a crash")
    result = nexus("generate", "--catalog", str(project / "catalog.yaml"))
    assert result.returncode == 0, result.stderr
    assert leftovers(project) == []
    assert (outside / "precious.txt").read_text() == "mine\n"  # the link was removed, not followed


# -- --force backups ---------------------------------------------------------------------------------


def test_each_force_keeps_its_own_backup_and_says_where(project: Path) -> None:
    out = project / "generated"
    spec = out / "services/auth/auth/spec.py"
    original = spec.read_text()
    folders = []
    for n in (1, 2):
        spec.write_text(original + f"# hand edit {n}\n")
        result = nexus("generate", "--force", "--catalog", str(project / "catalog.yaml"))
        assert result.returncode == 0, result.stderr
        folder = next(
            line.split(" in ", 1)[1].rstrip(":") for line in result.stdout.splitlines() if "backed up in" in line
        )
        assert f"  {folder}/services/auth/auth/spec.py" in result.stdout.splitlines()
        folders.append(Path(folder))
    assert folders[0] != folders[1] and all(f.parent == project / ".nexus/backups" for f in folders)
    assert [(f / "services/auth/auth/spec.py").read_text() for f in folders] == [
        original + "# hand edit 1\n",
        original + "# hand edit 2\n",
    ]
    assert spec.read_text() == original


@pytest.mark.parametrize("planted", [".nexus/backups", ".nexus"])
def test_a_link_planted_in_nexus_never_sends_a_backup_outside(project: Path, tmp_path: Path, planted: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    link = project / planted
    shutil.rmtree(link, ignore_errors=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    spec = project / "generated/services/auth/auth/spec.py"
    spec.write_text(spec.read_text() + "# hand edit\n")
    before = tree(project / "generated")
    result = nexus("generate", "--force", "--catalog", str(project / "catalog.yaml"))
    assert result.returncode == 1
    assert f"{link} is a symbolic link or not a folder" in result.stderr and "Traceback" not in result.stderr, (
        result.stderr
    )
    assert list(outside.iterdir()) == []
    assert tree(project / "generated") == before


def test_a_hand_edit_message_names_the_teams_files_and_the_backup_place(project: Path) -> None:
    spec = project / "generated/services/auth/auth/spec.py"
    spec.write_text(spec.read_text() + "# hand edit\n")
    with pytest.raises(HandEditedError) as info:
        generate(project / "catalog.yaml")
    message = str(info.value)
    assert "services/auth/auth/routes.py, services/auth/tests/test_routes.py" in message
    assert "app/routes.py" not in message and ".bak" not in message
    assert ".nexus/backups/<date-time>/<its path under generated/>" in message


def test_a_tree_symlink_is_not_taken_for_a_generated_file(project: Path, tmp_path: Path) -> None:
    """A link at a generated path, even to a file with the right bytes, is not what Nexus
    writes: --check reports it, and nothing reads or writes through it."""
    out = project / "generated"
    spec = out / "services/auth/auth/spec.py"
    copy_ = tmp_path / "spec.py"
    copy_.write_bytes(spec.read_bytes())
    spec.unlink()
    spec.symlink_to(copy_)
    result = nexus("generate", "--check", "--catalog", str(project / "catalog.yaml"))
    assert result.returncode == 1 and "hand-edited: services/auth/auth/spec.py" in result.stderr, result.stderr
    assert nexus("generate", "--force", "--catalog", str(project / "catalog.yaml")).returncode == 0
    assert not spec.is_symlink() and copy_.read_bytes() == spec.read_bytes()
    generate(project / "catalog.yaml", check_only=True)


def test_the_file_system_root_is_not_an_output_folder(project: Path) -> None:
    with pytest.raises(OutputError, match="the file system's root"):
        generate(project / "catalog.yaml", "/")


@pytest.mark.parametrize("args", [[], ["--force"]])
@pytest.mark.parametrize("out", [".", "..", "sub/../."])
def test_a_folder_that_holds_the_catalog_is_never_an_output_folder(project: Path, out: str, args: list[str]) -> None:
    """`--out .` beside catalog.yaml (or any folder above it): the swap would take the catalog
    and the whole project with it; refused before anything is read, --force or not."""
    (project / "NOTES.md").write_text("mine\n", encoding="utf-8")
    (project / "sub").mkdir()
    before = tree(project)
    result = nexus("generate", "-c", "catalog.yaml", "-o", out, *args, cwd=project)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and "holds the catalog (catalog.yaml)" in result.stderr, result.stderr
    assert "give --out a folder of its own" in result.stderr
    assert tree(project) == before


@pytest.mark.parametrize("args", [[], ["--force"]])
def test_a_folder_nexus_did_not_write_is_not_replaced_even_when_forced(
    project: Path, tmp_path: Path, args: list[str]
) -> None:
    """A folder with no manifest holding files Nexus would not write is someone else's: its
    files are named and nothing is written, whatever the run was asked. (Before, they were
    called hand-edited generated files, and the advice, --force, replaced the folder.)"""
    theirs = tmp_path / "theirs"
    (theirs / "src").mkdir(parents=True)
    (theirs / "NOTES.md").write_text("mine\n", encoding="utf-8")
    (theirs / "src" / "main.py").write_text("print('mine')\n", encoding="utf-8")
    before = tree(theirs)
    result = nexus("generate", "-c", str(project / "catalog.yaml"), "-o", str(theirs), *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == (
        f"error: {theirs} is not a folder Nexus wrote (it has no .nexus-manifest.json) and holds files Nexus would "
        "not write: NOTES.md, src/main.py; a run replaces that folder whole: give --out a new or empty folder, or "
        "move those files out; nothing was written\n"
    )
    assert tree(theirs) == before and not (tmp_path / ".nexus").exists()
    # an empty folder is one of its own; a file added to a folder Nexus wrote stays a refusal --force lifts
    empty = tmp_path / "empty"
    empty.mkdir()
    assert nexus("generate", "-c", str(project / "catalog.yaml"), "-o", str(empty)).returncode == 0
    (empty / "NOTES.md").write_text("mine\n", encoding="utf-8")
    again = nexus("generate", "-c", str(project / "catalog.yaml"), "-o", str(empty))
    assert again.returncode == 1
    assert "these files were added by hand and would be removed:\n  NOTES.md\n" in again.stderr
    with (empty / "CODEOWNERS").open("a", encoding="utf-8") as f:
        f.write("# mine too\n")
    both = nexus("generate", "-c", str(project / "catalog.yaml"), "-o", str(empty)).stderr
    assert "these generated files were edited by hand and would be overwritten:\n  CODEOWNERS\n" in both
    assert both.index("CODEOWNERS") < both.index("these files were added by hand") < both.index("--force"), both


# -- files known unchanged are not read again; any write to one is still seen ----------------------


def _age(project: Path, seconds: int = 3600) -> None:
    """Every file of the tree last modified ``seconds`` ago, as files of an older run are."""
    then = int((os.path.getmtime(project / "catalog.yaml") - seconds) * 1e9)
    for path in (project / "generated").rglob("*"):
        if path.is_file():
            os.utime(path, ns=(then, then))


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = write._read
    monkeypatch.setattr(write, "_read", lambda full: reads.append(full) or real(full))
    return reads


def test_a_run_reads_no_file_whose_identity_is_unchanged_since_it_was_hashed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = project / "catalog.yaml"
    _age(project)
    edit(catalog, "Auth, first")
    first = generate(catalog)  # records each file's identity, those it rewrote too (write.clock)
    reads = _reads(monkeypatch)
    edit(catalog, "Auth, second")
    second = generate(catalog)
    assert second.touched == first.touched  # the same files again: the description's
    # none of the tree's other files is read again (a run without the record reads every one);
    # of those the first run rewrote, at most the few written within the file system clock's
    # last tick before it recorded them
    read = {os.path.relpath(r, project / "generated") for r in reads}
    assert read <= set(first.touched), sorted(read - set(first.touched))
    assert first.count > 3 * len(first.touched)


@pytest.mark.parametrize("compared_ahead", [False, True], ids=["in turn", "ahead"])
def test_a_chain_of_edits_reads_no_file_the_run_before_kept(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compared_ahead: bool
) -> None:
    """From the second edit on, a run brings the spare (the tree the run before replaced) up to
    date, linking into it the files the run before wrote: a link gives a file a new change time,
    and the record (Known.taken) must keep that one, or every later run reads the file again.
    Ahead (write.Comparison in a worker) the write links only what the worker's scan of the
    spare settled. Each run reads none of the files the run before kept, at most a few of those
    it wrote (the ones written within the file system clock's last tick before it recorded them)."""
    if compared_ahead:
        from nexus import parallel

        monkeypatch.setattr(write, "COMPARE_AHEAD_FROM", 1)
        monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    catalog, out, log = project / "catalog.yaml", project / "generated", tmp_path / "reads"
    real = write._read

    def logged(full: str) -> bytes:  # written to a file: a worker's reads are not in this process
        with log.open("a", encoding="utf-8") as f:
            f.write(full + "\n")
        return real(full)

    monkeypatch.setattr(write, "_read", logged)
    before = None
    for n in range(5):
        # each service in turn: the files a run links are the ones the run before wrote, not the ones it writes
        data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
        data["services"][("auth", "media")[n % 2]]["description"] = f"Edited, {n}"
        catalog.write_text(dump(data), encoding="utf-8")
        log.write_text("", encoding="utf-8")
        result = generate(catalog)
        read = {os.path.relpath(r, out) for r in log.read_text(encoding="utf-8").splitlines()}
        if before is not None:
            assert result.touched and read <= set(before.touched), sorted(read - set(before.touched))
        before = result
    assert (project / ".nexus/spare/generated").is_dir()


def _after_the_clock_moves_past(out: Path, *paths: Path) -> None:
    """Wait until the file system's clock (write.clock: the lock file beside ``out`` touched)
    is past the change times of ``paths``: a tick of its timestamps (milliseconds here)."""
    write.lock_path(out).touch()
    newest = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in paths)
    deadline = time.monotonic() + 10
    while (stamp := write.clock(out)) is not None and stamp.ns <= newest:
        assert time.monotonic() < deadline, "the file system's clock did not move"
        time.sleep(0.005)
    assert stamp is not None


def test_files_written_before_the_file_systems_clock_moved_on_are_trusted_at_once(tmp_path: Path) -> None:
    """A file's identity vouches for its bytes once the file system's own clock has moved past
    its times, however little ago that was: not two seconds of the local clock later. Right
    after a cold run of 10,000 services, a fifth of the tree had been written in its last two
    seconds, and the next run read and hashed them all again."""
    out = tmp_path / "generated"
    out.mkdir()
    files = {f"f{i}.txt": f"file {i}\n" for i in range(5)}
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    tree_ = {name: write.sha256(text.encode()) for name, text in files.items()}
    _after_the_clock_moves_past(out, *(out / n for n in files))

    known = write.Known()
    swapped = write.clock(out)  # as the write takes it, right before the new tree goes in place
    ids = known.taken(out, tree_, changed=list(files), stamp=swapped)  # this run wrote them: looked at now
    assert sorted(ids) == sorted(files)
    known.stamp = write.clock(out)  # as a comparison takes it, before it looks
    hashed = {n: known.hash(n, str(out / n)) for n in files}  # and reads and holds them
    assert hashed == tree_ and sorted(known.held) == sorted(files)

    # one written after the stamp the record takes is not trusted (its times are the clock's now)
    late = out / "late.txt"
    stamp = write.clock(out)
    late.write_text("late\n", encoding="utf-8")
    assert stamp is not None and min(late.stat().st_mtime_ns, late.stat().st_ctime_ns) >= stamp.ns
    fresh = write.Known()
    fresh.stamp = stamp
    fresh.hash("late.txt", str(late))
    assert "late.txt" not in fresh.held


def test_a_file_edited_between_the_swap_and_the_record_is_not_trusted_with_the_rendered_hash(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the new tree is in place, a file the run wrote can be edited before the run records
    it. Recorded then with the hash the run rendered, the edit would be invisible to later runs
    (a check would call the tree up to date; only the re-read right before a swap would still
    catch it): only a file last changed before the swap is recorded."""
    catalog, out = project / "catalog.yaml", project / "generated"
    target = out / "k8s/base/services/auth.yaml"
    edit(catalog, "Auth, first")
    real = write._keep_spare

    def meanwhile(out_: Path, old: Path) -> None:
        real(out_, old)  # right after the swap
        target.write_text(target.read_text(encoding="utf-8") + "# a hand edit\n", encoding="utf-8")
        _after_the_clock_moves_past(out, target)  # the record looks later than the edit, by any clock

    monkeypatch.setattr(write, "_keep_spare", meanwhile)
    assert "k8s/base/services/auth.yaml" in generate(catalog).touched
    monkeypatch.undo()
    with pytest.raises(DriftError) as drift:  # the same catalog: the record decides, and names the edit
        generate(catalog, check_only=True)
    assert drift.value.report["hand-edited"] == ["k8s/base/services/auth.yaml"]
    edit(catalog, "Auth, second")  # the file is rendered anew: the edit stops the run as a hand edit
    with pytest.raises(HandEditedError, match=r"auth\.yaml") as refused:
        generate(catalog)
    assert type(refused.value) is HandEditedError
    assert target.read_text(encoding="utf-8").endswith("# a hand edit\n")


def test_without_the_file_systems_clock_a_file_is_trusted_two_seconds_after_it_was_written(tmp_path: Path) -> None:
    """No lock file to touch (a check in a read-only checkout), or a file on another file system
    than the stamp's (a mount inside the tree): the local clock less Known.RACY_NS decides."""
    out = tmp_path / "generated"
    out.mkdir()
    new = out / "new.txt"
    new.write_text("new\n", encoding="utf-8")
    assert write.clock(out) is None  # no lock file beside the tree
    st = new.stat()
    assert write.settled_before(st, None) <= time.time_ns() - write.Known.RACY_NS
    elsewhere = write.Stamp(st.st_dev + 1, time.time_ns() + 10**12)  # far ahead, but another device
    assert min(st.st_mtime_ns, st.st_ctime_ns) >= write.settled_before(st, elsewhere)
    known = write.Known()
    known.stamp = elsewhere
    known.hash("new.txt", str(new))
    assert known.held == {}
    assert write.Known().taken(out, {"new.txt": write.sha256(b"new\n")}, changed=["new.txt"], stamp=None) == {}


def test_the_record_names_each_file_once_whatever_strings_the_comparison_held_it_by() -> None:
    """Known.taken keys the identities by the tree's own path strings, not by the equal ones the
    comparison held them by (its worker's, or the last record's): the record's marshal then
    writes each path once and refers to it after (at 10,000 services the record was 4 MB larger
    and slower to write and read on every run when the two were different objects)."""
    import marshal

    paths = [f"services/s{i}/app/f{j}.py" for i in range(50) for j in range(4)]
    tree: dict[str, str | None] = {p: write.sha256(p.encode()) for p in paths}
    tree["services/s0/NOTES.md"] = None  # a team's own: no identity recorded
    known = write.Known()
    # equal strings, other objects: as the comparison's worker sends them back
    known.held = {"".join(list(p)): "10:1:2:3" for p in [*paths, "services/s0/NOTES.md"]}
    ids = known.taken(Path("/nonexistent"), tree)
    assert set(ids) == set(paths)
    own = {id(p) for p in tree}
    assert all(id(p) in own for p in ids)  # the tree's strings
    assert len(marshal.dumps({"tree": tree, "seen": ids})) < len(marshal.dumps(tree)) + len(marshal.dumps(ids)) * 0.6


def test_a_same_size_edit_with_the_old_modification_time_is_still_seen(project: Path) -> None:
    """The change time gives it away: touch, tar and rsync can set the modification time back,
    nobody can set the change time."""
    catalog = project / "catalog.yaml"
    _age(project)
    edit(catalog, "Auth, once")
    generate(catalog)
    edit(catalog, "Auth, once")  # same catalog bytes again: the next run has nothing to render
    target = next((project / "generated" / "k8s" / "base" / "services").glob("media.yaml"))
    before = target.stat()
    text = target.read_text(encoding="utf-8")
    target.write_text(text.replace("media", "MEDIA", 1), encoding="utf-8")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(HandEditedError, match=r"media\.yaml"):
        generate(catalog)


def test_edits_made_while_the_run_writes_are_refused_never_swapped_out(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the comparison has read the tree, the run checks and builds the new tree (seconds at
    10,000 services). A file it would replace or remove that is edited meanwhile, or a file made
    where it would create one, stops it right before the swap: nothing is written, each edit is
    where it was left, and the next run names them as hand edits, as ever."""
    catalog, out = project / "catalog.yaml", project / "generated"
    made = out / "services/gateway/README.md"
    made.unlink()  # the run creates it again
    data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    del data["services"]["media"], data["services"]["gateway"]["depends_on"]["media"], data["flows"]["watch"]
    data["services"]["auth"]["description"] = "Auth, edited in the catalog"
    catalog.write_text(dump(data), encoding="utf-8")
    updated, removed = out / "k8s/base/services/auth.yaml", out / "k8s/base/services/media.yaml"
    before = tree(out)
    edits = {updated: updated.read_bytes() + b"# a hand edit\n", removed: b"# another\n", made: b"the team's words\n"}
    real = write._take_spare

    def meanwhile(out_: Path, staging: Path) -> bool:
        for path, data in edits.items():
            path.write_bytes(data)
        return real(out_, staging)

    monkeypatch.setattr(write, "_take_spare", meanwhile)
    with pytest.raises(EditedDuringRun, match="changed while this run was writing") as late:
        generate(catalog)
    names = sorted(str(p.relative_to(out)) for p in edits)
    assert late.value.paths == names
    assert tree(out) == {**before, **{str(p.relative_to(out)): data for p, data in edits.items()}}
    assert leftovers(project) == []

    monkeypatch.undo()
    with pytest.raises(HandEditedError) as next_run:
        generate(catalog)
    assert type(next_run.value) is HandEditedError and sorted(next_run.value.paths) == names

    # a first run, with no tree when it compared: a tree made meanwhile is not swapped out
    shutil.rmtree(out)
    mine = out / "services/auth/NOTES.md"

    def making(out_: Path, staging: Path) -> bool:
        mine.parent.mkdir(parents=True)
        mine.write_text("written while the first run ran\n")
        return real(out_, staging)

    monkeypatch.setattr(write, "_take_spare", making)
    with pytest.raises(EditedDuringRun) as first:
        generate(catalog)
    assert first.value.paths == ["services/auth/NOTES.md"]
    assert tree(out) == {"services/auth/NOTES.md": b"written while the first run ran\n"}


# -- the spare: the tree a swap replaced, brought up to date by the next run -------------------------


def _fresh(project: Path, tmp_path: Path) -> dict[str, bytes]:
    """What a run from nothing writes for the project's catalog now."""
    elsewhere = tmp_path / "fresh"
    elsewhere.mkdir(parents=True)
    shutil.copy(project / "catalog.yaml", elsewhere / "catalog.yaml")
    generate(elsewhere / "catalog.yaml")
    return tree(elsewhere / "generated")


def test_a_run_brings_the_spare_up_to_date_instead_of_linking_every_file(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, out = project / "catalog.yaml", project / "generated"
    edit(catalog, "Auth, first")
    first = generate(catalog)  # the tree it replaced is now the spare
    assert (project / ".nexus/spare/generated").is_dir()
    team_file = out / "services/auth/auth/routes.py"
    team_file.write_text(team_file.read_text() + "# the team's line\n")  # in place: the spare shares it
    added = out / "services/media/NOTES.md"
    added.write_text("a team's own file\n")
    inodes = {p: p.stat().st_ino for p in out.rglob("*") if p.is_file()}
    links: list[str] = []
    real = write._link
    monkeypatch.setattr(write, "_link", lambda source, dest: links.append(source) or real(source, dest))
    edit(catalog, "Auth, second")
    second = generate(catalog)
    assert second.touched == first.touched
    # linked again: only what the spare does not share with the live tree (what the first run
    # wrote, and the team's new file); a build from nothing links every kept file
    linked = {os.path.relpath(s, out) for s in links}
    assert linked == set(first.touched) - set(second.touched) | {"services/media/NOTES.md"}, linked
    assert tree(out) == {**_fresh(project, tmp_path),
        "services/auth/auth/routes.py": team_file.read_bytes(), "services/media/NOTES.md": b"a team's own file\n"
    }  # fmt: skip
    assert b"# the team's line" in team_file.read_bytes()
    kept = [p for p in inodes if os.path.relpath(p, out) not in {*second.touched, write.MANIFEST}]
    assert kept and [p for p in kept if p.stat().st_ino != inodes[p]] == []  # the same files, not copies


def test_each_run_lists_its_tree_for_the_next_which_reads_its_spare_from_that_listing(
    project: Path, tmp_path: Path, ahead: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the comparison in a worker, a run lists the tree it surveyed (write.SpareListing),
    and the next run, whose spare that tree is, reads the listing instead of walking the
    spare. Each tree is the one a run from nothing writes: a tool's folder and file in the live
    tree go to the spare with it and are dropped from the next tree. A spare changed since it
    was listed is walked, and what was planted in it is not in the new tree."""
    from nexus import pipeline

    monkeypatch.setattr(write, "clock", lambda out: None)  # no margin: what was just made is settled
    monkeypatch.setattr(write.Known, "RACY_NS", 0)
    catalog, out = project / "catalog.yaml", project / "generated"
    walked = tmp_path / "walked"  # the worker is forked: it says so in a file
    real_scan = write.scan_spare
    monkeypatch.setattr(write, "scan_spare", lambda *a: walked.write_text("walked") and real_scan(*a))
    listing = pipeline._Last.of(catalog, out, False).listing
    assert listing is not None and not listing.exists()
    (out / "services/auth/__pycache__").mkdir()
    (out / "services/auth/__pycache__/main.cpython-311.pyc").write_bytes(b"bytecode")
    (out / "services/auth/stray.pyc").write_bytes(b"bytecode")

    edit(catalog, "Auth, first")
    generate(catalog)
    assert walked.exists() and listing.exists()  # nothing listed yet; this run's tree is now
    walked.unlink()
    spare = project / ".nexus/spare/generated"
    assert (spare / "services/auth/__pycache__").is_dir()
    edit(catalog, "Auth, second")
    generate(catalog)
    assert not walked.exists()  # read from the listing
    assert tree(out) == _fresh(project, tmp_path / "second")

    listed = listing.read_bytes()
    catalog.write_text(catalog.read_text(encoding="utf-8") + "# a comment: the same files\n", encoding="utf-8")
    assert generate(catalog).touched == []  # compared in the worker, nothing swapped
    assert listing.read_bytes() == listed  # still the listing of the spare
    edit(catalog, "Auth, after a run that wrote nothing")
    generate(catalog)
    assert not walked.exists()

    (spare / "services/auth/planted.md").write_text("planted in the spare\n")
    edit(catalog, "Auth, third")
    generate(catalog)
    assert walked.exists()  # the spare changed since it was listed
    assert tree(out) == _fresh(project, tmp_path / "third")


@pytest.mark.parametrize("beside", [False, True], ids=["in turn", "folders in a worker"])
def test_a_first_tree_leaves_a_spare_so_the_first_edit_builds_nothing_from_scratch(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, beside: bool
) -> None:
    """A cold run replaces no tree to keep as the spare: it makes one (its folders beside the
    write, on a large tree in a worker) and links its files into it before it records, so the
    next run trusts every file by its identity still, and the first edit brings that spare up
    to date (links nothing, builds no tree from nothing) as later edits do."""
    if beside:
        from nexus import parallel

        monkeypatch.setattr(write, "COMPARE_AHEAD_FROM", 1)
        monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    shutil.rmtree(project / "generated")
    shutil.rmtree(project / ".nexus", ignore_errors=True)
    catalog, out, spare = project / "catalog.yaml", project / "generated", project / ".nexus/spare/generated"
    generate(catalog)
    live = {p.relative_to(out): p.stat().st_ino for p in out.rglob("*") if p.is_file() and p.name != write.MANIFEST}
    assert {p.relative_to(spare): p.stat().st_ino for p in spare.rglob("*") if p.is_file()} == live
    assert leftovers(project) == []

    reads: list[str] = []
    real_read = write._read
    monkeypatch.setattr(write, "_read", lambda full: reads.append(full) or real_read(full))
    assert generate(catalog).touched == [] and reads == []  # the record holds the identities the links left

    links: list[str] = []
    real_link = write._link
    monkeypatch.setattr(write, "_link", lambda source, dest: links.append(source) or real_link(source, dest))
    monkeypatch.setattr(write, "_build", lambda *a: pytest.fail("a tree built from nothing"))
    edit(catalog, "Auth, first")
    first = generate(catalog)
    assert first.touched and links == []
    monkeypatch.undo()
    assert tree(out) == _fresh(project, tmp_path)


@pytest.mark.parametrize("planted", [False, True], ids=["as left", "changed since"])
def test_a_first_trees_spare_is_listed_so_the_first_edit_reads_it_instead_of_walking_it(
    project: Path, tmp_path: Path, ahead: None, monkeypatch: pytest.MonkeyPatch, planted: bool
) -> None:
    """A cold run lists the spare it made (write.SpareListing.of_first, once the file
    system's clock has moved past its folders' last change): every file with the inode it
    shares with the tree. The first edit then reads that listing, as later edits read the
    one the run before left, and walks the spare only when it changed since; either way it
    writes the tree a run from nothing writes, and nothing planted in the spare."""
    from nexus import pipeline

    shutil.rmtree(project / "generated")
    shutil.rmtree(project / ".nexus", ignore_errors=True)
    catalog, out, spare = project / "catalog.yaml", project / "generated", project / ".nexus/spare/generated"
    listing = pipeline._Last.of(catalog, out, False).listing
    assert listing is not None
    generate(catalog)
    listed = write.SpareListing.read(listing)
    assert listed is not None
    files = {str(p.relative_to(spare)): p.stat().st_ino for p in spare.rglob("*") if p.is_file()}
    assert listed.files == files
    assert files == {
        str(p.relative_to(out)): p.stat().st_ino for p in out.rglob("*") if p.is_file() and p.name != write.MANIFEST
    }
    assert sorted(listed.folders) == sorted(str(p.relative_to(spare)) for p in spare.rglob("*") if p.is_dir())

    walked = tmp_path / "walked"  # the worker is forked: it says so in a file
    real_scan = write.scan_spare
    monkeypatch.setattr(write, "scan_spare", lambda *a: walked.write_text("walked") and real_scan(*a))
    assert generate(catalog).touched == []
    if planted:
        (spare / "services/auth/planted.md").write_text("planted in the spare\n")
    edit(catalog, "Auth, first")
    assert generate(catalog).touched
    assert walked.exists() == planted
    assert tree(out) == _fresh(project, tmp_path / "fresh")


def test_a_spare_with_planted_links_and_strays_is_cleaned_never_followed(project: Path, tmp_path: Path) -> None:
    catalog, out = project / "catalog.yaml", project / "generated"
    edit(catalog, "Auth, first")
    generate(catalog)
    spare = project / ".nexus/spare/generated"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(spare / "services/auth")
    (spare / "services/auth").symlink_to(outside)  # a folder the run writes into
    (spare / "docs/README.md").unlink()
    (spare / "docs/README.md").symlink_to(outside / "README.md")  # a file the run rewrites
    (spare / "stray.txt").write_text("not ours\n")
    (spare / "services/media/__pycache__").mkdir()
    (spare / "services/media/__pycache__/x.pyc").write_bytes(b"\0")
    edit(catalog, "Auth, second")
    generate(catalog)
    assert list(outside.iterdir()) == []
    assert tree(out) == _fresh(project, tmp_path)


def test_a_spare_folder_that_is_a_link_is_not_used(project: Path, tmp_path: Path) -> None:
    catalog, out = project / "catalog.yaml", project / "generated"
    outside = tmp_path / "outside"
    shutil.copytree(out, outside)
    (project / ".nexus/spare").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(project / ".nexus/spare/generated", ignore_errors=True)
    (project / ".nexus/spare/generated").symlink_to(outside)
    before = tree(outside)
    edit(catalog, "Auth, changed")
    generate(catalog)
    assert tree(outside) == before  # neither taken nor written through
    assert tree(out) == _fresh(project, tmp_path)


def test_no_space_while_bringing_the_spare_up_to_date_leaves_the_tree_and_no_staging(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog, out = project / "catalog.yaml", project / "generated"
    edit(catalog, "Auth, first")
    generate(catalog)
    edit(catalog, "Auth, no space")
    before = tree(out)

    def full(path: str, text: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(write, "_write_new", full)
    with pytest.raises(OutputError, match=r"No space left on device .*generated/ is unchanged.*free some space"):
        generate(catalog)
    monkeypatch.undo()
    assert tree(out) == before and leftovers(project) == []
    generate(catalog)  # the spare was used up: the next run builds from nothing
    assert tree(out) == _fresh(project, tmp_path)
