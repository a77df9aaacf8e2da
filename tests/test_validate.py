"""Validate stage: the schema pass and the graph pass, one broken catalog per rule."""

from __future__ import annotations

import gc
import itertools
import re
import subprocess
import sys

import pytest
from broken import CASES, GRAPH, SCHEMA, Case, add_service, at, rename, svc
from conftest import CATALOG, ROOT, dump, synthetic

import nexus.catalog
from nexus import collector
from nexus.catalog import load_catalog, load_catalog_text
from nexus.catalog.load import load_text
from nexus.catalog.validate import validate
from nexus.errors import CatalogError, Problem


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(CatalogError) as info:
        load_catalog_text(text, "catalog.yaml")
    return info.value.problems


def test_minimal_catalog_is_valid(minimal):
    loaded = load_catalog_text(dump(minimal))
    assert set(loaded.catalog.services) == {"gateway", "auth", "media"}


def test_shipped_catalog_is_valid():
    loaded = load_catalog(CATALOG)
    assert len(loaded.catalog.services) == 43


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_rule_is_reported_where_it_is_broken(case: Case):
    text = case.text()
    problems = problems_of(text)
    # exactly the expected problems: a rule must not drag false errors in with it
    assert len(problems) == case.count, "\n".join(map(str, problems))
    matching = [p for p in problems if p.path == case.path]
    assert matching, f"no problem at {case.path}: {[str(p) for p in problems]}"
    problem = matching[0]
    assert f"{problem.file}:{problem.line}:{problem.column}" == case.where(text)
    assert re.search(case.message, problem.message), problem.message
    # the printed form is what a person reads: file:line:col, key path, message
    assert str(problem) == f"{case.where(text)}: {case.path}: {problem.message}"


def test_error_text_carries_location_and_path(minimal):
    svc(minimal, "auth")["port"] = 80
    text = dump(minimal)
    where = at(text, "\n  auth:\n", "port: ", "80")
    with pytest.raises(CatalogError, match=rf"{re.escape(where)}: services\.auth\.port: port 80 is outside"):
        load_catalog_text(text, "catalog.yaml")


def test_catalog_error_is_a_value_error(minimal):
    svc(minimal, "auth")["port"] = 80
    with pytest.raises(ValueError):
        load_catalog_text(dump(minimal))


# -- names --------------------------------------------------------------------------------------


def test_name_of_63_characters_is_valid(minimal):
    rename(minimal, "media", "m" * 63)
    assert "m" * 63 in load_catalog_text(dump(minimal)).catalog.services


@pytest.mark.parametrize(
    "name", ["a", "a-b", "a--b", "x9", "on", "yes", "null", "svc-1abc", "nexus-cos", "testing", "json-api"]
)
def test_dns_1035_labels_are_valid_service_names(minimal, name):
    rename(minimal, "media", name)
    assert name in load_catalog_text(dump(minimal)).catalog.services


@pytest.mark.parametrize(
    "name",
    ["../x", "x/y", "a.b", "Media", "media-", "-media", "me dia", "média", "m" * 64, "m" * 100, "0", "3d", "9-lives"],
)
def test_non_dns_1035_labels_are_rejected(minimal, name):
    add_service(minimal, name, 4010)
    problems = problems_of(dump(minimal))
    assert [p.path for p in problems] == [f"services.{name}"]
    assert re.search(r"DNS-1035|DNS label is at most 63", problems[0].message)


def test_a_misnamed_service_is_one_mistake_however_often_it_is_named(minimal):
    # media is in a stage, a flow and the gateway's depends_on: the name is reported once, at its key
    rename(minimal, "media", "3d-media")
    text = dump(minimal)
    (problem,) = problems_of(text)
    assert problem.path == "services.3d-media"
    assert f"{problem.file}:{problem.line}:{problem.column}" == at(text, "\nservices:", "\n  3d-media:", "3d-media")


def test_teams_and_stages_may_still_start_with_a_digit(minimal):
    # only services and infrastructure become Kubernetes Services (DNS-1035); a team is a label value
    minimal["teams"]["2nd-line"] = minimal["teams"].pop("core")
    for s in minimal["services"].values():
        s["team"] = "2nd-line"
    assert "2nd-line" in load_catalog_text(dump(minimal)).catalog.teams


def test_a_service_named_like_a_pydantic_tag_keeps_its_path(minimal):
    # pydantic tags union branches with 'str'; a service of that name must not vanish from paths
    rename(minimal, "media", "str")
    svc(minimal, "str")["port"] = 80
    assert [p.path for p in problems_of(dump(minimal))] == ["services.str.port"]


def test_huge_wrong_value_is_shown_briefly(minimal):
    svc(minimal, "auth")["description"] = [["x" * 100] * 100] * 100
    (problem,) = problems_of(dump(minimal))
    assert problem.path == "services.auth.description"
    assert len(problem.message) < 300


# -- graph rules needing more than one edit -----------------------------------------------------


def test_soft_dependency_on_later_stage_is_allowed(minimal):
    # the gateway-routes case of the spec: a request-time call may point at a later stage
    add_service(minimal, "late", 4010)
    svc(minimal, "auth")["depends_on"] = {"late": "soft"}
    load_catalog_text(dump(minimal))


def test_hard_dependency_within_the_same_stage_is_allowed(minimal):
    add_service(minimal, "store", 4010)
    svc(minimal, "media")["depends_on"]["store"] = "hard"
    load_catalog_text(dump(minimal))


def _cycle_in(message: str) -> list[str]:
    found = re.search(r"dependency cycle: (.*?) \(", message)
    assert found, message
    return found.group(1).split(" -> ")


def test_two_service_cycle_is_printed_whole(minimal):
    svc(minimal, "auth")["depends_on"] = {"media": "soft"}
    text = dump(minimal)
    (problem,) = problems_of(text)
    cycle = _cycle_in(problem.message)
    assert cycle[0] == cycle[-1] and set(cycle) == {"auth", "media"} and len(cycle) == 3
    assert re.search(r"\((soft, hard|hard, soft)\)", problem.message)
    # it points at one edge of the cycle, as a key under depends_on
    source, target = cycle[0], cycle[1]
    assert problem.path == f"services.{source}.depends_on.{target}"
    assert f"{problem.file}:{problem.line}:{problem.column}" == at(text, f"\n  {source}:\n", "depends_on:", target)


def test_longer_cycle_is_printed_whole(minimal):
    add_service(minimal, "x", 4010, depends_on={"y": "hard"})
    add_service(minimal, "y", 4011, depends_on={"z": "hard"})
    add_service(minimal, "z", 4012, depends_on={"x": "soft"})
    (problem,) = problems_of(dump(minimal))
    cycle = _cycle_in(problem.message)
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["x", "y", "z"]
    edges = {("x", "y"), ("y", "z"), ("z", "x")}
    assert set(itertools.pairwise(cycle)) == edges  # each arrow is a declared edge, in its direction


def test_independent_cycles_are_each_reported(minimal):
    add_service(minimal, "a", 4010, depends_on={"b": "soft"})
    add_service(minimal, "b", 4011, depends_on={"a": "soft"})
    add_service(minimal, "c", 4012, depends_on={"d": "soft"})
    add_service(minimal, "d", 4013, depends_on={"c": "soft"})
    cycles = [set(_cycle_in(p.message)) for p in problems_of(dump(minimal))]
    assert sorted(map(sorted, cycles)) == [["a", "b"], ["c", "d"]]


def test_duplicate_service_names_are_rejected(minimal):
    text = dump(minimal)
    # a second 'auth' entry, as a copy-paste would leave it: YAML itself would keep only the last
    second = "  auth:\n    port: 4009\n    category: platform\n    team: core\n    description: Again\n"
    text = text.replace("  media:\n", second + "  media:\n", 1)
    (problem,) = problems_of(text)
    assert problem.path == "services.auth"
    assert f"{problem.file}:{problem.line}:{problem.column}" == at(text, "description: Auth", "\n  auth:", "auth")
    first_line = at(text, "\n  auth:\n", "auth").split(":")[1]
    assert re.search(rf"duplicate key 'auth' \(first defined at line {first_line}\)", problem.message)


# -- all errors in one run ----------------------------------------------------------------------


def _apply(cases: list[Case], ids: list[str], data: dict) -> None:
    for case in cases:
        if case.id in ids:
            case.mutate(data)


@pytest.mark.parametrize(
    ("table", "ids"),
    [
        (SCHEMA, ["port-below-1024", "unknown-key-platform", "contact-not-email", "edge-kind", "name-upper-case"]),
        (
            GRAPH,
            [
                "duplicate-port",
                "unknown-team",
                "unknown-dependency",
                "hop-not-a-dependency",
                "unknown-stage",
                "unknown-external",
            ],
        ),
    ],
    ids=["schema", "graph"],
)
def test_all_independent_errors_are_reported_in_one_run(minimal, table, ids):
    _apply(table, ids, minimal)
    text = dump(minimal)
    problems = problems_of(text)
    expected = {c.path: c for c in table if c.id in ids}
    assert sorted(p.path for p in problems) == sorted(expected)
    for p in problems:
        assert re.search(expected[p.path].message, p.message)
    # sorted by position, so the list reads top to bottom like the file
    assert [(p.line, p.column) for p in problems] == sorted((p.line, p.column) for p in problems)


def test_schema_and_graph_errors_are_reported_together(minimal):
    svc(minimal, "auth")["port"] = 80  # schema
    svc(minimal, "media")["team"] = "nobody"  # graph
    # auth failed the schema, yet the references to it (gateway, media, the login flow, its
    # stage) are not reported as unknown: one run, and only the real problems
    assert sorted(p.path for p in problems_of(dump(minimal))) == ["services.auth.port", "services.media.team"]


def test_a_platform_level_schema_error_still_stops_before_the_graph_pass(minimal):
    minimal["platform"]["gateway"] = "Not A Name"
    svc(minimal, "media")["team"] = "nobody"
    assert [p.path for p in problems_of(dump(minimal))] == ["platform.gateway"]


def test_no_file_position_without_source(minimal):
    # the graph pass also works on a Catalog built in Python, without positions
    from nexus.catalog.models import Catalog
    from nexus.catalog.validate import check_graph

    svc(minimal, "auth")["team"] = "nobody"
    problems = check_graph(Catalog.model_validate(minimal))
    assert [(p.line, p.path) for p in problems] == [(0, "services.auth.team")]


# -- one source for each naming rule ------------------------------------------------------------


def test_the_runtime_names_cover_what_the_runtime_and_the_service_tests_install():
    """naming.RUNTIME_DISTRIBUTIONS holds every distribution the runtime and the services' tests
    pull in, as this environment resolves them: a new dependency fails here until it is listed."""
    import importlib.metadata as metadata
    import tomllib

    from packaging.requirements import Requirement

    from nexus.catalog import naming
    from nexus.render.services import RUNTIME, SERVICE_TEMPLATE

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    runtime = tomllib.loads((RUNTIME / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    service = (SERVICE_TEMPLATE / "{{cookiecutter.name}}" / "pyproject.toml").read_text(encoding="utf-8")
    tests = re.search(r"^test = \[(.*)\]$", service, re.M).group(1)
    todo = [Requirement(r).name for r in runtime] + [Requirement(r.strip(' "')).name for r in tests.split(",")]
    seen: set[str] = set()
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.distribution(name).requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    assert seen - set(naming.RUNTIME_DISTRIBUTIONS) == set()
    imports = metadata.packages_distributions()
    provided = {top for top, dists in imports.items() if {norm(d) for d in dists} & seen and not top.startswith("__")}
    listed = {i for names in naming.RUNTIME_DISTRIBUTIONS.values() for i in names}
    assert provided - listed == set()


def test_the_catalog_and_the_runtime_allow_the_same_retries(monkeypatch):
    """One bound in two packages that may not import each other: the catalog's edges and the
    runtime's RETRIES setting. A catalog could otherwise ask for retries every service refuses
    at start-up, or the runtime allow what no catalog can say."""
    from typing import get_args

    from nexus.catalog import models
    from nexus.render.services import RUNTIME

    monkeypatch.syspath_prepend(str(RUNTIME))
    from nexus_runtime.settings import Retries

    (ours,), (theirs,) = (get_args(t)[1:] for t in (models.Retries, Retries))
    assert ours.metadata == theirs.metadata and str(models.MAX_RETRIES) in repr(theirs.metadata)


def test_the_catalog_and_the_runtime_name_the_same_header_and_live_path(monkeypatch):
    """The runtime sets and passes on the client key in a header, and serves WebSocket on a
    path; Istio's rules hash on the header (session_affinity) and route the path with no
    timeout, as the catalog's naming names them. Two copies each, held equal."""
    from nexus.catalog import naming
    from nexus.render.services import RUNTIME

    monkeypatch.syspath_prepend(str(RUNTIME))
    from nexus_runtime.live import PATH, RELAY
    from nexus_runtime.tracing import CLIENT_HEADER

    ours = (naming.CLIENT_HEADER, naming.LIVE_PATH, naming.LIVE_RELAY + "{service}")
    assert ours == (CLIENT_HEADER, PATH, RELAY)


def test_the_service_template_modules_are_the_template_s_own():
    from nexus.catalog import naming
    from nexus.render.services import SERVICE_TEMPLATE

    root = SERVICE_TEMPLATE / "{{cookiecutter.name}}"
    found = {p.name for p in root.iterdir() if p.is_dir() and "{{" not in p.name}
    found |= {p.stem for p in (root / "tests").glob("*.py")}
    assert set(naming.SERVICE_TEMPLATE_MODULES) == found


def _written(data: dict, mesh: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(kind, name) of every object the k8s and mesh areas write for ``data`` with ``mesh``, and
    every one naming.claims knows of, kinds spelled as naming spells them."""
    import yaml

    from nexus.catalog import naming
    from nexus.render import k8s as render_k8s
    from nexus.render import mesh as render_mesh
    from nexus.render.context import RenderContext

    data = {**data, "platform": {**data["platform"], "mesh": mesh}}
    loaded = load_catalog_text(dump(data))
    ctx = RenderContext(loaded.catalog, loaded.plan)
    files = {**render_k8s.render(ctx), **render_mesh.render(ctx)}
    groups = {"security.istio.io": "Istio", "networking.istio.io": "Istio", "policy.linkerd.io": "Linkerd"}
    written = set()
    for path, text in files.items():
        if not path.startswith("k8s/") or path.endswith(("-patch.yaml", "kustomization.yaml")):
            continue  # patches name what they patch; kustomizations are not objects
        for doc in yaml.safe_load_all(text):
            # Namespace: one, named by the platform; CustomResourceDefinition: named
            # <plural>.<group>, a dotted name no catalog name (a DNS label) can take
            if doc and doc["kind"] not in {"Namespace", "CustomResourceDefinition"}:
                group = groups.get(doc["apiVersion"].split("/")[0])
                written.add((f"{doc['kind']} ({group})" if group else doc["kind"], doc["metadata"]["name"]))
    return written, {(kind, name) for kinds, name, _ in naming.claims(loaded.catalog) for kind in kinds}


def test_every_object_the_generator_writes_is_claimed_by_its_name(minimal):
    """naming.claims lists every (kind, name) the manifests hold: an object a template adds
    under a name validation does not know of fails here, and so does a stale entry."""
    from nexus.catalog import naming

    svc(minimal, "media")["depends_on"]["auth"] = {
        "kind": "hard",
        "max_connections": 7,
    }  # an edge's own DestinationRule
    everything = set()
    for mesh in ("istio", "linkerd"):
        written, claimed = _written(minimal, mesh)
        assert written - claimed == set(), mesh
        everything |= written
    assert {(kind, name) for kind, name, _ in naming.FIXED_OBJECTS} - everything == set()
    assert ("DestinationRule (Istio)", "auth-from-media") in everything


def test_two_names_of_one_package_are_caught_by_the_generic_rule():
    # DNS-1035 already refuses '1abc' (pkg would make it svc_1abc); the clash rule still holds
    # by itself for any two names pkg() maps together, e.g. in a Catalog built in Python
    from types import SimpleNamespace

    from nexus.catalog import naming

    cat = SimpleNamespace(
        services={n: SimpleNamespace(depends_on={}) for n in ("1abc", "svc-1abc")}, infrastructure={}, externals={}
    )
    found = [(earlier[2], later[2], kind) for earlier, later, kind in naming.clashes(cat)]
    pair = (("services", "1abc"), ("services", "svc-1abc"))
    assert found == [(*pair, "Python package"), (*pair, "environment variable")]  # svc_1abc, SVC_1ABC_URL


def test_no_runtime_setting_reads_a_variable_a_dependency_would_set():
    # a dependency D is read from D_URL (naming.url_variable); no setting of the runtime may end
    # in _url, or a service named after it would set that setting
    import importlib
    import sys

    from nexus.render.services import RUNTIME

    sys.path.insert(0, str(RUNTIME))
    try:
        settings = importlib.import_module("nexus_runtime.settings")
    finally:
        sys.path.remove(str(RUNTIME))
    assert [f for f in settings.ServiceSettings.model_fields if f.upper().endswith("_URL")] == []


def test_loading_pauses_the_cycle_collector_and_gives_it_back(monkeypatch):
    """What loading builds lives on: the collector never runs while a catalog loads (at 10,000
    services each full pass walked all of it again), and is back as the caller had it, after a
    catalog that loads and after one that does not."""
    text = synthetic(2000)
    started: list[int] = []

    def note(phase: str, info: dict) -> None:
        if phase == "start":
            started.append(info["generation"])

    during: list[int] = []  # the collections begun by the time validation ends, inside the load

    def validating(src):
        cat = validate(src)
        during.append(len(started))
        return cat

    monkeypatch.setattr(nexus.catalog, "validate", validating)
    gc.callbacks.append(note)
    try:
        validate(load_text(text))  # the same work with the collector on: it runs, so the check below can fail
        assert started
        started.clear()
        loaded = load_catalog_text(text)
        assert during == [0] and gc.isenabled()
        assert len(loaded.catalog.services) > 2000
        with pytest.raises(CatalogError):
            load_catalog_text("services: [\n")
        assert gc.isenabled()
        gc.disable()
        try:
            load_catalog_text(text)
            assert not gc.isenabled()
            with collector.paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        finally:
            gc.enable()
    finally:
        gc.callbacks.remove(note)


def test_a_command_freezes_the_catalog_it_loaded(tmp_path):
    """A command's process keeps its catalog until it ends: `nexus` freezes it once loaded, so
    the collector's later passes skip it (a long-lived process, `nexus up`, keeps it too)."""
    code = (
        "import gc, sys; from pathlib import Path; from nexus import cli; "
        "before = gc.get_freeze_count(); cli._load(Path(sys.argv[1])); "
        "print(before, gc.get_freeze_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(CATALOG)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    before, after = map(int, out.stdout.split())
    assert before == 0 and after > 10_000
