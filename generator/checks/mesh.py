"""Checks of the rendered mesh and monitoring files, read back from their YAML.

Like the NetworkPolicy check (k8s_checks), these parse what render_mesh produced and compare it
with the catalog: the identities each workload's authorization admits are exactly its callers'
(plus the ingress at the gateway, and Prometheus through one namespace-wide policy limited to
scraping); each edge's timeout and retries are what the mesh applies to that caller; one layer
retries; every mesh object passes its CRD's strict schema; every service is scraped and alerted on.
Only the selected mesh is rendered, so only it is checked here; the tests render and check both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

import yaml

from ..catalog import naming
from ..catalog.naming import pkg
from ..paths import code_key
from ..render.context import RenderContext
from ..render.mesh import (
    COMPONENTS,
    LOCAL_SCRAPES,
    MESHES,
    MONITORS,
    RULES,
    Mesh,
    admitted,
    components,
    external_host,
    go_duration,
    infrastructure_host,
    monitoring_identity,
)
from ..yamlread import large
from . import crd_schema
from .documents import Doc, documents, get, items, load_yaml, mapping
from .kubernetes_schema import DEFAULT, SchemaValidator

NAME = "app.kubernetes.io/name"
_RETRIES = re.compile(r"^    retries: Retries = (\d+)$", re.M)


def run(
    ctx: RenderContext,
    files: dict[str, str],
    *,
    validator: SchemaValidator | None = None,
    digests: Mapping[str, str] | None = None,
    verified: frozenset[str] = frozenset(),
) -> list[str]:
    """Every check of this area; [] when all pass. Inputs (catalog, the files read here, this
    code, the schemas) that already passed once, per ``validator.seen``, are not checked again:
    the CRD schemas alone cost more than a whole unchanged run may take. ``digests``: the
    files' SHA-256, when already known; ``verified``: files whose exact bytes passed every
    check before, whose documents the schemas need not see again (checks.check)."""
    paths = sorted(
        p
        for p in files
        if p.startswith((COMPONENTS + "/", "k8s/overlays/", "observability/")) or p.endswith("/settings.py")
    )
    key = (
        validator.run_key(["mesh-checks", _code_hash(), ctx.checks_json], files, paths, digests) if validator else None
    )
    if validator is not None and validator.passed(key):
        return []
    failures = _run(ctx, files, validator, verified, digests)
    if validator is not None and key is not None and not failures:
        validator.keep(key)
    return failures


@cache
def _code_hash() -> str:
    # all of Nexus's code and templates (paths.code_key), not only this module's and the mesh
    # renderer's: the checks call into the documents' and YAML readers too
    code = code_key().encode()
    schemas = b"".join(p.read_bytes() for p in sorted(crd_schema.SCHEMAS.glob("*.json")))
    return hashlib.blake2b(code + schemas).hexdigest()


def _run(
    ctx: RenderContext,
    files: dict[str, str],
    validator: SchemaValidator | None = None,
    verified: frozenset[str] = frozenset(),
    digests: Mapping[str, str] | None = None,
) -> list[str]:
    failures: list[str] = []
    docs: list[Doc] = []
    paths = sorted(p for p in files if p.startswith(COMPONENTS + "/") and p.endswith(".yaml"))
    # The monitoring check reads the monitors and rules of every service (at 10,000 services 20,000
    # documents, 0.6 s to unmarshal) and of the catalog only the services' names and ports: kept
    # by those, an edit that changes neither (a description, a dependency) skips it, and with
    # it reading those two files when their exact bytes passed every other check before.
    monitoring = (
        validator.run_key(
            ["mesh-monitoring", _code_hash(), _monitored(ctx)],
            files,
            [*paths, *({LOCAL_SCRAPES} & files.keys())],
            digests,
        )
        if validator is not None
        else None
    )
    monitored = validator is not None and validator.passed(monitoring)
    for path in paths:
        if monitored and path in (MONITORS, RULES) and path in verified:
            continue  # read by the monitoring check alone
        try:
            docs.extend(documents(path, files[path]))
        except yaml.YAMLError as exc:
            failures.append(f"{path}: platform: does not parse: {exc}".replace("\n", " "))
    failures += _overlays_include(ctx, files)
    failures += _kustomizations(files, docs)
    failures += _schemas([d for d in docs if d.path not in verified], validator)
    if not monitored:
        unmonitored = _monitoring(ctx, files, docs)
        failures += unmonitored
        if validator is not None and monitoring is not None and not unmonitored:
            validator.keep(monitoring)
    failures += _client_retries(ctx, files)
    mesh = MESHES.get(ctx.catalog.platform.mesh)
    if mesh is not None:
        mine = [d for d in docs if d.path.startswith(f"{COMPONENTS}/{mesh.name}/")]
        found, problems = (read_istio if mesh.name == "istio" else read_linkerd)(ctx, mine)
        failures += (
            problems
            + compare(ctx, mesh, found, f"{COMPONENTS}/{mesh.name}")
            + _control_plane(mesh, mine, validator or DEFAULT)
        )
        failures += _istio_traffic(ctx, mine) if mesh.name == "istio" else _linkerd_traffic(ctx, mine)
    return failures


def _where(d: Doc) -> str:
    return f"{d.path}: {d.name}: {d.kind}"


# -- authorization, read back ------------------------------------------------------------------


def read_istio(ctx: RenderContext, docs: list[Doc]) -> tuple[dict[str, set[str]], list[str]]:
    """workload -> principals its AuthorizationPolicy admits; a rule broader than a list of
    principals on the workload's port (or Prometheus's GET of the metrics path) is a failure."""
    found: dict[str, set[str]] = {}
    failures: list[str] = []
    ports = _ports(ctx)
    health = ctx.catalog.platform.health
    strict = any(
        d.kind == "PeerAuthentication"
        and "selector" not in (d.data.get("spec") or {})
        and get(d.data, "spec", "mtls", "mode") == "STRICT"
        for d in docs
    )
    if not strict:
        failures.append(
            f"{COMPONENTS}/istio/mesh.yaml: platform: no namespace-wide PeerAuthentication with mtls STRICT"
        )
    for d in (d for d in docs if d.kind == "AuthorizationPolicy"):
        spec = mapping(d.data.get("spec"))
        if spec.get("action", "ALLOW") != "ALLOW":
            failures.append(f"{_where(d)}: action {spec.get('action')} (only ALLOW policies are generated)")
            continue
        target = get(spec, "selector", "matchLabels", NAME)
        rules = items(spec.get("rules"))
        if target is not None and not isinstance(target, str):
            failures.append(f"{_where(d)}: selector must name one workload by {NAME}")
            continue
        if target is None:
            scrape = [
                {
                    "from": [{"source": {"principals": [monitoring_identity(ctx, MESHES["istio"])]}}],
                    "to": [{"operation": {"methods": ["GET"], "paths": [health.metrics]}}],
                }
            ]
            if rules and rules != scrape:
                failures.append(
                    f"{_where(d)}: a namespace-wide policy may only admit Prometheus to GET {health.metrics}"
                )
            continue
        admits = found.setdefault(target, set())
        for rule in map(mapping, rules):
            sources = [mapping(get(f, "source")) for f in items(rule.get("from"))]
            ops = [mapping(get(t, "operation")) for t in items(rule.get("to"))]
            if (
                not sources
                or any(set(s) != {"principals"} for s in sources)
                or ops != [{"ports": [str(ports.get(target))]}]
            ):
                failures.append(
                    f"{_where(d)}: a rule must name principals and only {target}'s port {ports.get(target)}"
                )
                continue
            admits.update(p for s in sources for p in items(s["principals"]) if isinstance(p, str))
    return found, failures


def read_linkerd(ctx: RenderContext, docs: list[Doc]) -> tuple[dict[str, set[str]], list[str]]:
    """workload -> identities the AuthorizationPolicies on its Server admit."""
    failures: list[str] = []
    ns = ctx.catalog.platform.namespace
    servers = {d.name: d for d in docs if d.kind == "Server"}
    authn = {
        d.name: {i for i in items(get(d.data, "spec", "identities")) if isinstance(i, str)}
        for d in docs
        if d.kind == "MeshTLSAuthentication"
    }
    found: dict[str, set[str]] = {}
    for name, d in servers.items():
        target = get(d.data, "spec", "podSelector", "matchLabels", NAME)
        if (
            get(d.data, "spec", "podSelector") != {"matchLabels": {NAME: name}}
            or get(d.data, "spec", "accessPolicy") != "deny"
        ):
            failures.append(f"{_where(d)}: must select {NAME}={name} and deny by default (accessPolicy: deny)")
        found.setdefault(str(target), set())
    for d in (d for d in docs if d.kind == "AuthorizationPolicy"):
        ref, needs = mapping(get(d.data, "spec", "targetRef")), items(get(d.data, "spec", "requiredAuthenticationRefs"))
        if not needs or any(
            get(n, "kind") != "MeshTLSAuthentication" or not isinstance(get(n, "name"), str) or n["name"] not in authn
            for n in needs
        ):
            failures.append(f"{_where(d)}: must require MeshTLSAuthentications that are rendered here")
            continue
        identities = set().union(*(authn[n["name"]] for n in needs))
        if ref.get("kind") == "Namespace" and ref.get("name") == ns:
            if identities != {monitoring_identity(ctx, MESHES["linkerd"])}:
                failures.append(f"{_where(d)}: a namespace-wide policy may only admit Prometheus")
        elif ref.get("kind") == "Server" and isinstance(ref.get("name"), str) and ref["name"] in servers:
            target = get(servers[ref["name"]].data, "spec", "podSelector", "matchLabels", NAME)
            found.setdefault(str(target), set()).update(identities)
        else:
            failures.append(f"{_where(d)}: targets {ref}, which is not a Server rendered here nor the namespace")
    return found, failures


def compare(ctx: RenderContext, mesh: Mesh, found: dict[str, set[str]], folder: str) -> list[str]:
    """What the policies admit == the catalog's callers of each workload (and the ingress at the gateway)."""
    failures = []
    expected = admitted(ctx, mesh)
    for name in sorted(set(expected) | set(found)):
        where = f"{folder}/services/{name}.yaml" if name in ctx.catalog.services else f"{folder}/mesh.yaml"
        if name not in expected:
            failures.append(f"{where}: {name}: a policy admits callers to {name}, which is not in the catalog")
            continue
        if name not in found and (expected[name] or name in ctx.catalog.services):
            failures.append(f"{where}: {name}: no {mesh.name} policy selects it")
            continue
        got = found.get(name, set())
        for identity in sorted(expected[name] - got):
            failures.append(
                f"{where}: {name}: {identity} is a caller in the catalog but the {mesh.name} policy does not admit it"
            )
        for identity in sorted(got - expected[name]):
            failures.append(
                f"{where}: {name}: the {mesh.name} policy admits {identity}, which is not a caller in the catalog"
            )
    return failures


# -- traffic settings --------------------------------------------------------------------------


def _istio_traffic(ctx: RenderContext, docs: list[Doc]) -> list[str]:
    """For every edge, the route its caller's GET takes carries the edge's timeout and retries;
    every destination is mTLS (ISTIO_MUTUAL); every Sidecar reaches exactly what the catalog says."""
    cat, failures = ctx.catalog, []
    ns = cat.platform.namespace
    vs = {str(get(d.data, "spec", "hosts", 0)): d for d in docs if d.kind == "VirtualService"}
    for d in (d for d in docs if d.kind == "DestinationRule"):
        if get(d.data, "spec", "trafficPolicy", "tls", "mode") != "ISTIO_MUTUAL":
            failures.append(f"{_where(d)}: trafficPolicy.tls.mode must be ISTIO_MUTUAL")
    for e in ctx.edges:
        source, target = e["source"], e["target"]
        want = ctx.traffic(source, target)
        doc = vs.get(f"{target}.{ns}.svc.cluster.local")
        route = _first_route(doc.data, source, "GET") if doc else None
        got = (route.get("timeout"), get(route, "retries", "attempts")) if route else None
        if got != (go_duration(want.timeout), want.retries):
            failures.append(
                f"{COMPONENTS}/istio/services/{target}.yaml: {target}: GET from {source} "
                f"gets (timeout, retries) {got}, "
                f"the catalog says {(go_duration(want.timeout), want.retries)}"
            )
        if cat.services[target].websocket:  # a connection, not a request: no timeout ends it
            live = _first_route(doc.data, source, "GET", naming.LIVE_PATH) if doc else None
            got = (live.get("timeout"), get(live, "retries", "attempts")) if live else None
            if got != ("0s", 0):
                failures.append(
                    f"{COMPONENTS}/istio/services/{target}.yaml: {target}: its WebSocket endpoint "
                    f"{naming.LIVE_PATH} from {source} gets (timeout, retries) {got}, not ('0s', 0)"
                )
    for d in (d for d in docs if d.kind == "Sidecar"):
        svc = cat.services.get(d.name)
        hosts = {str(h) for h in items(get(d.data, "spec", "egress", 0, "hosts"))}
        if svc is None:
            continue
        want_hosts = {f"./{x}.{ns}.svc.cluster.local" for x in svc.depends_on} | {"istio-system/*"}
        want_hosts |= {f"./{infrastructure_host(ctx, x)}" for x in svc.uses}
        want_hosts |= {f"./{external_host(ctx, x)}" for x in svc.externals}
        if hosts != want_hosts:
            failures.append(
                f"{_where(d)}: egress hosts {sorted(hosts ^ want_hosts)} differ from the catalog's dependencies"
            )
    return failures


def _first_route(vs: dict[str, Any], source: str, method: str, path: str = "/") -> dict[str, Any] | None:
    """The first http route of a VirtualService that a request from ``source`` with ``method``
    for ``path`` matches."""
    for route in map(mapping, items(get(vs, "spec", "http"))):
        for match in map(mapping, route.get("match") or [{}]):
            labels = match.get("sourceLabels") or {}
            regex = get(match, "method", "regex")
            uri = mapping(match.get("uri") or {})
            if (
                labels in ({}, {NAME: source})
                and (regex is None or _matches(regex, method))
                and ("exact" not in uri or uri["exact"] == path)
                and ("prefix" not in uri or path.startswith(str(uri["prefix"])))
            ):
                return dict(route)
    return None


def _matches(regex: Any, text: str) -> bool:
    try:
        return isinstance(regex, str) and re.fullmatch(regex, text) is not None
    except re.error:  # not a regular expression: matches nothing (the CRD schema names the field)
        return False


def _linkerd_traffic(ctx: RenderContext, docs: list[Doc]) -> list[str]:
    """Every destination Service carries its edges' timeout and retries as Linkerd annotations."""
    failures: list[str] = []
    patched = {d.name: get(d.data, "metadata", "annotations") or {} for d in docs if d.kind == "Service"}
    for e in ctx.edges:
        want = ctx.traffic(e["source"], e["target"])
        notes = mapping(patched.get(e["target"]))
        limit = notes.get("retry.linkerd.io/limit", 0)
        got = (
            notes.get("timeout.linkerd.io/request"),
            (int(limit) if str(limit).isdigit() else limit) if "retry.linkerd.io/http" in notes else 0,
        )
        if got != (go_duration(want.timeout), want.retries):
            failures.append(
                f"{COMPONENTS}/linkerd/services-patch.yaml: {e['target']}: calls from {e['source']} "
                f"get (timeout, retries) {got}, "
                f"the catalog says {(go_duration(want.timeout), want.retries)}"
            )
    return failures


def _control_plane(mesh: Mesh, docs: list[Doc], validator: SchemaValidator) -> list[str]:
    """The component's only NetworkPolicy opens egress to the mesh's control plane, and nothing else
    (the base's policies stay the edges' exact reading: k8s_checks). ``validator``: the run's, whose
    cache of passed documents spares an edit elsewhere from importing jsonschema for this one."""
    namespace, ports = mesh.control_plane
    want = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}],
                "ports": [{"protocol": "TCP", "port": p} for p in ports],
            }
        ],
    }
    policies = [d for d in docs if d.kind == "NetworkPolicy"]
    failures = [
        f"{_where(d)}: opens more than egress to {namespace} on {list(ports)}"
        for d in policies
        if d.data.get("spec") != want
    ]
    failures += [
        f"{_where(d)}: {m}" for d in policies for m in validator.errors(d.text, d.data)
    ]  # the strict Kubernetes schema
    if not policies:
        failures.append(
            f"{COMPONENTS}/{mesh.name}/mesh.yaml: platform: no NetworkPolicy lets the proxies reach {namespace}; "
            "the base's default deny would cut them off"
        )
    return failures


def _client_retries(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    """One layer retries: with a mesh, every service's generated settings say retries = 0.
    (Without one, each service's retries are its own: nothing to look for, in 10,000 files.)"""
    if not ctx.catalog.mesh_retries():
        return []
    failures = []
    for name in sorted(ctx.catalog.services):
        path = f"services/{name}/{pkg(name)}/settings.py"
        match = _RETRIES.search(files.get(path, ""))
        if match is None or match.group(1) != "0":
            failures.append(
                f"{path}: {name}: the mesh ({ctx.catalog.platform.mesh}) retries, "
                "so the client must not: retries must be 0"
            )
    return failures


# -- structure, schemas, monitoring ------------------------------------------------------------


def _overlays_include(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    failures = []
    want = [f"../../components/{c}" for c in components(ctx)]
    for path in sorted(p for p in files if p.startswith("k8s/overlays/") and p.endswith("/kustomization.yaml")):
        got = mapping(load_yaml(files[path])).get("components") or []
        if got != want:
            failures.append(
                f"{path}: platform: includes components {got}, not {want} (platform.mesh: {ctx.catalog.platform.mesh})"
            )
    present = {p.split("/")[2] for p in files if p.startswith(COMPONENTS + "/")}
    for extra in sorted(present - set(components(ctx))):
        failures.append(f"{COMPONENTS}/{extra}: platform: rendered but no overlay includes it")
    return failures


def _kustomizations(files: dict[str, str], docs: list[Doc]) -> list[str]:
    failures = []
    for k in (d for d in docs if d.kind == "Component"):
        folder = k.path.rsplit("/", 1)[0]
        listed = [f"{folder}/{r}" for r in k.data.get("resources") or []] + [
            f"{folder}/{p.get('path')}" for p in k.data.get("patches") or []
        ]
        failures += [f"{k.path}: platform: lists {p}, which is not rendered" for p in listed if p not in files]
        unlisted = {p for p in files if p.startswith(folder + "/") and p != k.path} - set(listed)
        failures += [f"{k.path}: platform: does not list {p}" for p in sorted(unlisted)]
    return failures


def _schemas(docs: list[Doc], validator: SchemaValidator | None = None) -> list[str]:
    """Every mesh object against its CRD's strict schema (patches are partial objects: not here).
    With ``validator``, a document whose exact text passed before (its ``seen`` hashes, kept
    between runs) is not validated again."""
    failures = []
    for d in docs:
        if not crd_schema.known(str(d.data.get("apiVersion")), d.kind) or d.path.endswith("-patch.yaml"):
            continue
        key = validator.key(f"crd\0{_code_hash()}\0{d.text}") if validator is not None else None
        if validator is not None and validator.passed(key):
            continue
        found = crd_schema.errors(d.data)
        failures += [f"{_where(d)}: {message}" for message in found]
        if validator is not None and key is not None and not found:
            validator.keep(key)
    return failures


def _monitored(ctx: RenderContext) -> str:
    """All the monitoring check reads of the catalog (``_monitoring``)."""
    cat = ctx.catalog
    return f"{cat.platform.monitoring.operator}|" + ",".join(f"{n}:{s.port}" for n, s in sorted(cat.services.items()))


def _monitoring(ctx: RenderContext, files: dict[str, str], docs: list[Doc]) -> list[str]:
    """A ServiceMonitor per service selecting it; three alerts per service; the local
    prometheus.yml scrapes every service at 127.0.0.1 and its catalog port."""
    cat, failures = ctx.catalog, []
    monitors = {d.name: d for d in docs if d.kind == "ServiceMonitor"}
    alerts: dict[str, set[str]] = {}
    for d in (d for d in docs if d.kind == "PrometheusRule"):
        for group in get(d.data, "spec", "groups") or []:
            alerts.setdefault(group.get("name"), set()).update(r.get("alert") for r in group.get("rules") or [])
    # one scrape job per service: each read once across runs (yamlread.large), like the manifests
    local = mapping(large(files.get(LOCAL_SCRAPES, "")))
    scraped = {get(c, "job_name"): get(c, "static_configs", 0, "targets") for c in items(local.get("scrape_configs"))}
    operator = cat.platform.monitoring.operator  # without it, no ServiceMonitors or rules are rendered
    for name, svc in sorted(cat.services.items()):
        m = monitors.get(name)
        if not operator:
            if m is not None or name in alerts:
                failures.append(
                    f"{COMPONENTS}/monitoring: {name}: Prometheus Operator objects rendered "
                    "although platform.monitoring.operator is false"
                )
        elif (
            m is None
            or get(m.data, "spec", "selector") != {"matchLabels": {NAME: name}}
            or get(m.data, "spec", "endpoints", 0, "port") != "http"
        ):
            failures.append(f"{MONITORS}: {name}: no ServiceMonitor selecting {NAME}={name} on port http")
        if operator and alerts.get(name) != {"ServiceDown", "HighErrorRate", "HighLatencyP99"}:
            failures.append(
                f"{RULES}: {name}: alerts {sorted(alerts.get(name) or [])}, "
                "not ServiceDown, HighErrorRate and HighLatencyP99"
            )
        if scraped.get(name) != [f"127.0.0.1:{svc.port}"]:
            failures.append(f"{LOCAL_SCRAPES}: {name}: scrapes {scraped.get(name)}, not ['127.0.0.1:{svc.port}']")
    return failures


def _ports(ctx: RenderContext) -> dict[str, int]:
    cat = ctx.catalog
    return {**{n: s.port for n, s in cat.services.items()}, **{n: c.port for n, c in cat.infrastructure.items()}}
