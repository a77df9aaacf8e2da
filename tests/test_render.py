"""The render stage as a whole: areas shared between this process and a worker give the same
files, and the same first error, as rendering them in turn."""

from __future__ import annotations

import copy
import json
import os
import re
import time
from typing import Any

import pytest
import yaml
from conftest import CATALOG, synthetic
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nexus import parallel
from nexus import render as render_stage
from nexus.catalog import load_catalog, load_catalog_text
from nexus.errors import CatalogError, TemplateError
from nexus.render import RenderContext, render, text
from nexus.render import events as render_events


@pytest.fixture
def in_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every catalog counts as large, on a machine of two cores: the areas are shared with a fork."""
    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 1)
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)


def _ctx() -> RenderContext:
    loaded = load_catalog(CATALOG)
    return RenderContext(loaded.catalog, loaded.plan)


def _failing(message: str) -> Any:
    def area(ctx: RenderContext) -> dict[str, str]:
        raise TemplateError(message)

    return area


def _with_areas(monkeypatch: pytest.MonkeyPatch, first: tuple[Any, ...] = (), last: tuple[Any, ...] = ()) -> None:
    """Areas added before and after the real ones, in the order they are taken and reported."""
    for name in ("AREAS", "LONGEST_FIRST"):
        monkeypatch.setattr(render_stage, name, (*first, *getattr(render_stage, name), *last))


def test_areas_shared_with_a_worker_give_the_same_files(in_a_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    parallel_files = render(_ctx())
    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 10**9)
    serial_files = render(_ctx())
    assert list(parallel_files) == list(serial_files) and parallel_files == serial_files

    # and both processes really rendered: each area says which one, in a file of its own (each
    # slowed a little, so the worker has begun before this process could take every area)
    def noting(area: Any) -> Any:
        def noted(ctx: RenderContext) -> dict[str, str]:
            time.sleep(0.2)
            return {**area(ctx), f"rendered-by/{area.__module__}": str(os.getpid())}

        return noted

    wrapped = {a: noting(a) for a in render_stage.AREAS}
    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 1)
    monkeypatch.setattr(render_stage, "AREAS", tuple(wrapped[a] for a in render_stage.AREAS))
    monkeypatch.setattr(render_stage, "LONGEST_FIRST", tuple(wrapped[a] for a in render_stage.LONGEST_FIRST))
    files = render(_ctx())
    by = {files.pop(p) for p in [p for p in files if p.startswith("rendered-by/")]}
    assert str(os.getpid()) in by and len(by) == 2
    assert files == serial_files


def test_an_error_in_an_area_is_raised_here_whoever_rendered_it(
    in_a_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _failing("templates/docs/README.md.j2:3: 'x' is undefined")
    _with_areas(monkeypatch, last=(broken,))
    with pytest.raises(TemplateError, match=re.escape("README.md.j2:3: 'x' is undefined")):
        render(_ctx())


def test_two_areas_that_render_one_path_are_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every path has one area that renders it: a second area rendering an existing path (here
    two of the docs' pages) stops the render with the first such path, rather than one area's
    file silently replacing the other's."""

    def clashing(ctx: RenderContext) -> dict[str, str]:
        return {"docs/services/README.md": "", "docs/README.md": "", "zz-own/file.md": ""}

    _with_areas(monkeypatch, last=(clashing,))
    with pytest.raises(TemplateError, match=r"^two areas render the same file docs/README\.md$"):
        render(_ctx())


def test_the_first_area_in_order_names_the_error(in_a_worker: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two areas fail, the later one at once and the first after a while (by then the other
    process has taken the later one): the first in the order areas are taken is the one
    reported, as in turn; the worker is waited for all the same."""

    def slow(ctx: RenderContext) -> dict[str, str]:
        time.sleep(0.3)
        raise TemplateError("first")

    _with_areas(monkeypatch, first=(slow,), last=(_failing("later"),))
    with pytest.raises(TemplateError, match=r"^first$"):
        render(_ctx())
    monkeypatch.setattr(render_stage, "PARALLEL_FROM", 10**9)
    with pytest.raises(TemplateError, match=r"^first$"):
        render(_ctx())


def test_what_a_killed_worker_took_is_done_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel.shared: a worker killed (the kernel's out-of-memory killer) loses nothing: the
    tasks it took run in this process, and the results are those of a run in turn."""
    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    here = os.getpid()

    def task(n: int) -> Any:
        def run() -> int:
            time.sleep(0.05)
            if os.getpid() != here:
                os._exit(9)  # the worker dies with whatever it took
            return n * n

        return run

    assert parallel.shared([task(n) for n in range(6)], worth=True) == [n * n for n in range(6)]


def test_the_work_meanwhile_runs_here_once_while_the_worker_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel.shared's ``meanwhile`` (the pipeline reads the checks' memos there): run once, in
    this process, when it has no task left and while the worker still runs its own; the results
    are as ever. Its error is raised after the tasks', and a task's error comes first. In turn
    (not worth a fork), it runs after the tasks."""
    import multiprocessing

    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)
    here = os.getpid()
    both = multiprocessing.get_context("fork").Barrier(2, timeout=20)  # each process has taken one
    worker_done = multiprocessing.get_context("fork").Value("d", 0.0)

    def task(n: int) -> Any:
        def run() -> int:
            both.wait()
            if os.getpid() != here:
                time.sleep(0.5)  # the worker's task ends last
                worker_done.value = time.monotonic()
            return n * n

        return run

    ran: list[tuple[int, float]] = []
    results = parallel.shared(
        [task(0), task(1)], worth=True, meanwhile=lambda: ran.append((os.getpid(), time.monotonic()))
    )
    assert results == [0, 1] and len(ran) == 1 and ran[0][0] == here
    assert ran[0][1] < worker_done.value  # while the worker was still at its task

    def failing() -> None:
        raise OSError("meanwhile failed")

    with pytest.raises(OSError, match="meanwhile failed"):
        parallel.shared([lambda: 1, lambda: 2], worth=True, meanwhile=failing)

    def task_fails() -> int:
        raise TemplateError("the task's")

    with pytest.raises(TemplateError, match="the task's"):
        parallel.shared([task_fails, lambda: 2], worth=True, meanwhile=failing)
    order: list[str] = []
    in_turn = parallel.shared(
        [lambda: order.append("task") or 1, lambda: order.append("task") or 2],
        worth=False,
        meanwhile=lambda: order.append("meanwhile"),
    )
    assert in_turn == [1, 2] and order == ["task", "task", "meanwhile"]


def test_without_the_systems_semaphores_the_tasks_run_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """parallel.shared needs a counter both processes see (a semaphore-guarded shared value),
    and a pool's queues need semaphores too: where the system has none (some sandboxes), the
    work runs here, with the same results, never a traceback."""
    import multiprocessing

    monkeypatch.setattr(parallel.os, "cpu_count", lambda: 2)

    here = os.getpid()
    # as multiprocessing says it, by the system: sem_open failing, or missing altogether
    for missing in (OSError(38, "Function not implemented"), ImportError("no working sem_open")):

        class NoSemaphores:
            def Value(self, *args: object, error: Exception = missing) -> None:  # multiprocessing's name
                raise error

        monkeypatch.setattr(multiprocessing, "get_context", lambda method: NoSemaphores())
        tasks = [lambda n=n: (n, os.getpid()) for n in range(4)]
        assert parallel.shared(tasks, worth=True) == [(n, here) for n in range(4)]

        # the pool's own queues: parallel.beside runs its work here then, when asked
        def no_pool(workers: int, error: Exception = missing) -> None:
            raise error

        monkeypatch.setattr(parallel, "_pool", no_pool)
        assert parallel.beside(os.getpid, worth=True)() == here


def test_render_names_the_digests_its_caches_know_and_only_of_the_very_texts(
    in_a_worker: None, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The render caches keep each file's SHA-256 beside it; render() tells them (ctx.digests) for
    the texts a cache handed out or was given, in this process and in the worker beside it, so
    that digest.of_files hashes only the others. A text an area changed afterwards is a new text:
    it is not named by the old one's digest."""
    from nexus.digest import of_files, of_text
    from nexus.render import k8s
    from nexus.render.context import Kept

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    target = "k8s/base/services/auth-service.yaml"
    loaded = load_catalog(CATALOG)
    for _ in ("cold: every entry put", "warm: every entry read back"):
        ctx = RenderContext(loaded.catalog, loaded.plan, cache=True)
        files = render(ctx)
        assert ctx.digests.keys() <= files.keys()
        assert all(ctx.digests[p] == of_text(files[p]) for p in ctx.digests)
        assert {p.split("/")[0] for p in ctx.digests} >= {"services", "k8s", "docs"}  # here and beside
        assert of_files(files, ctx.digests) == of_files(files)

    def edited(ctx: RenderContext) -> dict[str, str]:
        out = k8s.render(ctx)
        return {p: t + "# edited\n" if p == target else t for p, t in out.items()}

    for name in ("AREAS", "LONGEST_FIRST"):
        areas = getattr(render_stage, name)
        monkeypatch.setattr(render_stage, name, tuple(edited if a is k8s.render else a for a in areas))
    ctx = RenderContext(loaded.catalog, loaded.plan, cache=True)
    files = render(ctx)
    assert files[target].endswith("# edited\n") and target not in ctx.digests
    assert "k8s/base/services/backend-api.yaml" in ctx.digests  # the area's other files still are
    assert of_files(files, ctx.digests) == of_files(files)

    # an entry without its digests (the layout before them) is a miss, never a file without one;
    # so is an entry marshalled on its own inside its shard (the layout before that)
    import marshal

    assert Kept({"k": {"a.yaml": "a: 1\n"}}, hashed={}).get("k") is None
    assert Kept({"k": ({"a.yaml": "a: 1\n"}, {})}, hashed={}).get("k") is None
    assert Kept({"k": marshal.dumps(({"a.yaml": "a: 1\n"}, {"a.yaml": "0" * 64}))}, hashed={}).get("k") is None
    assert Kept({"k": ({"a.yaml": "a: 1\n"}, {"a.yaml": "0" * 64})}, hashed={}).get("k") == {"a.yaml": "a: 1\n"}
    # a neighbourhood's key names a kept entry, or nothing
    assert Kept({"n": "k", "k": ({}, {})}).aka("n") == "k"
    assert Kept({"n": b"k", "k": ({}, {})}).aka("n") is None and Kept({"n": "gone"}).aka("n") is None


def test_the_monitoring_files_joined_from_kept_blocks_are_named_without_hashing_them(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The monitoring files over every service are their blocks' texts joined (render.mesh): their
    names are kept by the blocks they are made of (Kept.made), so a run that takes every block
    from the cache names them without hashing them, and keys the CRDs by names, not texts. A
    block that changes makes its files' names be worked out again, and right."""
    from nexus import digest
    from nexus.render import mesh

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    loaded = load_catalog(CATALOG)
    joined = set(mesh.OVER_SERVICES)
    hashed: list[str] = []
    of_bytes = digest.of_bytes
    monkeypatch.setattr(digest, "of_bytes", lambda b: hashed.append(b.decode()) or of_bytes(b))

    def named(cat: Any, plan: Any) -> tuple[dict[str, str], dict[str, str]]:
        ctx = RenderContext(cat, plan, cache=True)
        files = mesh.render(ctx)
        return files, ctx.known_digests(files)

    files, names = named(loaded.catalog, loaded.plan)  # cold: every block rendered
    assert joined <= files.keys() and joined <= names.keys()
    assert {p: of_bytes(files[p].encode()) for p in joined} == {p: names[p] for p in joined}
    hashed.clear()
    again, names = named(loaded.catalog, loaded.plan)  # warm: every block and name from the cache
    assert again == files and {p: names[p] for p in joined} == {p: of_bytes(files[p].encode()) for p in joined}
    assert hashed and not any(text == files[p] for text in hashed for p in joined)  # the mesh's own are

    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    data["services"][_NAMES[0]]["port"] += 500  # the first block's rows change
    edited = load_catalog_text(yaml.safe_dump(data, sort_keys=False))
    changed, names = named(edited.catalog, edited.plan)
    assert any(changed[p] != files[p] for p in joined)
    assert {p: names[p] for p in joined} == {p: of_bytes(changed[p].encode()) for p in joined}


# -- a service's views found by its neighbourhood ---------------------------------------------------

_SHIPPED = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
_NAMES = sorted(_SHIPPED["services"])


def _edit(data: dict[str, Any], kind: str, name: str, other: str) -> None:
    """One edit of the kinds a team makes to a catalog, to service ``name`` (``other``: a second
    service, where the edit needs one)."""
    svc = data["services"][name]
    if kind == "description":
        svc["description"] = f"{svc['description']}, revised"
    elif kind == "port":
        svc["port"] += 500
    elif kind == "team":
        svc["team"] = next(t for t in data["teams"] if t != svc["team"])
    elif kind == "drop-dependency":
        svc["depends_on"] = dict(list(svc.get("depends_on", {}).items())[1:])
    elif kind == "add-dependency":
        svc.setdefault("depends_on", {})[other] = "soft"
    elif kind == "traffic":
        svc["traffic"] = {"timeout": "7s", "retries": 1}
    elif kind == "autoscaling":
        svc["autoscaling"] = {"min_replicas": 3, "max_replicas": 7, "cpu_percent": 60}
    elif kind == "uses":
        svc["uses"] = svc.get("uses", [])[1:]
    elif kind == "websocket":
        svc["websocket"] = not svc.get("websocket", False)
    elif kind == "platform":
        data["platform"]["version"] = "1.0.1"
    elif kind == "flow-port":  # a hop of the longest critical path: every page of the path shows its port,
        # also the pages of hops that neither call it nor are called by it
        flow = max(data["flows"].values(), key=lambda f: len(f["hops"]))
        data["services"][flow["hops"][2]]["port"] += 500
    elif kind == "stage-title":  # every page of the stage's services names it
        data["stages"][-1]["title"] = f"{data['stages'][-1]['title']}, renamed"
    elif kind == "flow":  # a critical path cut short: its new last hop calls no one next
        flow = next(f for f in data["flows"].values() if len(f["hops"]) > 2)
        flow["hops"] = flow["hops"][:2]


EDITS = (
    "description",
    "port",
    "team",
    "drop-dependency",
    "add-dependency",
    "traffic",
    "autoscaling",
    "uses",
    "websocket",
    "platform",
    "flow-port",
    "stage-title",
    "flow",
)


@pytest.mark.parametrize("kind", EDITS)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(_NAMES), other=st.sampled_from(_NAMES))
def test_a_neighbourhood_unchanged_gives_the_same_views(kind: str, name: str, other: str) -> None:
    """A run finds each service's kept files by its neighbourhood (RenderContext.hood) without
    building its views: after any edit, what it renders is byte for byte what a run that keeps
    nothing renders. The shipped catalog is rendered once with its neighbourhoods (its entries
    and their keys kept in the user's cache), then edited and rendered again both ways."""
    render(RenderContext(*_plan(_SHIPPED), cache=True, hoods=True))
    data = copy.deepcopy(_SHIPPED)
    _edit(data, kind, name, other)
    try:
        catalog, plan = _plan(data)
    except CatalogError:
        assume(False)  # an edit the catalog's rules refuse (a flow hop that is no edge, a cycle)
        return
    kept = render(RenderContext(catalog, plan, cache=True, hoods=True))
    assert kept == render(RenderContext(catalog, plan, cache=False))


def test_neighbourhoods_are_off_unless_asked_and_for_the_gateway() -> None:
    loaded = load_catalog(CATALOG)
    ctx = RenderContext(loaded.catalog, loaded.plan, cache=True, hoods=True)
    assert RenderContext(loaded.catalog, loaded.plan, cache=True).hood("auth-service") is None
    assert ctx.hood("auth-service") is not None and ctx.hood(loaded.catalog.platform.gateway) is None


def _plan(data: dict[str, Any]) -> tuple[Any, Any]:
    loaded = load_catalog_text(yaml.safe_dump(data, sort_keys=False))
    return loaded.catalog, loaded.plan


_json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_data)
def test_a_json_document_is_what_pythons_encoder_writes(data: Any) -> None:
    """text.json_document (orjson) writes the bytes of json.dumps(indent=2, sort_keys=True,
    ensure_ascii=False): any text, whole numbers past 64 bits, floats (left to Python's)."""
    assert text.json_document(data) == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_every_json_document_of_a_catalog_with_events_is_what_pythons_encoder_writes() -> None:
    for source in (CATALOG.read_text(encoding="utf-8"), synthetic(300, channels=60)):
        loaded = load_catalog_text(source)
        ctx = RenderContext(loaded.catalog, loaded.plan)
        files = {**render_events.render(ctx), **render_events.render_docs(ctx)}
        assert len(files) > 10
        for path, written in files.items():
            assert written == json.dumps(json.loads(written), indent=2, sort_keys=True, ensure_ascii=False) + "\n", path
