"""generate(): determinism, safe re-runs, hand edits, team-owned files, atomic writes, --check."""

from __future__ import annotations

import gc
import json
import marshal
import os
import random
import re
import shutil
import signal
import string
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, ROOT, age_past_stale, dump, killed_at_rename, nexus, tree
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nexus import write
from nexus.catalog import load_catalog
from nexus.digest import of_files
from nexus.errors import DriftError, HandEditedError, OutputCheckError, OutputError, TemplateError
from nexus.pipeline import generate
from nexus.render import RenderContext, render
from nexus.render.services import team_owned


def mtimes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def project(tmp_path: Path, minimal: dict) -> Path:
    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    generate(tmp_path / "catalog.yaml")
    return tmp_path


def rewrite(project: Path, change) -> None:
    data = yaml.safe_load((project / "catalog.yaml").read_text(encoding="utf-8"))
    change(data)
    (project / "catalog.yaml").write_text(dump(data), encoding="utf-8")


def test_first_run_writes_every_file_and_a_manifest_of_hashes(project: Path) -> None:
    out = project / "generated"
    manifest = json.loads((out / write.MANIFEST).read_text())
    files = tree(out)
    del files[write.MANIFEST]
    assert set(manifest["files"]) == set(files)
    for path, data in files.items():
        assert manifest["files"][path] == write.sha256(data), path
    assert "services/gateway/gateway/main.py" in files


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        # any text, and names as Nexus writes them (printable ASCII), which orjson encodes
        st.one_of(st.text(min_size=1), st.text(alphabet=string.printable, min_size=1)),
        st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    )
)
@example({"a\x7fb": "0" * 64, "a": "1" * 64})  # json escapes DEL, orjson does not
@example({'q"\\/\n\x01': "2" * 64})
def test_the_manifest_is_json_with_one_file_per_line_whatever_the_names(files: dict[str, str]) -> None:
    """write.manifest_text spells the frame by hand around orjson's entries or, where orjson
    escaped anything, the C encoder's: the bytes are exactly those of json.dumps with indent=1,
    sorted, for any name (quotes, backslashes, control and non-ASCII characters)."""
    text = write.manifest_text(files)
    assert text == json.dumps({"version": 1, "files": files}, indent=1, sort_keys=True) + "\n"
    assert json.loads(text) == {"version": 1, "files": files}


def test_second_run_writes_nothing_and_keeps_modification_times(project: Path) -> None:
    before = mtimes(project / "generated")
    time.sleep(0.01)
    result = generate(project / "catalog.yaml")
    assert result.touched == []
    assert mtimes(project / "generated") == before


def test_same_catalog_in_another_order_gives_identical_bytes(minimal: dict, tmp_path: Path) -> None:
    def shuffled(data: dict, seed: int) -> dict:
        rng = random.Random(seed)
        out = {}
        for key, value in data.items():
            if isinstance(value, dict):
                items = list(value.items())
                rng.shuffle(items)
                value = dict(items)
            out[key] = value
        return out

    trees = []
    for seed in range(3):
        d = tmp_path / str(seed)
        d.mkdir()
        (d / "catalog.yaml").write_text(dump(shuffled(minimal, seed)))
        generate(d / "catalog.yaml")
        trees.append(tree(d / "generated"))
    assert trees[0] == trees[1] == trees[2]


def test_shipped_catalog_renders_deterministically() -> None:
    loaded = load_catalog(CATALOG)
    a = render(RenderContext(loaded.catalog, loaded.plan))
    b = render(RenderContext(load_catalog(CATALOG).catalog, loaded.plan))
    assert a == b
    assert not any(
        "Z" in line and "20" in line and "T" in line
        for text in a.values()
        for line in text.splitlines()
        if "timestamp" in line.lower()
    )


def test_what_a_run_built_is_freed_with_its_result(project: Path) -> None:
    """The render context and caches a run built are held by its result (the CLI ends the
    process holding it, so nothing is freed object by object), and freed with it: a library
    caller that drops the result keeps nothing."""
    rewrite(project, lambda d: d["services"]["auth"].update(description="Edited"))
    result = generate(project / "catalog.yaml")
    (ctx,) = (h for h in result.held if isinstance(h, RenderContext))
    freed = weakref.ref(ctx)
    del ctx
    gc.collect()
    assert freed() is not None  # the result holds it
    del result
    gc.collect()
    assert freed() is None


def test_a_removed_service_loses_its_files(project: Path) -> None:
    assert (project / "generated/services/media").is_dir()

    def drop_media(d: dict) -> None:
        del d["services"]["media"]
        del d["services"]["gateway"]["depends_on"]["media"]
        del d["flows"]["watch"]

    rewrite(project, drop_media)
    result = generate(project / "catalog.yaml")
    assert "services/media/media/main.py" in result.touched
    assert not (project / "generated/services/media").exists()
    generate(project / "catalog.yaml", check_only=True)


def test_hand_edited_file_stops_the_run_and_nothing_is_written(project: Path) -> None:
    out = project / "generated"
    spec = out / "services/auth/auth/spec.py"
    spec.write_text(spec.read_text() + "# my fix\n")
    rewrite(project, lambda d: d["services"]["auth"].update(port=4011))
    before = tree(out)
    with pytest.raises(HandEditedError, match=r"services/auth/auth/spec\.py"):
        generate(project / "catalog.yaml")
    assert tree(out) == before  # the port change was not written either


def test_force_overwrites_a_hand_edit_after_a_backup(project: Path) -> None:
    out = project / "generated"
    spec = out / "services/auth/auth/spec.py"
    original = spec.read_text()
    spec.write_text(original + "# my fix\n")
    result = generate(project / "catalog.yaml", force=True)
    assert "services/auth/auth/spec.py" in result.touched
    assert spec.read_text() == original
    assert result.backup is not None and result.backup.parent == project / ".nexus/backups"
    assert (result.backup / "services/auth/auth/spec.py").read_text() == original + "# my fix\n"


def test_team_owned_files_are_created_once_and_never_touched(project: Path) -> None:
    out = project / "generated"
    routes = out / "services/auth/auth/routes.py"
    routes.write_text("# the team's own code\n")
    (out / "services/auth/auth/models.py").write_text("# a module the team added\n")
    rewrite(project, lambda d: d["services"]["auth"].update(description="Auth, renamed"))
    result = generate(project / "catalog.yaml")
    assert "services/auth/auth/spec.py" in result.touched
    assert routes.read_text() == "# the team's own code\n"
    assert (out / "services/auth/auth/models.py").exists()
    generate(project / "catalog.yaml", check_only=True)  # the team's files are not drift


def test_a_deleted_team_file_is_created_again(project: Path) -> None:
    routes = project / "generated/services/auth/auth/routes.py"
    routes.unlink()
    generate(project / "catalog.yaml")
    assert "router = APIRouter" in routes.read_text()


def test_check_lists_missing_stale_extra_and_hand_edited_and_writes_nothing(project: Path) -> None:
    out = project / "generated"
    (out / "services/gateway/README.md").unlink()  # missing
    (out / "k8s-notes.txt").write_text("stray\n")  # extra, not ours
    spec = out / "services/auth/auth/main.py"
    spec.write_text(spec.read_text() + "\n")  # hand-edited
    rewrite(project, lambda d: d["services"]["media"].update(port=4012))  # stale
    before = tree(out)
    with pytest.raises(DriftError) as info:
        generate(project / "catalog.yaml", check_only=True)
    report = info.value.report
    assert report["missing"] == ["services/gateway/README.md"]
    assert "services/media/media/spec.py" in report["stale"]
    assert report["extra"] == ["k8s-notes.txt"]
    assert report["hand-edited"] == ["services/auth/auth/main.py"]
    assert tree(out) == before


def test_check_through_the_cli_exits_1_and_names_the_file(project: Path) -> None:
    (project / "generated/services/gateway/README.md").unlink()
    result = nexus("generate", "--check", "--catalog", str(project / "catalog.yaml"))
    assert result.returncode == 1
    assert "missing: services/gateway/README.md" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error:\n{project / 'generated'} is out of date with the catalog"), result.stderr
    elsewhere = project / "elsewhere"  # the folder checked is the one named, not generated/
    other = nexus("generate", "--check", "--catalog", str(project / "catalog.yaml"), "--out", str(elsewhere))
    assert other.returncode == 1 and other.stderr.startswith(f"error:\n{elsewhere} is out of date with"), other.stderr


def test_timings_through_the_cli_follow_the_usual_output_and_precede_an_error(project: Path) -> None:
    catalog = str(project / "catalog.yaml")
    rewrite(project, lambda d: d["services"]["auth"].update(description="Auth, timed"))
    result = nexus("generate", "--timings", "--catalog", catalog)
    assert result.returncode == 0, result.stderr
    assert "files written or removed" in result.stdout and "where the time went" not in result.stdout
    rows = [line.split() for line in result.stderr.splitlines()]
    names = [" ".join(r[:-3]) for r in rows if len(r) > 3 and all(re.fullmatch(r"\d+\.\d{3}", c) for c in r[-3:])]
    assert names == [*RENDERING_STAGES, "between the stages", "total"]

    (project / "catalog.yaml").write_text("services: [\n", encoding="utf-8")
    failed = nexus("generate", "--timings", "--catalog", catalog)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "load and validate the catalog" in failed.stderr and "render" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {catalog}:2:1: invalid YAML"), failed.stderr
    assert "Traceback" not in failed.stderr
    assert "where the time went" not in nexus("generate", "--catalog", catalog).stderr


def test_a_failed_write_leaves_the_old_tree(project: Path) -> None:
    out = project / "generated"
    before = tree(out)
    loaded = load_catalog(project / "catalog.yaml")
    files = render(RenderContext(loaded.catalog, loaded.plan))
    files["services/auth/README.md"] = "changed\n"
    files["services/gateway/" + "x" * 300] = "a name longer than the file system allows\n"
    with pytest.raises(OutputError, match=r"File name too long .*generated/ is unchanged"):
        write.apply(out, files, write.compare(out, files, team_owned))
    assert tree(out) == before
    assert not list(project.glob(".generated.nexus-staging")) and not list(project.glob(".generated.nexus-old"))


def big_catalog(minimal: dict, n: int, tag: str = "") -> str:
    """The minimal catalog plus ``n`` chained services: enough files that a kill lands mid-write."""
    for i in range(n):
        minimal["services"][f"svc-{i}"] = {
            "port": 5000 + i,
            "category": "platform",
            "team": "core",
            "description": f"{tag}service {i}",
            "depends_on": {f"svc-{i - 1}": "hard"} if i else {"auth": "hard"},
        }
    return dump(minimal)


def test_killed_runs_leave_the_old_tree_or_the_new_one(tmp_path: Path, minimal: dict) -> None:
    """SIGKILL a real `nexus generate` at several moments: each time, once the next run has
    cleaned up, generated/ is exactly the old tree or exactly the new one."""
    import copy

    expected = tmp_path / "expected"
    expected.mkdir()
    (expected / "catalog.yaml").write_text(big_catalog(copy.deepcopy(minimal), 300, tag="v2 "))
    generate(expected / "catalog.yaml")
    new = tree(expected / "generated")

    work = tmp_path / "work"
    work.mkdir()
    catalog = work / "catalog.yaml"
    seen = set()
    for delay in (0.2, 0.35, 0.5, 0.65, 0.8, 1.0):
        catalog.write_text(big_catalog(copy.deepcopy(minimal), 300))
        generate(catalog, force=True)
        old = tree(work / "generated")
        catalog.write_text((expected / "catalog.yaml").read_text())
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "generate", "--catalog", str(catalog)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        write.recover(work / "generated")
        now = tree(work / "generated")
        assert now in (old, new), f"a mix after a kill at {delay}s"
        seen.add("old" if now == old else "new")
    assert seen  # which states were hit depends on the machine's speed; both are correct


def test_template_error_names_template_line_and_service(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from nexus.render import services as render_services

    broken = tmp_path / "tpl"
    shutil.copytree(render_services.SERVICE_TEMPLATE, broken)
    main = broken / "{{cookiecutter.name}}/{{cookiecutter.package}}/main.py"
    lines = main.read_text().splitlines()
    main.write_text("\n".join([*lines, "{{ cookiecutter.no_such_variable }}"]) + "\n")
    monkeypatch.setattr(render_services, "SERVICE_TEMPLATE", broken)
    render_services._extensions.cache_clear()
    rewrite(project, lambda d: d["services"]["auth"].update(description="renders again"))  # not the fast path
    with pytest.raises(
        TemplateError,
        match=r"templates/service/\{\{cookiecutter.name\}\}/\{\{cookiecutter.package\}\}/main.py:"
        + str(len(lines) + 1)
        + r": .*no_such_variable.*\(rendering auth\)",
    ):
        generate(project / "catalog.yaml")
    render_services._extensions.cache_clear()


def test_failed_output_check_writes_nothing(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A renderer bug (a wrong dependency port) is caught before any file is written."""
    import nexus.render as stage  # the pipeline imports the render stage when it renders

    real_render = stage.render

    def buggy_render(ctx: RenderContext, meanwhile: Any = None) -> dict[str, str]:
        files = real_render(ctx, meanwhile)
        path = "services/gateway/gateway/settings.py"
        files[path] = files[path].replace("http://auth:4001", "http://auth:4999")
        ctx.digests.pop(path)  # named by these bytes, as a renderer that made them would have it
        return files

    rewrite(project, lambda d: d["services"]["auth"].update(description="changed"))
    before = tree(project / "generated")
    monkeypatch.setattr(stage, "render", buggy_render)
    with pytest.raises(
        OutputCheckError, match=r"gateway: services/gateway/gateway/settings\.py: dependency URL for auth"
    ):
        generate(project / "catalog.yaml")
    assert tree(project / "generated") == before


def test_a_run_with_nothing_changed_skips_rendering_but_not_the_tree_check(project: Path) -> None:
    again = generate(project / "catalog.yaml")
    assert again.files == {} and again.touched == [] and again.count > 0  # the fast path
    spec = project / "generated/services/auth/auth/spec.py"
    spec.write_text(spec.read_text() + "# edited\n")
    with pytest.raises(HandEditedError):  # the fast path looked at the tree and stepped aside
        generate(project / "catalog.yaml")
    with pytest.raises(DriftError):
        generate(project / "catalog.yaml", check_only=True)


def test_a_teams_own_file_is_in_the_record_so_the_next_run_has_nothing_to_do(project: Path) -> None:
    """A file a team added to its service folder is kept by every run, and the record lists it
    (by presence: its content is the team's), as the comparison found it (write.Changes.added):
    after the run that met it, a run with nothing changed does nothing, and the record answers
    for the file, as it is and whatever the team writes in it next."""
    catalog, out = project / "catalog.yaml", project / "generated"
    added = out / "services/media/NOTES.md"
    added.write_text("a team's own file\n")
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited"))
    first = generate(catalog)
    assert first.loaded is not None and "services/media/NOTES.md" not in first.touched
    assert "services/media/NOTES.md" in first.changes.added
    again = generate(catalog)
    assert again.loaded is None and again.touched == []  # the record answered: nothing loaded or rendered
    added.write_text("the team's second thoughts\n")
    assert generate(catalog).loaded is None
    assert added.read_text() == "the team's second thoughts\n"
    added.unlink()  # gone: the record no longer holds for the tree, and the run says so by running
    assert generate(catalog).loaded is not None


def test_a_teams_files_rendered_as_before_are_not_checked_again(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record keeps the teams' files as rendered (its tree names them by presence alone): after
    an edit, the files the checks take as passed (``verified``) are all those rendered as in the
    last run, the teams' among them; only the files the edit changed are checked again. With
    other code, none are."""
    from nexus import checks, pipeline

    seen: list[tuple[dict[str, str], frozenset[str]]] = []
    real = checks.check

    def check(ctx, files, *, verified=frozenset(), **kw):  # type: ignore[no-untyped-def]
        seen.append((files, verified))
        return real(ctx, files, verified=verified, **kw)

    monkeypatch.setattr(checks, "check", check)
    catalog = project / "catalog.yaml"
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited"))
    generate(catalog)
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited again"))
    generate(catalog)
    (before, _), (after, verified) = seen
    teams = {p for p in after if team_owned(p)}
    changed = {p for p in after if before.get(p) != after[p]}
    assert teams and changed and not teams <= changed
    assert set(after) - verified == changed
    assert teams - changed <= verified

    monkeypatch.setattr(pipeline, "code_key", lambda: "other code")
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited once more"))
    generate(catalog)
    assert seen[-1][1] == frozenset()


def test_the_survey_takes_the_teams_files_from_the_record_of_the_manifest_it_finds(project: Path) -> None:
    """The comparison's survey asks whose each file is only when the record cannot say: the
    record of the run that wrote the manifest on disk, by the same code, names every team's file
    by presence. Its answers are team_owned's; another manifest (edited by hand) or a record of
    other code, and team_owned is asked of every file, as before."""
    from nexus.pipeline import _Last

    catalog, out = project / "catalog.yaml", project / "generated"
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited"))
    generate(catalog)
    asked: list[str] = []

    def owned(path: str) -> bool:
        asked.append(path)
        return team_owned(path)

    last = _Last.of(catalog, out, False)
    by_record = write._survey(out, owned, last.known)
    assert asked == [] and by_record.team  # every service has files of its team's
    assert by_record.team == {p for p in by_record.recorded if team_owned(p)}
    by_code = write._survey(out, owned, write.Known(last.known.hashes, last.known.ids))
    assert len(asked) == len(by_record.recorded) and by_code.team == by_record.team
    assert by_code.hashes == by_record.hashes
    asked.clear()
    manifest = out / write.MANIFEST
    manifest.write_text(manifest.read_text().replace('"version": 1', '"version":  1'))  # the same files
    edited = write._survey(out, owned, last.known)
    assert len(asked) == len(edited.recorded) and edited.team == by_record.team


def test_the_early_worker_is_forked_before_the_renderers_load(project: Path) -> None:
    """On a large tree the comparison's worker is forked as the run starts, before the catalog's
    models, Jinja and the renderers are imported (0.2 s): its survey, which an edit waits for,
    starts that much sooner (it asks the record whose a file is; a file the record cannot
    answer for makes it import them itself). In a fresh interpreter, where nothing is
    imported yet."""
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited"))
    script = f"""
import sys
from nexus import parallel, write
from nexus.pipeline import generate
write.COMPARE_AHEAD_FROM = 1
real = parallel.ahead
def ahead(*args, **kwargs):
    print("renderers loaded at the fork:", "nexus.render.services" in sys.modules)
    return real(*args, **kwargs)
parallel.ahead = ahead
result = generate({str(project / "catalog.yaml")!r})
print("touched:", sorted(result.touched))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert "renderers loaded at the fork: False" in done.stdout
    assert "docs/services/media.md" in done.stdout  # the run went on to write, as ever


def test_a_run_below_the_sizes_that_fork_never_imports_multiprocessing(project: Path, tmp_path: Path) -> None:
    """A catalog too small for any worker (parallel: ordered_map's ``least``, the render's and
    the comparison's sizes) neither forks nor imports multiprocessing and concurrent.futures:
    6 ms of the shipped catalog's 0.29 s edit. A run with no cache, then one with, each in a
    fresh interpreter, where nothing is imported yet; both write what they should."""
    script = f"""
import sys
from nexus.pipeline import generate
result = generate({str(project / "catalog.yaml")!r})
print("touched:", len(result.touched), sorted(m for m in ("multiprocessing", "concurrent.futures") if m in sys.modules))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for run in ("no cache", "an edit"):  # each after an edit: the run renders and writes
        rewrite(project, lambda d, run=run: d["services"]["media"].update(description=f"Media, before {run}"))
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        assert re.fullmatch(r"touched: [1-9]\d* \[\]\n", done.stdout), done.stdout


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The services whose code renders (render.services.render_service), in the order they do."""
    from nexus.render import services

    names: list[str] = []
    real = services.render_service

    def counting(compiled, context):  # type: ignore[no-untyped-def]
        names.append(context["name"])
        return real(compiled, context)

    monkeypatch.setattr(services, "render_service", counting)
    return names


def test_a_one_service_edit_renders_that_service_only(project: Path, rendered: list[str]) -> None:
    """Each service's files depend on its own context only: after a description edit the next
    run renders the edited service and takes the others from the user's cache, and the tree it
    writes is byte for byte what a run without any cache writes."""
    generate(project / "catalog.yaml")  # nothing changed: the record answers, nothing renders
    assert rendered == []
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited"))
    generate(project / "catalog.yaml")
    assert rendered == ["media"]
    # an edge changes its caller's files (spec, settings); the callee renders nothing new
    rendered.clear()
    rewrite(project, lambda d: d["services"]["gateway"]["depends_on"].update(media="hard"))
    generate(project / "catalog.yaml")
    assert rendered == ["gateway"]
    fresh = render(RenderContext(*_loaded(project / "catalog.yaml"), cache=False))
    assert {p: t for p, t in fresh.items() if p.startswith("services/")} == {
        p: (project / "generated" / p).read_text(encoding="utf-8") for p in fresh if p.startswith("services/")
    }


def test_a_strict_run_leaves_the_neighbourhoods_the_next_edit_looks_views_up_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--strict renders without the neighbourhood shortcut (RenderContext.hoods) and does not
    drop what that shortcut keeps either: an edit after a strict check builds the views of the
    services it reaches only, as after any other run (it built every service's before)."""
    from nexus.render import services

    built: list[str] = []
    real = services.service_context

    def counting(ctx, name):  # type: ignore[no-untyped-def]
        built.append(name)
        return real(ctx, name)

    monkeypatch.setattr(services, "service_context", counting)
    catalog = tmp_path / "catalog.yaml"
    shutil.copy(CATALOG, catalog)
    everyone = sorted(yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["services"])
    generate(catalog)

    def edit(description: str) -> list[str]:
        data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
        data["services"]["glitch"]["description"] = description
        catalog.write_text(dump(data), encoding="utf-8")
        built.clear()
        generate(catalog)
        return sorted(built)

    after_a_run = edit("Glitch, edited")
    assert "glitch" in after_a_run and len(after_a_run) < len(everyone) / 2
    built.clear()
    generate(catalog, check_only=True, strict=True)
    assert sorted(built) == everyone  # strict: every view
    assert edit("Glitch, edited again") == after_a_run


def test_each_output_folder_keeps_its_own_render_caches(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch, rendered: list[str]
) -> None:
    """Render caches are kept per output folder (render.context.Kept's spaces): a run of another
    catalog, whose every service renders differently, leaves this one's entries, so this one's
    next edit renders the edited service only (with one folder for all, every service again); a
    new folder starts from the most recently used space (a second checkout of a catalog renders
    nothing); past SPACES the least recently used space goes."""
    from nexus import usercache
    from nexus.paths import code_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no other test's space to start from
    everyone = sorted(minimal["services"])
    other = yaml.safe_load(dump(minimal))
    other["platform"]["namespace"] = "elsewhere"  # in every service's settings
    projects = {name: tmp_path / name for name in "abcd"}
    for name, data in (("a", minimal), ("b", other), ("c", minimal), ("d", minimal)):
        projects[name].mkdir()
        (projects[name] / "catalog.yaml").write_text(dump(data), encoding="utf-8")

    def run(name: str) -> list[str]:
        rendered.clear()
        generate(projects[name] / "catalog.yaml")
        return sorted(rendered)

    assert run("a") == everyone
    assert run("b") == everyone  # nothing of a's serves b
    rewrite(projects["a"], lambda d: d["services"]["media"].update(description="Media, edited"))
    assert run("a") == ["media"]
    rewrite(projects["c"], lambda d: d["services"]["media"].update(description="Media, edited"))
    assert run("c") == []  # a new folder: a's space, the latest, answers for all of it
    monkeypatch.setattr(usercache, "SPACES", 2)
    assert run("d") == ["media"]  # from c's space, the latest: d's catalog is a's before the edit
    area = usercache.root() / "renders" / f"services-{code_key()}"
    assert {p.name for p in area.iterdir()} == {usercache.name_of(projects[n] / "generated") for n in "cd"}
    # a's space was the least recently used: gone; it starts from d's, the latest
    (projects["a"] / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")  # d's catalog
    assert run("a") == []
    assert tree(projects["a"] / "generated") == tree(projects["d"] / "generated")


def test_each_output_folder_keeps_its_own_memos(tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checks' memos (parsed documents) are kept per output folder too: another project's
    runs leave this one's space as it was, and a new folder's space, started from the most
    recently used one, keeps just the documents its own run read, as a run with no cache
    would keep them (another project's are never carried into it). Each run a process of its
    own, as from a shell."""
    from nexus import usercache, yamlread

    projects = {name: tmp_path / name for name in ("a", "b", "b-alone")}
    other = yaml.safe_load(dump(minimal))
    other["platform"]["namespace"] = "elsewhere"  # in every manifest
    for name, data in (("a", minimal), ("b", other), ("b-alone", other)):
        projects[name].mkdir()
        (projects[name] / "catalog.yaml").write_text(dump(data), encoding="utf-8")

    def space(name: str, cache: Path) -> dict[str, bytes]:
        memo = cache / "nexus" / "memos" / f"{yamlread.CACHE_NAME}-{yamlread.PARSED.version}"
        folder = memo / usercache.name_of(projects[name] / "generated")
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    def keys(shards: dict[str, bytes]) -> set[bytes]:
        return {k for payload in shards.values() for k in marshal.loads(payload.partition(b"\n")[2])}

    def run(name: str, cache: Path) -> None:
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        done = nexus("generate", "-c", str(projects[name] / "catalog.yaml"))
        assert done.returncode == 0, done.stderr

    shared, alone = tmp_path / "cache", tmp_path / "cache-alone"
    run("a", shared)
    kept = space("a", shared)
    run("b", shared)
    run("b-alone", alone)
    assert space("a", shared) == kept
    assert keys(space("b", shared)) == keys(space("b-alone", alone))
    assert keys(kept) - keys(space("b", shared))  # a's own documents, which b never read


def test_the_pages_links_memo_keeps_the_pages_of_the_last_run_alone(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run that checks asks for every page's links (the links' pass is keyed by them all),
    so the memo keeps just the pages of the tree as written: after edits it holds no page of an
    earlier version (it grew with a working copy's edits, and every run reads it whole)."""
    from nexus import usercache
    from nexus.checks import docs as docs_checks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    out = tmp_path / "generated"
    folder = (
        tmp_path / "cache" / "nexus" / "memos" / f"{docs_checks.LINKS_CACHE}-{docs_checks.LINKS.version}"
    ) / usercache.name_of(out)

    def kept() -> set[bytes]:
        return {k for p in folder.iterdir() for k in marshal.loads(p.read_bytes().partition(b"\n")[2])}

    def pages() -> set[bytes]:
        return {docs_checks.LINKS.key(p.read_text(encoding="utf-8")) for p in (out / "docs").rglob("*.md")}

    for description in ("Media", "Media, edited", "Media, edited again"):
        rewrite(tmp_path, lambda d, text=description: d["services"]["media"].update(description=text))
        done = nexus("generate", "-c", str(tmp_path / "catalog.yaml"))
        assert done.returncode == 0, done.stderr
        assert kept() == pages()


def test_an_edit_rewrites_only_the_cache_shards_it_changed(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past SHARD_FROM entries an area's rendered files are kept in shards by key: an edit
    writes the shards its new entries fall in (and those its old entries leave: the edited
    service's files, and its own and its neighbours' neighbourhoods), never the others; a shard
    torn on disk is a miss, rendered again to the same bytes."""
    from nexus import usercache
    from nexus.paths import code_key
    from nexus.render import services

    monkeypatch.setattr(usercache, "SHARD_FROM", 0)  # the minimal catalog's few entries, sharded as 10,000 would be
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, sharded"))
    generate(project / "catalog.yaml")
    area = usercache.root() / "renders" / f"services-{code_key()}" / usercache.name_of(project / "generated")
    before = {p.name: p.read_bytes() for p in area.iterdir()}
    inodes = {p.name: p.stat().st_ino for p in area.iterdir()}
    assert len(before) > 2 and "all" not in before
    written: list[Path] = []
    real_rewrite = usercache.rewrite
    monkeypatch.setattr(usercache, "rewrite", lambda path, payload: written.append(path) or real_rewrite(path, payload))
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited again"))
    generate(project / "catalog.yaml")
    after = {p.name: p.read_bytes() for p in area.iterdir()}
    changed = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
    keys = [
        {k for shard in shards.values() for k in marshal.loads(shard.partition(b"\n")[2])} for shards in (before, after)
    ]
    assert changed == {k[:2] for k in keys[0] ^ keys[1]}
    assert {p.name for p in written if p.parent == area} == changed & after.keys()
    assert all((area / n).stat().st_ino == inodes[n] for n in changed & before.keys() & after.keys())  # in place

    rendered: list[str] = []
    real_render = services.render_service
    monkeypatch.setattr(services, "render_service", lambda c, ctx: rendered.append(ctx["name"]) or real_render(c, ctx))
    torn = next(area / n for n in sorted(changed & after.keys()) if b"Media, edited again" in after[n])
    torn.write_bytes(torn.read_bytes()[:-5])
    files = tree(project / "generated")
    generate(project / "catalog.yaml", strict=True)  # trusts no record: renders, from the cache but that shard
    assert "media" in rendered and len(rendered) < len(
        yaml.safe_load((project / "catalog.yaml").read_text())["services"]
    )
    assert tree(project / "generated") == files


def test_a_few_large_entries_are_kept_in_shards_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries past SHARD_BYTES in all are sharded however few (a 10,000-service catalog's
    monitoring files: 160 blocks, 32 MB): changing one writes its shard alone. Small ones stay
    in one file, and a space that shrinks goes back to it."""
    from nexus import usercache

    area = tmp_path / "area"
    area.mkdir()
    size = usercache.SHARD_BYTES // 8 + 1
    entries: dict[str, object] = {f"{i:02x}-block": ({"file": f"{i}" * size}, {"file": "digest"}) for i in range(9)}
    assert len(entries) < usercache.SHARD_FROM
    usercache.Shards(area, str, object).save(entries)
    assert sorted(p.name for p in area.iterdir()) == sorted(k[:2] for k in entries)

    written: list[Path] = []
    real_rewrite = usercache.rewrite
    monkeypatch.setattr(usercache, "rewrite", lambda path, payload: written.append(path) or real_rewrite(path, payload))
    shards = usercache.Shards(area, str, object)
    assert shards.load() == entries
    edited = {**entries, "03-block": ({"file": "edited" * size}, {"file": "other"})}
    shards.save(edited)
    assert written == [area / "03"]
    assert usercache.Shards(area, str, object).load() == edited

    small = {k: ({"file": "x"}, {"file": "digest"}) for k in list(entries)[:3]}
    shards.save(small)
    assert [p.name for p in area.iterdir()] == ["all"]
    assert usercache.Shards(area, str, object).load() == small


def test_the_comparison_worker_runs_at_a_lower_priority_and_gives_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """parallel.ahead's ``nice``: the worker (write.Comparison's survey, wanted only once the
    files are rendered) yields the cores to the load and the render; what it makes is the same."""
    from nexus import parallel

    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)  # forked on any machine
    here = os.nice(0)
    job = parallel.ahead(lambda: os.nice(0), lambda made, payload: (made, payload), worth=True, nice=write.NICE)
    job.send(b"rest")
    assert job.result() == (min(here + write.NICE, 19), b"rest")
    assert os.nice(0) == here  # this process's own is left as it was
    plain = parallel.ahead(lambda: os.nice(0), lambda made, payload: made, worth=True)
    plain.send(b"")
    assert plain.result() == here


@pytest.mark.parametrize("forked", [True, False], ids=["in a worker", "in turn"])
def test_a_workers_later_work_comes_after_its_answer_and_close_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, forked: bool
) -> None:
    """parallel.ahead's ``later`` (write.Comparison listing the tree for the next run): the
    worker answers first and does it while this process goes on; ``close`` waits for it. In
    turn (one core), it is done before the answer."""
    from nexus import parallel

    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2 if forked else 1)
    go, done = tmp_path / "go", tmp_path / "done"

    def later(made: str, result: str) -> None:
        deadline = time.monotonic() + 10
        while forked and not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        done.write_text(f"{made} {result} " + ("after go" if go.exists() else "before go"))

    job = parallel.ahead(lambda: "made", lambda made, payload: payload.decode(), worth=True, later=later)
    job.send(b"answer")
    assert job.result() == "answer"
    go.touch()  # only now: a worker that did its later work before answering would have waited for it in vain
    job.close()
    assert done.read_text() == ("made answer after go" if forked else "made answer before go")


def test_the_comparison_ahead_is_the_one_in_turn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a large tree write.Comparison looks at the tree in a worker before the rendered files
    are known, then classifies their hashes there and reads the spare the write will take: the
    same Changes, and the same identities kept for the next run, as comparing here; the spare as
    the write would read it; a hand edit it finds still stops the run."""
    from nexus import parallel

    catalog, out = tmp_path / "catalog.yaml", tmp_path / "generated"
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    catalog.write_text(dump(data), encoding="utf-8")
    generate(catalog)
    first = next(iter(data["services"]))
    data["services"][first]["description"] = "Edited, once more"
    catalog.write_text(dump(data), encoding="utf-8")
    generate(catalog)  # the tree it replaced is the spare
    loaded = load_catalog(catalog)
    files = render(RenderContext(loaded.catalog, loaded.plan))
    recorded = _recorded(out)
    edited = "docs/README.md"
    (out / edited).write_text("edited by hand\n", encoding="utf-8")
    stale = "docs/architecture/service-map.md"
    files = {**files, stale: files[stale] + "new line\n"}
    hashed = of_files(files)

    # the local clock with no margin, not the file system's (write.clock): what was just written is
    # trusted at once, however soon each comparison looks
    monkeypatch.setattr(write, "clock", lambda out: None)
    monkeypatch.setattr(write.Known, "RACY_NS", 0)
    here_known = write.Known(*recorded)
    here = write.compare(out, files, team_owned, here_known, hashed)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    there_known = write.Known(*recorded)
    real_survey, where = write._survey, tmp_path / "surveyed-in"
    monkeypatch.setattr(write, "_survey", lambda *a: where.write_text(str(os.getpid())) and real_survey(*a))
    comparing = write.Comparison(out, team_owned, there_known, worth=True, writing=True)
    comparing.of(hashed)
    there = comparing.changes()
    comparing.close()  # the worker's later work (none: no listing here) waited for
    assert where.read_text() != str(os.getpid())  # in a worker
    spare, written = write._spare(out), here.written(files)
    full = write.scan_spare(str(spare), written, here.keep)  # as the write reads it in turn
    settled = there.spare
    assert settled is not None and settled[1:4] == full[1:4]  # the same folders made, folders and files dropped
    # settled: the kept files whose inode the spare lacks, by the tree's inodes when looked at
    assert settled.relink == [p for p in here.keep if full.have.get(p, -1) != os.lstat(out / p).st_ino]
    assert settled.have == {p: full.have[p] for p in (*written, *settled.relink, write.MANIFEST) if p in full.have}
    assert stale in settled.have and len(full.have) > 100 and settled.folders and "." in settled.folders
    there.spare = None
    assert there == here and there.hand_edited == [edited] and there.update == [stale]
    assert there_known.held == here_known.held and len(here_known.held) > 100

    monkeypatch.setattr(write, "COMPARE_AHEAD_FROM", 1)
    with pytest.raises(HandEditedError, match=re.escape(edited)):
        generate(catalog)


def _listed_tree(root: Path) -> None:
    """A small tree with one of each kind of entry a spare may hold."""
    for rel, text in {
        "top.md": "top",
        "a/kept.md": "kept",
        "a/written.md": "old",
        "a/gone.md": "not in the new tree",
        "a/b/deep.md": "deep",
        "old/x.md": "a folder the new tree lacks",
        "a/__pycache__/m.cpython-311.pyc": "a tool's folder",
        "a/stray.pyc": "a tool's file",
        write.MANIFEST: "{}",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "link").symlink_to("top.md")


SPARE_CHANGES = {
    "none": lambda spare: None,
    "a file added in a folder": lambda spare: (spare / "a/b/new.md").write_text("planted"),
    "a file replaced": lambda spare: os.replace(spare / "top.md", spare / "a/kept.md"),
    "a file removed": lambda spare: (spare / "a/b/deep.md").unlink(),
    "a folder removed": lambda spare: shutil.rmtree(spare / "old"),
    "a link made at the top": lambda spare: (spare / "new-link").symlink_to("a"),
    "a file made at the top": lambda spare: (spare / "new.md").write_text("planted"),
    "a file removed at the top": lambda spare: (spare / "top.md").unlink(),
    "a tool's folder made": lambda spare: (spare / "a/b/__pycache__").mkdir(),
    "a folder made a link": lambda spare: (shutil.rmtree(spare / "a/b"), (spare / "a/b").symlink_to("..")),
}


@pytest.mark.parametrize("change", SPARE_CHANGES)
def test_a_spare_listing_holds_only_for_the_very_tree_it_lists_and_reads_as_a_walk_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """A run lists the tree it surveyed (write.SpareListing): the next run has that tree as its
    spare and reads the listing instead of walking it. The listing holds for that tree as it
    was (renamed, as the swap moves it) and for nothing changed since: then what it says the
    spare holds against the new tree (files to drop, folders to make, kept files to link again)
    is what a walk finds, also of a tool's folder and file, a link and the manifest."""
    monkeypatch.setattr(write, "clock", lambda out: None)  # no margin: what was just made is settled
    monkeypatch.setattr(write.Known, "RACY_NS", 0)
    listed, live, file = tmp_path / "listed", tmp_path / "live", tmp_path / "cache" / "listing"
    file.parent.mkdir()
    _listed_tree(listed)
    survey = write._survey(listed, lambda p: False, write.Known())
    write.SpareListing.write(file, survey.tree, survey.live)
    # the live tree now: the files kept linked from the listed one, one written anew
    for path in ("top.md", "a/kept.md", "a/b/deep.md"):
        (live / path).parent.mkdir(parents=True, exist_ok=True)
        os.link(listed / path, live / path)
    (live / "a/written.md").write_text("new")
    spare = tmp_path / "spare"
    listed.rename(spare)  # as the swap moves it
    SPARE_CHANGES[change](spare)
    listing = write.SpareListing.read(file)
    assert listing is not None and listing.holds(str(spare)) == (change == "none")
    if change != "none":
        return
    written, keep = ["a/written.md", "a/c/new.md"], ["top.md", "a/kept.md", "a/b/deep.md"]
    os.unlink(live / "a/kept.md")  # replaced since: the spare's is no longer the tree's
    (live / "a/kept.md").write_text("kept")
    now = write._survey(live, lambda p: False, write.Known()).live
    read, walked = listing.scan(written, keep, now), write.scan_spare(str(spare), written, keep, now)
    assert read is not None
    assert read == walked._replace(drop_folders=sorted(walked.drop_folders), drop_files=sorted(walked.drop_files))
    assert read.make_folders == ["a/c"] and read.relink == ["a/kept.md"]
    assert read.drop_folders == ["a/__pycache__", "old"]
    assert read.drop_files == ["a/gone.md", "a/stray.pyc", "link"]
    # a new tree with a file in a folder the survey did not enter: the spare is walked
    assert listing.scan([*written, "a/__pycache__/new.md"], keep, now) is None


@pytest.mark.parametrize("clock", ["still", "unreadable", "moving"])
def test_a_first_spare_is_listed_only_once_the_clock_has_moved_past_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: str
) -> None:
    """A first tree's spare, just filled, is listed only with a stamp later than every change
    made to it: a clock that does not move (a coarse one) or cannot be read lists nothing, and
    an earlier listing is dropped (the next run walks the spare); a moving one lists it all."""
    out, file = tmp_path / "generated", tmp_path / "cache" / "listing"
    file.parent.mkdir()
    out.mkdir()
    write.lock_path(out).touch()
    spare = write._spare(out)
    _listed_tree(spare)
    file.write_bytes(b"an earlier listing")
    if clock == "still":
        monkeypatch.setattr(write, "clock", lambda out: write.Stamp(os.lstat(tmp_path).st_dev, 10**18))
    elif clock == "unreadable":
        monkeypatch.setattr(write, "clock", lambda out: None)
    write.SpareListing.of_first(out, file)
    listing = write.SpareListing.read(file)
    if clock != "moving":
        assert listing is None and not file.exists()
        return
    assert listing is not None and listing.holds(str(spare))
    assert listing.unentered == ["a/__pycache__"] and listing.odd == ["link"]  # a tool's folder is not entered
    assert listing.files.keys() == {
        str(p.relative_to(spare))
        for p in spare.rglob("*")
        if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts
    }


@pytest.mark.parametrize(
    "payload",
    [b"", b"not marshal", marshal.dumps((99, {}, {}, [], [])), marshal.dumps((1, [], {}, [], [])), marshal.dumps(1)],
    ids=["empty", "not marshal", "another version", "a field of another type", "not a tuple"],
)
def test_a_spare_listing_that_is_not_one_is_not_used(tmp_path: Path, payload: bytes) -> None:
    """A listing of another version or shape (an older Nexus, a torn write the CRC let by)
    reads as none: the spare is walked, never a traceback."""
    from nexus import usercache

    file = tmp_path / "listing"
    usercache.write(file, payload)
    assert usercache.read(file) == payload
    assert write.SpareListing.read(file) is None


def test_a_cache_entry_is_replaced_by_a_new_file_never_renamed_over_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """usercache.write puts a new file in place of the old: a reader that opened the old one
    reads it whole, and the new is renamed into a free name, never over the old entry (ext4
    writes a file renamed over another out at once, in the writing process: up to 0.35 s for
    a 22 MB record); an entry that cannot be written leaves the old one, or none."""
    from nexus import usercache

    entry = tmp_path / "entry"
    usercache.write(entry, b"old " * 1000)
    reader = entry.open("rb")
    renamed: list[bool] = []
    real_replace = os.replace
    monkeypatch.setattr(
        usercache.os,
        "replace",
        lambda src, dst: renamed.append(os.path.lexists(dst)) or real_replace(src, dst),
    )
    usercache.write(entry, b"new " * 1000)
    assert renamed == [False]  # the name was free when the new file took it
    assert usercache.read(entry) == b"new " * 1000
    assert reader.read().endswith(b"old " * 1000)
    reader.close()
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no temporary file left

    monkeypatch.setattr(usercache.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(28, "No space")))
    usercache.write(entry, b"newer")  # a cache that cannot be written is only a slower next run
    assert usercache.read(entry) is None and [p.name for p in tmp_path.iterdir()] == []


def test_the_record_is_written_over_in_place_and_a_torn_one_is_no_record(project: Path) -> None:
    """Each run writes its record over the last one's file, in place (usercache.rewrite: the very
    file, no new one allocated); one torn (a reader meanwhile, a writer killed midway) is refused
    by its CRC, and the next run does without it, then writes a whole one. What is not a file of
    its own (a link, a second name) is not written through: a new file takes its name."""
    from nexus import usercache

    folder = usercache.folder("generate")
    assert folder is not None
    record = folder / usercache.name_of(project / "generated")  # this output folder's (pipeline._Last)
    inode = record.stat().st_ino
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited"))
    generate(project / "catalog.yaml")
    assert record.stat().st_ino == inode and usercache.read(record) is not None
    longer = usercache.read(record)
    assert longer is not None
    usercache.rewrite(record, b"short")  # a shorter entry: the rest of the old one cut off
    assert usercache.read(record) == b"short" and record.stat().st_ino == inode

    usercache.rewrite(record, longer)
    data = bytearray(record.read_bytes())
    data[len(data) // 2] ^= 0xFF  # torn
    record.write_bytes(bytes(data))
    assert usercache.read(record) is None
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, edited again"))
    first = generate(project / "catalog.yaml")
    assert first.touched and usercache.read(record) is not None
    assert generate(project / "catalog.yaml").loaded is None  # the record holds again: nothing to do

    shared = record.with_name("second-name")
    os.link(record, shared)  # written over, it would change the other name's bytes too
    before = shared.read_bytes()
    usercache.rewrite(record, b"new")
    assert usercache.read(record) == b"new" and shared.read_bytes() == before
    target = record.with_name("elsewhere")
    target.write_bytes(b"not the cache's")
    record.unlink()
    record.symlink_to(target)
    usercache.rewrite(record, b"newer")
    assert target.read_bytes() == b"not the cache's" and not record.is_symlink()


def test_what_a_writer_killed_mid_write_left_in_the_cache_is_removed_by_a_later_write(tmp_path: Path) -> None:
    """A process killed between writing a cache entry's temporary file and renaming it leaves
    that file; the next process to write in that folder removes it once it is stale, and
    never a fresh one (another writer's, about to be renamed) or a file not of its making."""
    from nexus import usercache

    folder = tmp_path / "space"
    folder.mkdir()
    code = "import sys; from pathlib import Path; from nexus import usercache\n"
    killed_at_rename(code + "usercache.write(Path(sys.argv[1]), b'x' * (1 << 20))", str(folder / "00"))
    (left,) = folder.iterdir()  # the temporary file, written whole, never renamed
    assert left.name.startswith(".00.") and left.stat().st_size > 1 << 20
    fresh = folder / ".01.another-writer.tmp"
    fresh.write_bytes(b"being written")
    theirs = folder / ".notes.tmp.keep"
    theirs.write_bytes(b"not a cache temporary")
    age_past_stale(left, theirs)
    usercache.write(folder / "02", b"entry")
    assert sorted(p.name for p in folder.iterdir()) == sorted(["02", fresh.name, theirs.name])
    assert usercache.read(folder / "02") == b"entry"


def _recorded(out: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    """Every file's hash and identity now, as a run's record would hold them."""
    manifest = json.loads((out / write.MANIFEST).read_text())["files"]
    ids = {p: write.Known.identity(os.lstat(out / p)) for p in manifest}
    return manifest, ids


def test_the_checks_memos_of_old_layouts_and_versions_are_removed(project: Path) -> None:
    """Each memo was once one file at the cache folder's top, under its name, then one folder
    under memos/ for every version of the code; each version has a folder of its own now (a
    code change leaves the old entries unread). The old files (220 MB at 10,000 services) and
    folders are removed when met, and of the versions only the three last written are kept.
    A file of another name is left alone."""
    from nexus import usercache
    from nexus.checks import MEMOS

    top = usercache.root()
    (top / "memos").mkdir(parents=True, exist_ok=True)
    old = [top / name for _, name in MEMOS]
    for path in old:
        path.write_bytes(b"an entry of the old layout")
    (top / "not-a-memo").write_bytes(b"kept")
    unversioned = top / "memos" / MEMOS[0][1]
    unversioned.mkdir()
    (unversioned / "all").write_bytes(b"entries of every version in one folder")
    stale = [top / "memos" / f"{MEMOS[0][1]}-{n:016x}" for n in range(4)]
    for age, folder in enumerate(stale):
        folder.mkdir()
        os.utime(folder, (1_000_000 + age, 1_000_000 + age))
    rewrite(project, lambda d: d["services"]["media"].update(description="Media, after the old layout"))
    generate(project / "catalog.yaml")
    assert not [p for p in old if p.exists()] and not unversioned.exists()
    assert (top / "not-a-memo").read_bytes() == b"kept"
    assert all((top / "memos" / f"{name}-{memo.version}").is_dir() for memo, name in MEMOS)
    assert [f.exists() for f in stale] == [False, False, True, True]  # this run's and the two newest before it


def _loaded(path: Path):  # type: ignore[no-untyped-def]
    loaded = load_catalog(path)
    return loaded.catalog, loaded.plan


def test_tool_caches_left_in_the_templates_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mypy, ruff, pytest and Python leave caches in the runtime and the service template when
    someone works on them; none of it is a template: the render is the same, byte for byte."""
    import shutil

    from nexus import paths
    from nexus.render import services

    runtime, template = tmp_path / "runtime", tmp_path / "service"
    shutil.copytree(services.RUNTIME, runtime, ignore=shutil.ignore_patterns(*paths.TOOL_CACHES, "*.pyc"))
    shutil.copytree(services.SERVICE_TEMPLATE, template, ignore=shutil.ignore_patterns(*paths.TOOL_CACHES, "*.pyc"))
    monkeypatch.setattr(services, "RUNTIME", runtime)
    monkeypatch.setattr(services, "SERVICE_TEMPLATE", template)
    clean = (services._runtime(), services._template_files())
    for root in (runtime / "nexus_runtime", template / "{{cookiecutter.name}}"):
        for cache in (".mypy_cache/3.11", "__pycache__", ".ruff_cache/0.6", ".pytest_cache/v", "x.egg-info"):
            (root / cache).mkdir(parents=True)
            (root / cache / "entry.json").write_bytes(b"\xff\xfe not UTF-8 {{ nor a template")
        (root / "module.cpython-311.pyc").write_bytes(b"\xa7\r\r\n")
    assert (services._runtime(), services._template_files()) == clean
    assert not any(paths.tool_folder(part) for p in paths.source_files(tmp_path) for part in p.parts)


def test_an_edit_renders_and_checks_only_the_manifests_that_see_it(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service's Kubernetes, mesh and Backstage files are kept by what their template is given
    (its own view, the platform's settings), the CRDs by the mesh files: an edit renders the files
    of the services it touches, schema-checks only documents whose text is new, and checks against
    the catalog only the services whose file or entry changed."""
    from nexus.checks import k8s as k8s_checks
    from nexus.checks.kubernetes_schema import SchemaValidator
    from nexus.render.context import RenderContext as Context

    minimal["platform"]["mesh"] = "istio"
    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    generate(tmp_path / "catalog.yaml")
    rendered: list[tuple[str, str | None]] = []
    validated: list[str] = []
    checked: list[str] = []
    real_check = k8s_checks._check_service
    real_render, real_problems = Context._render, SchemaValidator.problems

    def counting(self, name, service, variables):  # type: ignore[no-untyped-def]
        if name.endswith("/service.yaml.j2") or name.startswith(("k8s/crds", "ecosystem/component")):
            rendered.append((name, service))
        elif name == "mesh/docs/access-team.md.j2":
            rendered.append((name, variables["team"]["name"]))
        return real_render(self, name, service, variables)

    def checking(self, doc, limit=5):  # type: ignore[no-untyped-def]
        validated.append(f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}")
        return real_problems(self, doc, limit)

    def checking_service(ctx, name, path, text, ports):  # type: ignore[no-untyped-def]
        checked.append(name)
        return real_check(ctx, name, path, text, ports)

    monkeypatch.setattr(Context, "_render", counting)
    monkeypatch.setattr(k8s_checks, "_check_service", checking_service)
    monkeypatch.setattr(SchemaValidator, "problems", checking)
    rewrite(tmp_path, lambda d: d["services"]["auth"].update(description="Auth, edited"))
    generate(tmp_path / "catalog.yaml")
    # its description is an annotation and in its Backstage descriptor; no mesh file (nor the
    # team's access page) shows it
    assert sorted(rendered) == [("ecosystem/component.yaml.j2", "auth"), ("k8s/service.yaml.j2", "auth")]
    assert validated and all(v.split("/")[1].startswith("auth") for v in validated), validated
    assert checked == ["auth"]
    # an edge less: the caller's and the callee's files (egress, callers, policies), nobody else's
    rendered.clear()
    checked.clear()
    rewrite(tmp_path, lambda d: d["services"]["media"].update(depends_on={}))
    generate(tmp_path / "catalog.yaml")
    assert sorted(rendered) == [
        ("ecosystem/component.yaml.j2", "media"),  # its dependencies are listed; the callee's are not
        ("k8s/service.yaml.j2", "auth"),
        ("k8s/service.yaml.j2", "media"),
        *sorted({("mesh/docs/access-team.md.j2", minimal["services"][n]["team"]) for n in ("auth", "media")}),
        ("mesh/istio/service.yaml.j2", "auth"),
        ("mesh/istio/service.yaml.j2", "media"),
    ]
    assert checked == ["auth", "media"]  # its entry changed; the callee's file (its ingress) did
    monkeypatch.undo()
    fresh = render(RenderContext(*_loaded(tmp_path / "catalog.yaml"), cache=False))
    ours = sorted(p for p in fresh if not team_owned(p))
    assert [fresh[p] for p in ours] == [(tmp_path / "generated" / p).read_text(encoding="utf-8") for p in ours]


def test_an_edit_schema_checks_only_the_mesh_documents_of_files_it_changed(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mesh file whose exact bytes passed every check before (by the run's own record) is not
    validated against its CRDs again, even when the cache of documents that passed is gone;
    the files an edit changes are."""
    from nexus import usercache
    from nexus.checks import mesh as mesh_checks

    minimal["platform"]["mesh"] = "istio"
    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    generate(tmp_path / "catalog.yaml")
    validated: list[str] = []
    real = mesh_checks.crd_schema.errors

    def checking(doc):  # type: ignore[no-untyped-def]
        validated.append(f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}")
        return real(doc)

    monkeypatch.setattr(mesh_checks.crd_schema, "errors", checking)
    folder = usercache.folder()
    assert folder is not None
    shutil.rmtree(folder / "passes")  # nothing says which documents passed: only the record's tree
    rewrite(tmp_path, lambda d: d["services"]["media"].update(depends_on={}))
    generate(tmp_path / "catalog.yaml")
    assert validated and {v.split("/")[1] for v in validated} <= {"auth", "media"}, validated
    validated.clear()
    generate(tmp_path / "catalog.yaml", strict=True)  # --strict trusts no record: every document
    assert {v.split("/")[1] for v in validated} > {"auth", "media"}


def test_an_edit_that_leaves_the_names_and_ports_checks_no_monitor_again(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitoring check reads every service's ServiceMonitor and alerts, and of the catalog
    the services' names and ports alone: a description edit does not run it (nor read the two
    files), a port edit does, and a broken monitor is still caught."""
    from nexus.checks import mesh as mesh_checks
    from nexus.errors import OutputCheckError
    from nexus.render import mesh as render_mesh

    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    generate(tmp_path / "catalog.yaml")
    ran: list[int] = []
    real = mesh_checks._monitoring

    def counting(ctx, files, docs):  # type: ignore[no-untyped-def]
        ran.append(len(docs))
        return real(ctx, files, docs)

    monkeypatch.setattr(mesh_checks, "_monitoring", counting)
    rewrite(tmp_path, lambda d: d["services"]["media"].update(description="Media, described again"))
    generate(tmp_path / "catalog.yaml")
    assert ran == []
    rewrite(tmp_path, lambda d: d["services"]["media"].update(port=d["services"]["media"]["port"] + 7))
    generate(tmp_path / "catalog.yaml")
    assert len(ran) == 1 and ran[0] > 0
    real_render = render_mesh.render_monitoring

    def without_media_monitor(ctx):  # type: ignore[no-untyped-def]
        out = real_render(ctx)
        assert '  name: "media"\n' in out[render_mesh.MONITORS]
        out[render_mesh.MONITORS] = out[render_mesh.MONITORS].replace('  name: "media"\n', '  name: "media-gone"\n')
        return out

    monkeypatch.setattr(render_mesh, "render_monitoring", without_media_monitor)
    rewrite(tmp_path, lambda d: d["services"]["media"].update(description="Media, unmonitored"))
    with pytest.raises(OutputCheckError, match=r"no ServiceMonitor selecting app\.kubernetes\.io/name=media"):
        generate(tmp_path / "catalog.yaml")


def test_a_description_edit_runs_no_mesh_check_and_no_kubernetes_check_across_files(
    tmp_path: Path, minimal: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No check across files reads a service's description (its own files show it, and their
    bytes are in the keys): an edit of one leaves the mesh checks' key and the Kubernetes checks
    across files' key as they were, and neither runs again; a port edit runs both."""
    from nexus.checks import k8s as k8s_checks
    from nexus.checks import mesh as mesh_checks

    minimal["platform"]["mesh"] = "istio"
    (tmp_path / "catalog.yaml").write_text(dump(minimal), encoding="utf-8")
    generate(tmp_path / "catalog.yaml")
    ran: list[str] = []
    real_mesh, real_complete = mesh_checks._run, k8s_checks._complete
    monkeypatch.setattr(mesh_checks, "_run", lambda *a, **k: ran.append("mesh") or real_mesh(*a, **k))
    monkeypatch.setattr(k8s_checks, "_complete", lambda *a: ran.append("k8s across") or real_complete(*a))
    rewrite(tmp_path, lambda d: d["services"]["media"].update(description="Media, described again"))
    assert "services/media/README.md" in generate(tmp_path / "catalog.yaml").touched
    assert ran == []
    # a port no other test gives it: the keys are by content, and the user's cache is the session's
    rewrite(tmp_path, lambda d: d["services"]["media"].update(port=d["services"]["media"]["port"] + 13))
    generate(tmp_path / "catalog.yaml")
    assert sorted(ran) == ["k8s across", "mesh"]


RENDERING_STAGES = [
    "read the last run's record",
    "load and validate the catalog",
    "import the renderers and checks",
    "render",
    "hash the rendered files",
    "check, and compare with the tree",
    "write",
    "record this run",
]


def test_timings_name_the_stages_a_run_went_through_in_order(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--timings`' figures: each stage the run went through once, in the pipeline's order, as far
    as a failing run got; the CPU of the workers beside this process is counted in the stage that
    waited for them."""
    import nexus.render
    from nexus.errors import CatalogError
    from nexus.timings import Timings

    nothing = Timings()
    generate(project / "catalog.yaml", timings=nothing)
    assert [s.name for s in nothing.stages] == ["read the last run's record", "compare the tree with the record"]

    # a worker renders beside this process, as on a catalog of 1,000 services
    monkeypatch.setattr(nexus.render, "PARALLEL_FROM", 1)
    rewrite(project, lambda d: d["services"]["auth"].update(description="Auth, timed"))
    edit = Timings()
    generate(project / "catalog.yaml", timings=edit)
    assert [s.name for s in edit.stages] == RENDERING_STAGES
    assert all(min(s.wall, s.cpu, s.workers) >= 0 for s in edit.stages)
    by_name = {s.name: s for s in edit.stages}
    assert by_name["render"].workers > 0  # the worker's own CPU, from the kernel's accounting
    *rows, between, total = edit.rows()
    assert [r[0] for r in rows] == RENDERING_STAGES and between[0] == "between the stages" and total[0] == "total"
    # the total is the whole run's, timed around the stages: they and what ran between them add up to it
    assert total[1:] == pytest.approx([sum(r[i] for r in [*rows, between]) for i in (1, 2, 3)])
    assert edit.run is not None and total[1] >= sum(s.wall for s in edit.stages)

    (project / "catalog.yaml").write_text("services: [\n", encoding="utf-8")
    failed = Timings()
    with pytest.raises(CatalogError):
        generate(project / "catalog.yaml", timings=failed)
    assert [s.name for s in failed.stages] == RENDERING_STAGES[:2]


def test_a_run_gives_the_cycle_collector_back_as_it_found_it(project: Path) -> None:
    """generate() pauses Python's cycle collector while it runs (what it builds lives until it
    ends) and turns it back on when it returns or raises; a caller that had it off keeps it off."""
    import gc

    from nexus.errors import CatalogError

    assert gc.isenabled()
    generate(project / "catalog.yaml")
    assert gc.isenabled()
    (project / "catalog.yaml").write_text("services: [\n", encoding="utf-8")
    with pytest.raises(CatalogError):
        generate(project / "catalog.yaml")
    assert gc.isenabled()
    gc.disable()
    try:
        with pytest.raises(CatalogError):
            generate(project / "catalog.yaml")
        assert not gc.isenabled()
    finally:
        gc.enable()
