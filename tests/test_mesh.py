"""The mesh area: both meshes rendered for the shipped catalog and consistent with its edges,
switching meshes touching only mesh files and the clients' retries, the consistency checks
firing, the CRD schemas strict, and the per-edge traffic settings declared and validated."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, dump
from tools import broken_at_random

from nexus import yamlread
from nexus.catalog import load_catalog, load_catalog_text
from nexus.checks import crd_schema
from nexus.checks import mesh as mesh_checks
from nexus.errors import CatalogError
from nexus.pipeline import generate
from nexus.render import RenderContext, render

MESHES = ("istio", "linkerd", "none")


def shipped_with(mesh: str) -> str:
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    data["platform"]["mesh"] = mesh
    return dump(data)


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped catalog generated three times, once per mesh, each through every check."""
    out = {}
    for mesh in MESHES:
        root = tmp_path_factory.mktemp(mesh)
        (root / "catalog.yaml").write_text(shipped_with(mesh), encoding="utf-8")
        generate(root / "catalog.yaml")
        out[mesh] = root / "generated"
    return out


def rendered(text: str) -> tuple[RenderContext, dict[str, str]]:
    loaded = load_catalog_text(text)
    ctx = RenderContext(loaded.catalog, loaded.plan)
    return ctx, render(ctx)


@pytest.fixture(scope="module")
def istio() -> tuple[RenderContext, dict[str, str]]:
    return rendered(shipped_with("istio"))


@pytest.fixture(scope="module")
def linkerd() -> tuple[RenderContext, dict[str, str]]:
    return rendered(shipped_with("linkerd"))


def docs_of(files: dict[str, str], prefix: str) -> list[dict[str, Any]]:
    return [
        d
        for p, t in sorted(files.items())
        if p.startswith(prefix) and p.endswith(".yaml")
        for d in yaml.safe_load_all(t)
        if d
    ]


# -- both meshes, for the shipped catalog ------------------------------------------------------


def test_the_shipped_catalog_names_a_mesh_and_its_tree_is_committed() -> None:
    cat = load_catalog(CATALOG).catalog
    assert cat.platform.mesh == "istio"
    assert (CATALOG.parent / "generated/k8s/components/istio/kustomization.yaml").is_file()


def test_each_mesh_renders_and_passes_the_checks(trees: dict[str, Path]) -> None:
    names = {m: {p.name for p in (trees[m] / "k8s/components").iterdir()} for m in MESHES}
    assert names == {"istio": {"monitoring", "istio"}, "linkerd": {"monitoring", "linkerd"}, "none": {"monitoring"}}
    for mesh in MESHES:
        overlay = yaml.safe_load((trees[mesh] / "k8s/overlays/prod/kustomization.yaml").read_text())
        assert overlay["components"] == ["../../components/monitoring"] + (
            [f"../../components/{mesh}"] if mesh != "none" else []
        )


def _differences(a: Path, b: Path) -> set[str]:
    out: set[str] = set()

    def walk(cmp: filecmp.dircmp[str], rel: str) -> None:
        out.update(f"{rel}{n}" for n in cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files)
        for name, sub in cmp.subdirs.items():
            walk(sub, f"{rel}{name}/")

    walk(filecmp.dircmp(a, b, ignore=[]), "")
    return out


MESH_FILES = re.compile(
    r"^(k8s/components/(istio|linkerd)(/.*)?|k8s/overlays/\w+/kustomization\.yaml"
    r"|docs/architecture/(mesh|access-matrix|access/[a-z0-9-]+)\.md"
    # the mesh's CRDs, not monitoring's
    r"|k8s/crds/(kustomization|[a-z]+\.((networking|security)\.istio|policy\.linkerd)\.io)\.yaml"
    r"|services/[^/]+/[^/]+/settings\.py|services/[^/]+/README\.md|\.nexus-manifest\.json)$"
)


@pytest.mark.parametrize(("a", "b"), [("istio", "linkerd"), ("istio", "none"), ("linkerd", "none")])
def test_switching_the_mesh_changes_only_mesh_files_and_client_retries(trees: dict[str, Path], a: str, b: str) -> None:
    changed = _differences(trees[a], trees[b])
    assert changed, "the trees should differ"
    assert {p for p in changed if not MESH_FILES.match(p)} == set()
    for path in (p for p in changed if p.endswith("settings.py")):
        left, right = ((trees[m] / path).read_text().splitlines() for m in (a, b))
        assert [(x, y) for x, y in zip(left, right, strict=False) if x != y] and all(
            x.startswith("    retries: Retries = ") for x, y in zip(left, right, strict=False) if x != y
        )
    retries = {m: (trees[m] / "services/kei-ai/kei_ai/settings.py").read_text() for m in (a, b)}
    for mesh, text in retries.items():
        assert ("    retries: Retries = 0\n" in text) == (mesh != "none")


def test_the_service_readme_says_which_layer_retries(trees: dict[str, Path]) -> None:
    assert "The service mesh (istio)" in (trees["istio"] / "services/token-mgr/README.md").read_text()
    assert "The service mesh (linkerd)" in (trees["linkerd"] / "services/token-mgr/README.md").read_text()
    assert (
        "The dependency clients (`nexus_runtime.clients`): idempotent calls, 2 times"
        in (trees["none"] / "services/token-mgr/README.md").read_text()
    )


# -- authorization equals the edges ------------------------------------------------------------


def _admitted_istio(files: dict[str, str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in docs_of(files, "k8s/components/istio/"):
        target = (((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}).get("app.kubernetes.io/name")
        if d["kind"] == "AuthorizationPolicy" and target:
            out[target] = {
                p for r in d["spec"].get("rules") or [] for f in r["from"] for p in f["source"]["principals"]
            }
    return out


def test_istio_admits_exactly_each_services_dependents(istio: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = istio
    admitted = _admitted_istio(files)
    for name in ctx.catalog.services:
        want = {f"cluster.local/ns/nexus-cos/sa/{d}" for d in ctx.dependents[name]}
        if name == "backend-api":
            want.add("cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account")
        assert admitted[name] == want, name
    # only the gateway is called by no service: outside traffic (the ingress gateway) is all it admits
    assert admitted["backend-api"] == {"cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"}
    mesh = yaml.safe_load_all(files["k8s/components/istio/mesh.yaml"])
    peer = next(d for d in mesh if d["kind"] == "PeerAuthentication")
    assert peer["spec"] == {"mtls": {"mode": "STRICT"}} and "selector" not in peer["spec"]


def test_linkerd_admits_exactly_each_services_dependents(linkerd: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = linkerd
    docs = docs_of(files, "k8s/components/linkerd/")
    authn = {d["metadata"]["name"]: set(d["spec"]["identities"]) for d in docs if d["kind"] == "MeshTLSAuthentication"}
    by_server = {
        d["spec"]["targetRef"]["name"]: authn[d["spec"]["requiredAuthenticationRefs"][0]["name"]]
        for d in docs
        if d["kind"] == "AuthorizationPolicy" and d["spec"]["targetRef"]["kind"] == "Server"
    }
    for name in ctx.catalog.services:
        want = {f"{d}.nexus-cos.serviceaccount.identity.linkerd.cluster.local" for d in ctx.dependents[name]}
        if name == "backend-api":
            want.add("ingress-nginx.ingress-nginx.serviceaccount.identity.linkerd.cluster.local")
        assert by_server.get(name, set()) == want, name
    servers = {d["metadata"]["name"] for d in docs if d["kind"] == "Server"}
    assert servers == set(ctx.catalog.services) | set(ctx.catalog.infrastructure)


def _break(files: dict[str, str], path: str, old: str, new: str) -> dict[str, str]:
    assert old in files[path], f"{old!r} not in {path}"
    return {**files, path: files[path].replace(old, new, 1)}


ISTIO = "k8s/components/istio/services/{}.yaml"
LINKERD = "k8s/components/linkerd/services/{}.yaml"


@pytest.mark.parametrize(
    ("mesh", "path", "old", "new", "expected"),
    [
        (
            "istio",
            ISTIO.format("kei-ai"),
            '              - "cluster.local/ns/nexus-cos/sa/metatwin"\n',
            "",
            "kei-ai: cluster.local/ns/nexus-cos/sa/metatwin is a caller in the catalog "
            "but the istio policy does not admit it",
        ),
        (
            "istio",
            ISTIO.format("pv-keys"),
            '"cluster.local/ns/nexus-cos/sa/key-service"',
            '"cluster.local/ns/nexus-cos/sa/glitch"',
            "pv-keys: the istio policy admits cluster.local/ns/nexus-cos/sa/glitch, which is not a caller",
        ),
        (
            "istio",
            ISTIO.format("pv-keys"),
            '              - "3081"',
            '              - "3082"',
            "a rule must name principals and only pv-keys's port 3081",
        ),
        (
            "istio",
            ISTIO.format("kei-ai"),
            'timeout: "10s"',
            'timeout: "2s"',
            "kei-ai: GET from ai-service gets (timeout, retries) ('2s', 1), the catalog says ('10s', 1)",
        ),
        (
            "istio",
            ISTIO.format("kei-ai"),
            "mode: ISTIO_MUTUAL",
            "mode: DISABLE",
            "trafficPolicy.tls.mode must be ISTIO_MUTUAL",
        ),
        (
            "istio",
            "k8s/components/istio/mesh.yaml",
            "mode: STRICT",
            "mode: PERMISSIVE",
            "no namespace-wide PeerAuthentication with mtls STRICT",
        ),
        (
            "istio",
            "services/token-mgr/token_mgr/settings.py",
            "retries: Retries = 0",
            "retries: Retries = 2",
            "token-mgr: the mesh (istio) retries, so the client must not",
        ),
        (
            "linkerd",
            LINKERD.format("pv-keys"),
            '"key-service.nexus-cos.',
            '"glitch.nexus-cos.',
            "pv-keys: the linkerd policy admits glitch.nexus-cos.serviceaccount.identity.linkerd.cluster.local",
        ),
        (
            "linkerd",
            LINKERD.format("pv-keys"),
            "accessPolicy: deny",
            "accessPolicy: all-unauthenticated",
            "must select app.kubernetes.io/name=pv-keys and deny by default",
        ),
        (
            "linkerd",
            "k8s/components/linkerd/services-patch.yaml",
            'timeout.linkerd.io/request: "10s"',
            'timeout.linkerd.io/request: "1s"',
            "kei-ai: calls from ai-service get (timeout, retries) ('1s', 1)",
        ),
        (
            "linkerd",
            "k8s/components/linkerd/mesh.yaml",
            '"prometheus-k8s.monitoring.',
            '"default.monitoring.',
            "a namespace-wide policy may only admit Prometheus",
        ),
    ],
)
def test_each_mesh_check_fires_and_names_the_file(
    mesh: str, path: str, old: str, new: str, expected: str, request: pytest.FixtureRequest
) -> None:
    ctx, files = request.getfixturevalue(mesh)
    assert mesh_checks.run(ctx, files) == []
    failures = mesh_checks.run(ctx, _break(files, path, old, new))
    hits = [f for f in failures if expected in f]
    assert hits, failures
    assert all(h.startswith((path.split("/services/")[0], path)) for h in hits), hits


@pytest.mark.parametrize("least", [yamlread.LARGE_FROM, 0], ids=["whole", "by job"])
def test_a_scrape_job_off_the_catalog_is_a_failure_read_whole_or_by_job(
    istio: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch, least: int
) -> None:
    """The local Prometheus configuration scrapes each service at its catalog port: read whole
    (the shipped one is small) or a job at a time (yamlread.large, as at 10,000 services), a
    job's target moved is named."""
    ctx, files = istio
    monkeypatch.setattr(yamlread, "LARGE_FROM", least)
    monkeypatch.setattr(yamlread, "LARGE", yamlread.Memo(yamlread.plain, salt=b"test"))
    assert mesh_checks.run(ctx, files) == []
    assert bool(yamlread.LARGE.entries) == (least == 0)
    failures = mesh_checks.run(ctx, _break(files, SCRAPES, '"127.0.0.1:3081"', '"127.0.0.1:3082"'))
    assert failures == [f"{SCRAPES}: pv-keys: scrapes ['127.0.0.1:3082'], not ['127.0.0.1:3081']"]


SCRAPES = "observability/prometheus.yml"


@pytest.mark.parametrize("area", ["k8s", "mesh"])
def test_a_pass_kept_under_other_code_is_not_trusted(
    istio: tuple[RenderContext, dict[str, str]], monkeypatch: pytest.MonkeyPatch, area: str
) -> None:
    """A kept pass of the Kubernetes and of the mesh checks is keyed by all of Nexus's code and
    templates (paths.code_key), not by their own modules alone: they call into the documents'
    and YAML readers, and a change there (same catalog, same files) runs them again."""
    from nexus.checks import k8s as k8s_checks
    from nexus.checks.kubernetes_schema import SchemaValidator

    checks = {"k8s": k8s_checks, "mesh": mesh_checks}[area]
    ctx, files = istio
    validator = SchemaValidator()
    assert checks.run(ctx, files, validator=validator) == []
    ran: list[int] = []
    real = checks._run
    monkeypatch.setattr(checks, "_run", lambda *a, **k: ran.append(1) or real(*a, **k))
    assert checks.run(ctx, files, validator=validator) == [] and ran == []  # kept
    monkeypatch.setattr(checks, "code_key", lambda: "checks/documents.py edited")
    mesh_checks._code_hash.cache_clear()
    try:
        assert checks.run(ctx, files, validator=validator) == [] and ran == [1]
    finally:
        monkeypatch.undo()
        mesh_checks._code_hash.cache_clear()  # the real code's again for the tests after this one


def test_an_overlay_without_the_mesh_component_is_a_failure(istio: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = istio
    broken = _break(files, "k8s/overlays/prod/kustomization.yaml", '  - "../../components/istio"\n', "")
    assert any(
        f.startswith("k8s/overlays/prod/kustomization.yaml: platform: includes components")
        for f in mesh_checks.run(ctx, broken)
    )


# -- CRD schemas -------------------------------------------------------------------------------


def test_every_mesh_object_has_a_strict_schema_and_passes(
    istio: tuple[RenderContext, dict[str, str]], linkerd: tuple[RenderContext, dict[str, str]]
) -> None:
    kinds = set()
    for files in (istio[1], linkerd[1]):
        for d in docs_of(files, "k8s/components/"):
            if "istio.io/" in d["apiVersion"] or "linkerd.io/" in d["apiVersion"]:
                kinds.add((d["apiVersion"], d["kind"]))
                assert crd_schema.errors(d) == [], (d["kind"], d["metadata"]["name"])
    assert {k for _, k in kinds} == {
        "AuthorizationPolicy",
        "PeerAuthentication",
        "Sidecar",
        "DestinationRule",
        "VirtualService",
        "ServiceEntry",
        "Server",
        "MeshTLSAuthentication",
    }


@pytest.mark.parametrize(
    ("mesh", "path", "old", "new", "expected"),
    [
        (
            "istio",
            ISTIO.format("kei-ai"),
            "consecutive5xxErrors:",
            "consecutive5xxError:",
            "'consecutive5xxError' was unexpected",
        ),
        (
            "istio",
            ISTIO.format("kei-ai"),
            "      retries:\n        attempts: 1",
            "      retry:\n        attempts: 1",
            "'retry' was unexpected",
        ),
        ("istio", ISTIO.format("kei-ai"), "  action: ALLOW", "  action: PERMIT", '"PERMIT" is not one of'),
        (
            "istio",
            ISTIO.format("kei-ai"),
            "outboundTrafficPolicy:",
            "outboundTraficPolicy:",
            "'outboundTraficPolicy' was unexpected",
        ),
        ("linkerd", LINKERD.format("kei-ai"), "proxyProtocol:", "proxyProtocl:", "'proxyProtocl' was unexpected"),
        (
            "linkerd",
            LINKERD.format("kei-ai"),
            "requiredAuthenticationRefs:",
            "requiredAuthenticationRef:",
            '"requiredAuthenticationRefs" is a required property',
        ),
        ("linkerd", LINKERD.format("kei-ai"), "  identities:\n", "  identity:\n", "'identity' was unexpected"),
    ],
)
def test_a_misspelled_field_fails_its_crd_schema(
    mesh: str, path: str, old: str, new: str, expected: str, request: pytest.FixtureRequest
) -> None:
    ctx, files = request.getfixturevalue(mesh)
    failures = mesh_checks.run(ctx, _break(files, path, old, new))
    assert any(f.startswith(f"{path}: ") and expected in f for f in failures), failures


# -- traffic settings in the catalog ----------------------------------------------------------


def test_edge_beats_service_beats_platform(minimal: dict[str, Any]) -> None:
    minimal["platform"]["traffic"] = {"timeout": "3s", "retries": 3}
    minimal["services"]["gateway"]["traffic"] = {"timeout": "4s", "max_connections": 7}
    minimal["services"]["gateway"]["depends_on"] = {"auth": {"kind": "hard", "timeout": "500ms"}, "media": "soft"}
    cat = load_catalog_text(dump(minimal)).catalog
    assert cat.traffic_for("gateway", "auth").model_dump() == {
        "timeout": "500ms",
        "retries": 3,
        "consecutive_5xx": 5,
        "ejection_time": "30s",
        "max_connections": 7,
        "max_pending": 100,
    }
    assert cat.traffic_for("gateway", "media").timeout == "4s"
    assert cat.traffic_for("media", "auth").timeout == "3s"
    assert cat.services["gateway"].depends_on["media"].kind == "soft"  # the shorthand still reads


def test_an_edge_that_sets_no_traffic_of_its_own_takes_the_platforms(minimal: dict[str, Any]) -> None:
    """An edge given by its kind alone, by a mapping of its kind, or with a setting left empty
    (null), of a service that sets none either, has the platform's settings: the one object
    (Catalog.traffic_for looks through neither layer then)."""
    minimal["platform"]["traffic"] = {"timeout": "3s", "retries": 3}
    edges = {"auth": {"kind": "hard"}, "media": {"kind": "soft", "timeout": None}}
    minimal["services"]["gateway"]["depends_on"] = edges
    cat = load_catalog_text(dump(minimal)).catalog
    assert cat.traffic_for("gateway", "auth") is cat.platform.traffic
    assert cat.traffic_for("gateway", "media") == cat.platform.traffic
    assert cat.traffic_for("media", "auth") is cat.platform.traffic  # `auth: hard`
    assert cat.traffic_for("gateway", "media").timeout == "3s"


def test_per_edge_settings_reach_istio_per_caller(minimal: dict[str, Any]) -> None:
    minimal["platform"]["mesh"] = "istio"
    minimal["services"]["gateway"]["depends_on"]["auth"] = {
        "kind": "hard",
        "timeout": "500ms",
        "retries": 0,
        "max_pending": 9,
    }
    ctx, files = rendered(dump(minimal))
    assert mesh_checks.run(ctx, files) == []
    docs = yaml.safe_load_all(files["k8s/components/istio/services/auth.yaml"])
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    routes = by_kind["VirtualService"][0]["spec"]["http"]
    assert [r["name"] for r in routes] == ["from-gateway-idempotent", "from-gateway", "default-idempotent", "default"]
    assert routes[0]["timeout"] == "500ms" and routes[0]["retries"] == {"attempts": 0}
    assert routes[2]["retries"]["attempts"] == 2 and routes[3]["retries"] == {"attempts": 0}
    rules = {d["metadata"]["name"]: d["spec"] for d in by_kind["DestinationRule"]}
    assert rules["auth-from-gateway"]["workloadSelector"] == {"matchLabels": {"app.kubernetes.io/name": "gateway"}}
    assert rules["auth-from-gateway"]["trafficPolicy"]["connectionPool"]["http"] == {"http1MaxPendingRequests": 9}
    assert rules["auth"]["trafficPolicy"]["connectionPool"]["http"] == {"http1MaxPendingRequests": 100}


@pytest.mark.parametrize(
    ("where", "value", "expected"),
    [
        (
            "edge",
            {"kind": "hard", "timeout": 2},
            "services.gateway.depends_on.auth.timeout: '2' is not a duration; "
            "write a whole number and a unit (ms, s, m, h), e.g. '2s' or '2ms'",
        ),
        (
            "edge",
            {"kind": "hard", "timeout": "2 seconds"},
            "services.gateway.depends_on.auth.timeout: '2 seconds' is not a duration",
        ),
        (
            "edge",
            {"kind": "hard", "timout": "2s"},
            "services.gateway.depends_on.auth.timout: unknown key 'timout'; did you mean 'timeout'?",
        ),
        (
            "edge",
            {"kind": "hard", "retries": 9},
            "services.gateway.depends_on.auth.retries: 9 is out of range; it must be at most 5",
        ),
        ("service", {"ejection_time": "0s"}, "services.gateway.traffic.ejection_time: '0s' is zero"),
        (
            "platform",
            {"consecutive_5xx": 0},
            "platform.traffic.consecutive_5xx: 0 is out of range; it must be at least 1",
        ),
    ],
)
def test_bad_traffic_settings_are_located_errors(
    minimal: dict[str, Any], where: str, value: Any, expected: str
) -> None:
    if where == "edge":
        minimal["services"]["gateway"]["depends_on"]["auth"] = value
    elif where == "service":
        minimal["services"]["gateway"]["traffic"] = value
    else:
        minimal["platform"]["traffic"] = value
    with pytest.raises(CatalogError) as info:
        load_catalog_text(dump(minimal))
    assert re.search(r"catalog\.yaml:\d+:\d+: " + re.escape(expected), str(info.value)), str(info.value)


def test_linkerd_needs_the_edges_into_a_service_to_agree(minimal: dict[str, Any]) -> None:
    minimal["platform"]["mesh"] = "linkerd"
    minimal["services"]["media"]["depends_on"]["auth"] = {"kind": "hard", "timeout": "5s"}
    with pytest.raises(CatalogError) as info:
        load_catalog_text(dump(minimal))
    assert (
        "services.media.depends_on.auth: Linkerd sets timeouts, retries and circuit breaking per destination service, "
        "and the edges into 'auth' disagree" in str(info.value)
    )
    minimal["platform"]["mesh"] = "istio"  # Istio says it per caller
    load_catalog_text(dump(minimal))


def test_a_bad_mesh_name_lists_the_choices(minimal: dict[str, Any]) -> None:
    minimal["platform"]["mesh"] = "consul"
    with pytest.raises(
        CatalogError, match=r"platform\.mesh: 'consul' is not allowed here; expected 'istio', 'linkerd' or 'none'"
    ):
        load_catalog_text(dump(minimal))


# -- docs --------------------------------------------------------------------------------------


def test_who_may_call_whom_has_a_page_per_team_with_every_edge(istio: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = istio
    index = files["docs/architecture/access-matrix.md"]
    teams = {n for n in ctx.catalog.teams if any(s.team == n for s in ctx.catalog.services.values())}
    assert teams and all(f"](access/{t}.md)" in index for t in teams)
    columns = {"hard": 1, "soft": 2}
    for e in ctx.edges:
        page = files[f"docs/architecture/access/{ctx.catalog.services[e['source']].team}.md"]
        row = next(r for r in page.splitlines() if r.startswith(f"| **{e['source']}** |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert e["target"] in cells[columns[e["kind"]]].split(", "), (e, row)
        target = files[f"docs/architecture/access/{ctx.catalog.services[e['target']].team}.md"]
        called = next(r for r in target.splitlines() if r.startswith(f"| **{e['target']}** |"))
        assert e["source"] in called.strip("|").split("|")[3].strip().split(", ")
    # linear in the catalog: no page lists a service the team neither owns, calls nor is called by
    assert sum(len(t) for p, t in files.items() if p.startswith("docs/architecture/access")) < 200 * (
        len(ctx.catalog.services) + len(ctx.edges)
    )
    assert "mesh: istio" in files["docs/architecture/mesh.md"] and "| kei-ai" not in files["docs/architecture/mesh.md"]
    assert "| ai-service → kei-ai | hard | 10s | 1 |" in files["docs/architecture/mesh.md"]


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_the_control_plane_policy_opens_nothing_else(mesh: str, request: pytest.FixtureRequest) -> None:
    ctx, files = request.getfixturevalue(mesh)
    path = f"k8s/components/{mesh}/mesh.yaml"
    broken = _break(files, path, "  policyTypes:\n    - Egress\n", "  policyTypes:\n    - Egress\n    - Ingress\n")
    assert any(
        f.startswith(f"{path}: {mesh}-control-plane: NetworkPolicy: opens more than egress")
        for f in mesh_checks.run(ctx, broken)
    )


def test_a_client_never_gives_up_before_the_mesh(istio: tuple[RenderContext, dict[str, str]]) -> None:
    from nexus.catalog.models import duration_ms

    ctx, files = istio
    for name, svc in ctx.catalog.services.items():
        text = files[f"services/{name}/{name.replace('-', '_')}/settings.py"]
        seconds = float(re.search(r"request_timeout_seconds: Seconds = ([0-9.]+)", text).group(1))  # type: ignore[union-attr]
        assert all(seconds * 1000 >= duration_ms(ctx.catalog.traffic_for(name, d).timeout) for d in svc.depends_on), (
            name
        )
    assert (
        "request_timeout_seconds: Seconds = 10.0" in files["services/ai-service/ai_service/settings.py"]
    )  # its edge to kei-ai


def test_a_bare_cluster_catalog_builds_overlays_of_core_kinds_only(tmp_path: Path, kubectl: str) -> None:
    """mesh: none and no Prometheus Operator: what a bare kind cluster can take. Every overlay
    builds with the real kustomize and holds no custom resource; the checks pass."""
    import subprocess

    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    data["platform"]["mesh"] = "none"
    data["platform"].setdefault("monitoring", {})["operator"] = False
    (tmp_path / "catalog.yaml").write_text(dump(data), encoding="utf-8")
    generate(tmp_path / "catalog.yaml")  # renders, checks, writes
    out = tmp_path / "generated"
    assert not (out / "k8s/components/monitoring").exists()
    assert (out / "observability/prometheus.yml").exists()  # the local run still has its Prometheus
    for overlay in ("dev", "staging", "prod"):
        built = subprocess.run(
            [kubectl, "kustomize", str(out / "k8s/overlays" / overlay)], capture_output=True, text=True, timeout=120
        )
        assert built.returncode == 0, built.stderr
        groups = {d["apiVersion"].split("/")[0] for d in yaml.safe_load_all(built.stdout) if d}
        assert groups <= {"v1", "apps", "autoscaling", "policy", "networking.k8s.io"}, groups


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_crds_dump_the_same_with_libyaml_as_with_pyyaml(mesh: str, request: pytest.FixtureRequest) -> None:
    """crds renders with libyaml's emitter for speed; each definition must come out byte for
    byte as PyYAML's own emitter writes it (both meshes and the monitoring kinds)."""
    from nexus.render import crds

    _, files = request.getfixturevalue(mesh)
    found = [p for p in files if p.startswith("k8s/crds/") and not p.endswith("kustomization.yaml")]
    assert len(found) >= 3, found
    for path in found:
        data = yaml.safe_load(files[path])
        assert files[path].endswith(crds._dump(data, yaml.SafeDumper)), path


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_broken_mesh_objects_and_descriptors_are_failures_not_crashes(
    mesh: str, request: pytest.FixtureRequest
) -> None:
    """A mesh object or a Backstage descriptor broken at random (a field removed, or set to
    something of another type, as a template slip would) gives failure lines, never an
    exception out of the checks (1,000 breakages per mesh were run by hand)."""
    import random

    from nexus.checks import ecosystem as ecosystem_checks
    from nexus.checks.kubernetes_schema import SchemaValidator

    ctx, files = request.getfixturevalue(mesh)
    targets = [
        (path, i, doc)
        for path in sorted(files)
        if (path.startswith(f"k8s/components/{mesh}/") and path.endswith(".yaml")) or ecosystem_checks.reads(path)
        for i, doc in enumerate(yaml.safe_load_all(files[path]))
        if isinstance(doc, dict)
    ]
    rng = random.Random(15)
    for _ in range(150):
        path, index, doc = rng.choice(targets)
        broken, _ = broken_at_random(files, path, index, doc, rng, [0, "x", None, [], {}, 10001, False, "(unclosed"])
        assert isinstance(mesh_checks.run(ctx, broken, validator=SchemaValidator()), list)
        assert isinstance(ecosystem_checks.run(ctx, broken), list)


@pytest.mark.parametrize("mesh", ["istio", "linkerd"])
def test_the_custom_kinds_are_those_of_every_document_read_whole(mesh: str, request: pytest.FixtureRequest) -> None:
    """crds.custom_kinds reads each document only as far as its apiVersion and kind: it finds
    the kinds reading every document of the mesh's and the monitoring's files whole finds, and
    a document it cannot read that way (an anchor) is read whole."""
    from nexus.render import crds
    from nexus.render.mesh import COMPONENTS

    _, files = request.getfixturevalue(mesh)
    prefix = COMPONENTS + "/"
    whole = set()
    for path in (p for p in files if p.startswith(prefix) and p.endswith(".yaml")):
        for doc in yaml.safe_load_all(files[path]):
            if isinstance(doc, dict) and crds.known(str(doc.get("apiVersion")), str(doc.get("kind"))):
                whole.add((doc["apiVersion"], doc["kind"]))
    assert len(whole) >= 3
    assert crds.custom_kinds(files, prefix) == sorted(whole)
    anchored = {
        f"{prefix}extra.yaml": "meta: &m {name: x}\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\n"
    }
    assert crds.custom_kinds(anchored, prefix) == [("monitoring.coreos.com/v1", "ServiceMonitor")]


def test_each_service_has_a_prometheus_rule_of_its_own_that_does_not_grow_with_the_catalog() -> None:
    """One PrometheusRule per service, named and waved as its ServiceMonitor and holding its own
    alert group alone, so that no object grows with the catalog: one rule for every service was
    11.6 MB at 10,000 services, which the API server refuses (the testbed's: RequestEntityTooLarge,
    limit 3,145,728 bytes). The local alerts.yml holds every group, in the same order."""
    import importlib.util

    from conftest import ROOT

    from nexus import yamlread
    from nexus.render.mesh import MONITORS, RULES, render_monitoring

    spec = importlib.util.spec_from_file_location("synth", ROOT / "benchmarks" / "synth.py")
    assert spec is not None and spec.loader is not None
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    largest = {}
    for size, text in (("shipped", CATALOG.read_text(encoding="utf-8")), ("600", synth.synth_yaml(600))):
        loaded = load_catalog_text(text)
        out = render_monitoring(RenderContext(loaded.catalog, loaded.plan))
        rules = list(yaml.safe_load_all(out[RULES]))
        monitors = {m["metadata"]["name"]: m for m in yaml.safe_load_all(out[MONITORS])}
        assert [r["metadata"]["name"] for r in rules] == sorted(loaded.catalog.services)
        for rule in rules:
            name = rule["metadata"]["name"]
            assert [g["name"] for g in rule["spec"]["groups"]] == [name]
            assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == name
            assert rule["metadata"]["annotations"] == monitors[name]["metadata"]["annotations"]
        local = yaml.safe_load(out["observability/alerts.yml"])["groups"]
        assert local == [g for r in rules for g in r["spec"]["groups"]]
        largest[size] = max(len(doc) for doc in yamlread.split(out[RULES]))
    assert largest["600"] < 2 * largest["shipped"] < 10_000


def test_the_monitoring_files_are_made_a_block_of_services_at_a_time_and_an_edit_renders_its_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The four monitoring files over every service are the same bytes however the services are
    cut into blocks (one block, or a block of a few), and with the render caches an edit renders
    again only the blocks whose services' rows it changed: a port, one block; a description,
    none. A service added changes the blocks around it alone: where a block ends depends on
    the names, not on positions."""
    from nexus.render import mesh as render_mesh

    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    loaded = load_catalog_text(dump(data))
    monkeypatch.setattr(render_mesh, "BLOCK", 10**9)
    whole = render_mesh.render_monitoring(RenderContext(loaded.catalog, loaded.plan))
    monkeypatch.setattr(render_mesh, "BLOCK", 4)
    cut = render_mesh.blocks(sorted(loaded.catalog.services))
    assert len(cut) > 5 and [a for block in cut for a in block] == sorted(loaded.catalog.services)
    assert render_mesh.render_monitoring(RenderContext(loaded.catalog, loaded.plan)) == whole

    rendered: list[str] = []
    template = RenderContext.template

    def counted(self: RenderContext, name: str, **variables: Any) -> str:
        if name in render_mesh.OVER_SERVICES.values():
            rendered.append(name)
        return template(self, name, **variables)

    monkeypatch.setattr(RenderContext, "template", counted)
    rows: list[str] = []  # the services whose rows were worked out
    alerts = render_mesh._alerts
    monkeypatch.setattr(render_mesh, "_alerts", lambda ctx, names: rows.extend(names) or alerts(ctx, names))

    def run(change: Any = None) -> int:
        if change is not None:
            change(data)
        loaded = load_catalog_text(dump(data))
        rendered.clear()
        rows.clear()
        kept = render_mesh.render_monitoring(RenderContext(loaded.catalog, loaded.plan, cache=True, hoods=True))
        blocks = len(rendered) // len(render_mesh.OVER_SERVICES)
        worked[:] = rows
        assert kept == render_mesh.render_monitoring(RenderContext(loaded.catalog, loaded.plan))
        return blocks

    worked: list[str] = []
    # the gateway has no neighbourhood (it maps every service it reaches): its block's rows are
    # always worked out
    gateways = next(block for block in cut if loaded.catalog.platform.gateway in block)

    assert run() in (0, len(cut))  # kept already, or rendered whole (a cache of its own per test session)
    assert run() == 0
    assert run() == 0 and worked == gateways  # every other block found by its services' neighbourhoods
    assert run(lambda d: d["services"]["streamcore"].update(description="Streaming, edited")) == 0
    # a description is in the neighbourhoods of the service and its neighbours: their blocks'
    # rows are worked out again (the same rows: nothing rendered), the other blocks' are not
    assert "streamcore" in worked and len(worked) < len(data["services"])
    assert run(lambda d: d["services"]["streamcore"].update(port=3075)) == 1

    def add(d: dict[str, Any]) -> None:
        d["services"]["glitch-extra"] = {**d["services"]["glitch"], "port": 3084}
        next(s for s in d["stages"] if "glitch" in s.get("services", []))["services"].append("glitch-extra")

    assert 1 <= run(add) <= 2


def _balancing(files: dict[str, str]) -> dict[str, list[Any]]:
    """Service -> the loadBalancer of each Istio DestinationRule for it (the default and every
    edge's own)."""
    found: dict[str, list[Any]] = {}
    for d in docs_of(files, "k8s/components/istio/"):
        if d["kind"] == "DestinationRule":
            found.setdefault(d["spec"]["host"].split(".")[0], []).append(d["spec"]["trafficPolicy"].get("loadBalancer"))
    return found


def test_session_affinity_is_istio_s_consistent_hash_on_the_client_key(
    istio: tuple[RenderContext, dict[str, str]], linkerd: tuple[RenderContext, dict[str, str]], minimal: dict
) -> None:
    """The Service's ClientIP affinity is kube-proxy's, which sidecars bypass: in Istio the five
    services of the shipped catalog that ask for affinity had none. Every DestinationRule of such
    a service hashes: on the client key that the gateway sets and each hop passes on, and for the
    gateway, which the ingress gateway calls, on the client's address. Linkerd has no affinity,
    and nothing of its output pretends to give one."""
    from nexus.catalog import naming

    ctx, files = istio
    gateway = ctx.catalog.platform.gateway
    sticky = {n for n, s in ctx.catalog.services.items() if s.session_affinity}
    assert len(sticky) == 5 and gateway in sticky
    by_key = {"consistentHash": {"httpHeaderName": naming.CLIENT_HEADER}}
    want = {n: None if n not in sticky else {"consistentHash": {"useSourceIp": True}} if n == gateway else by_key
            for n in ctx.catalog.services}  # fmt: skip
    assert {n: set(map(repr, lbs)) for n, lbs in _balancing(files).items()} == {n: {repr(w)} for n, w in want.items()}
    assert not [p for p, t in linkerd[1].items() if p.startswith("k8s/") and "consistentHash" in t]
    # an edge with its own circuit breaking has its own DestinationRule, which must hash too
    minimal["platform"]["mesh"] = "istio"
    minimal["services"]["media"]["session_affinity"] = True
    minimal["services"]["gateway"]["depends_on"]["media"] = {"kind": "soft", "max_connections": 7}
    assert _balancing(rendered(dump(minimal))[1])["media"] == [by_key, by_key]


@pytest.mark.parametrize(
    ("old", "new", "said"),
    [
        # Envoy would close the connection at 2 s
        (
            '      timeout: "0s"\n',
            '      timeout: "2s"\n',
            "/ws from backend-api gets (timeout, retries) ('2s', 0)",
        ),
        # a route for every path, not /ws alone: the service's requests would have no timeout
        (
            '- name: "websocket"\n      match:\n        - uri:\n            exact: "/ws"\n',
            '- name: "websocket"\n',
            "GET from backend-api gets (timeout, retries) ('0s', 0), the catalog says ('2s', 2)",
        ),
    ],
    ids=["a-timeout", "no-path-of-its-own"],
)
def test_a_websocket_route_with_a_timeout_or_without_its_path_is_caught(
    istio: tuple[RenderContext, dict[str, str]], old: str, new: str, said: str
) -> None:
    """A WebSocket connection is not a request: a route timeout (the edge's 2 s) closes it. The
    live service's own route, first, has none, for its endpoint alone."""
    ctx, files = istio
    path = ISTIO.format("boom-boom-room-live")
    assert files[path].index('- name: "websocket"') < files[path].index('- name: "default-idempotent"')
    failures = mesh_checks.run(ctx, _break(files, path, old, new))
    assert any(f.startswith(f"{path}: ") and said in f for f in failures), failures
