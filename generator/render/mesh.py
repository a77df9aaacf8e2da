"""Render area: the service mesh and observability, from the same edges as the NetworkPolicies.

Kustomize Components under ``k8s/components/``, which every overlay includes (render_k8s asks
``components()``): ``monitoring`` when the cluster runs the Prometheus Operator
(platform.monitoring.operator; a ServiceMonitor per service and PrometheusRule alerts), and
``istio`` or ``linkerd`` as ``platform.mesh`` says. Each mesh component admits, per service,
exactly the identities of the services that declare it as a dependency, and carries each
edge's timeout, retries and circuit breaking in that mesh's own terms (MESHES).
Beside them: ``observability/prometheus.yml`` for the local run, and the mesh and access docs pages.

Checks of the rendered output: mesh_checks.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from ..catalog import naming
from ..catalog.models import Traffic, duration_ms
from ..digest import of_files
from . import crds
from .context import GENERATED_HEADER, RenderContext

COMPONENTS = "k8s/components"
# the monitoring component's files over every service (render_monitoring)
MONITORS = f"{COMPONENTS}/monitoring/servicemonitors.yaml"
RULES = f"{COMPONENTS}/monitoring/alerts.yaml"
LOCAL_SCRAPES = "observability/prometheus.yml"
TRUST_DOMAIN = "cluster.local"  # both meshes' default; identities below are built on it
IDEMPOTENT = ("GET", "HEAD", "OPTIONS", "PUT", "DELETE")  # what the runtime's clients retry
SCRAPE_INTERVAL = "30s"
ERROR_RATIO = 0.05  # alert when more than 5% of a service's requests fail with a 5xx
LATENCY_SHARE = 0.8  # alert when p99 passes 80% of the shortest timeout its callers allow


@dataclass(frozen=True)
class Mesh:
    name: str
    ingress: str  # the identity the gateway's external traffic arrives with
    ingress_note: str
    control_plane: tuple[str, tuple[int, ...]]  # namespace, TCP ports every proxy dials
    files: tuple[str, ...]  # shared files and patches of the component, beside one file per service

    def identity(self, service_account: str, namespace: str) -> str:
        if self.name == "istio":
            return f"{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"
        return f"{service_account}.{namespace}.serviceaccount.identity.linkerd.{TRUST_DOMAIN}"


MESHES = {
    "istio": Mesh(
        "istio",
        f"{TRUST_DOMAIN}/ns/{naming.ISTIO_NAMESPACE}/sa/istio-ingressgateway-service-account",
        f"the default Istio ingress gateway (istioctl or the gateway Helm chart installed in {naming.ISTIO_NAMESPACE})",
        (naming.ISTIO_NAMESPACE, (15012,)),  # istiod: xDS and certificates
        ("mesh", "namespace-patch", "servicemonitors-patch"),
    ),
    "linkerd": Mesh(
        "linkerd",
        f"ingress-nginx.{naming.INGRESS_NGINX_NAMESPACE}.serviceaccount.identity.linkerd.{TRUST_DOMAIN}",
        f"ingress-nginx, meshed, with its default ServiceAccount in namespace {naming.INGRESS_NGINX_NAMESPACE}",
        (naming.LINKERD_NAMESPACE, (8080, 8086, 8090)),  # identity, destination, policy
        ("mesh", "namespace-patch", "workloads-patch", "services-patch"),
    ),
}


def go_duration(value: str) -> str:
    """A catalog duration in the form both meshes read: whole seconds, else milliseconds."""
    ms = duration_ms(value)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def callers(ctx: RenderContext) -> dict[str, list[str]]:
    """Every workload a mesh policy protects (services and infrastructure) -> who may call it."""
    cat = ctx.catalog
    out = {name: list(ctx.dependents[name]) for name in cat.services}
    for comp, infra in cat.infrastructure.items():
        if infra.external is None:  # a managed instance is no workload here
            out[comp] = cat.users_of(comp)
    return dict(sorted(out.items()))


def admitted(ctx: RenderContext, mesh: Mesh) -> dict[str, set[str]]:
    """What each workload's own policy must admit: its callers' identities, and for the
    gateway also the ingress. (Prometheus is admitted by one namespace-wide policy.)"""
    ns = ctx.catalog.platform.namespace
    out = {name: {mesh.identity(c, ns) for c in who} for name, who in callers(ctx).items()}
    out[ctx.catalog.platform.gateway].add(mesh.ingress)
    return out


def monitoring_identity(ctx: RenderContext, mesh: Mesh) -> str:
    mon = ctx.catalog.platform.monitoring
    return mesh.identity(mon.service_account, mon.namespace)


def _traffic(t: Traffic) -> dict[str, Any]:
    return {**t.model_dump(), "timeout": go_duration(t.timeout), "ejection_time": go_duration(t.ejection_time)}


def _route_differs(a: Traffic, b: Traffic) -> bool:
    return (a.timeout, a.retries) != (b.timeout, b.retries)


def _pool_differs(a: Traffic, b: Traffic) -> bool:
    return (a.consecutive_5xx, a.ejection_time, a.max_connections, a.max_pending) != (
        b.consecutive_5xx,
        b.ejection_time,
        b.max_connections,
        b.max_pending,
    )


def _target(ctx: RenderContext, name: str, mesh: Mesh, allowed: dict[str, set[str]]) -> dict[str, Any]:
    """What one service's mesh file needs: as a target (who calls it, with which settings)
    and as a caller (what it may reach)."""
    cat = ctx.catalog
    ns, base = cat.platform.namespace, cat.platform.traffic
    svc = cat.services[name]
    edges = {src: ctx.traffic(src, name) for src in ctx.dependents[name]}
    # Linkerd has one setting per destination: the catalog's linkerd rule makes the edges agree
    per_target = next(iter(edges.values()), base)
    return {
        "name": name,
        "port": svc.port,
        "host": f"{name}.{ns}.svc.{TRUST_DOMAIN}",
        "gateway": name == cat.platform.gateway,
        "affinity": svc.session_affinity,
        "websocket": svc.websocket,
        "callers": ctx.dependents[name],
        "identities": sorted(allowed[name]),
        "default": _traffic(base),
        "linkerd": _traffic(per_target),
        "routes": [{"source": s, **_traffic(t)} for s, t in sorted(edges.items()) if _route_differs(t, base)],
        "pools": [{"source": s, **_traffic(t)} for s, t in sorted(edges.items()) if _pool_differs(t, base)],
        "egress": [f"./{d}.{ns}.svc.{TRUST_DOMAIN}" for d in sorted(svc.depends_on)]
        + [f"./{infrastructure_host(ctx, c)}" for c in sorted(svc.uses)]
        + [f"./{external_host(ctx, e)}" for e in sorted(svc.externals)],
    }


def infrastructure_host(ctx: RenderContext, name: str) -> str:
    """Where a piece of infrastructure is reached: its Service here, or a managed instance's host."""
    infra = ctx.catalog.infrastructure[name]
    return infra.external.host if infra.external else f"{name}.{ctx.catalog.platform.namespace}.svc.{TRUST_DOMAIN}"


def external_host(ctx: RenderContext, name: str) -> str:
    return urlsplit(ctx.catalog.externals[name].url).hostname or name


def _latency_threshold(ctx: RenderContext, name: str) -> float:
    """Seconds: a share of the shortest timeout any caller gives this service."""
    cat = ctx.catalog
    timeouts = [ctx.traffic(src, name).timeout for src in ctx.dependents[name]] or [cat.platform.traffic.timeout]
    return round(min(duration_ms(t) for t in timeouts) * LATENCY_SHARE / 1000, 3)


def components(ctx: RenderContext) -> list[str]:
    """The components every overlay includes, in order (the mesh patches monitoring's objects)."""
    mesh = ctx.catalog.platform.mesh
    monitoring = ["monitoring"] if ctx.catalog.platform.monitoring.operator else []
    return monitoring + ([mesh] if mesh in MESHES else [])


def render(ctx: RenderContext) -> dict[str, str]:
    out = render_monitoring(ctx)
    if not ctx.catalog.platform.monitoring.operator:  # no Operator CRDs: keep only the local run's files
        out = {path: text for path, text in out.items() if not path.startswith(f"{COMPONENTS}/monitoring/")}
    if ctx.catalog.platform.mesh in MESHES:
        out.update(render_mesh(ctx, MESHES[ctx.catalog.platform.mesh]))
    # CRDs for a cluster without the mesh's or the operator's own: made from the kinds these files
    # hold, and kept by those files' text (reading them back and dumping the CRDs cost a third
    # of an edit's whole render)
    kept = ctx.kept("crds")
    key = kept.key(sorted(of_files(out, ctx.known_digests(out)).items()))  # by the files' names: 33 MB unread
    found = kept.get(key)
    out.update(found if found is not None else kept.put(key, crds.render(crds.custom_kinds(out, COMPONENTS + "/"))))
    kept.save()
    return dict(sorted(out.items()))


def _alerts(ctx: RenderContext, names: list[str]) -> list[dict[str, Any]]:
    """The monitoring files' rows of the services ``names``, in order."""
    health = ctx.catalog.platform.health
    probes = "|".join(sorted({health.health, health.ready, health.live, health.metrics}))
    return [
        {
            "name": n,
            "latency": _latency_threshold(ctx, n),
            "probes": probes,
            "port": ctx.catalog.services[n].port,
            "wave": ctx.plan.wave_of[n],
        }
        for n in names
    ]


# the monitoring files over every service, each rendered a block of services at a time
OVER_SERVICES = {
    MONITORS: "observability/servicemonitors.yaml.j2",
    RULES: "observability/prometheusrule.yaml.j2",
    LOCAL_SCRAPES: "observability/prometheus.yml.j2",
    "observability/alerts.yml": "observability/alerts.yml.j2",
}
BLOCK = 64  # services in a block of the monitoring files, on average


def blocks(names: list[str]) -> list[list[str]]:
    """The services (``names``, in order) in consecutive blocks, each ending at a service whose
    name's CRC-32 is a multiple of BLOCK: where a block ends depends on the names alone, so a
    service added or removed changes its own block, not every block after it. At least one block."""
    out: list[list[str]] = [[]]
    for name in names:
        out[-1].append(name)
        if zlib.crc32(name.encode()) % BLOCK == 0:
            out.append([])
    return [block for block in out if block] or [[]]  # no service: the files' heads alone


def render_monitoring(ctx: RenderContext) -> dict[str, str]:
    """The monitoring component and the local run's Prometheus files. The four over every
    service are made a block of services at a time (``blocks``), each block's parts kept by
    its own rows: an edit that changes a service's row (its port, its latency threshold) or
    adds one renders that block again, not 10,000 services' monitors and rules (a second of
    such an edit at 10,000 services). A service's row is made of its neighbourhood
    (RenderContext.hood): a block whose services' neighbourhoods are as in the last run is
    found by them, its rows not worked out (every edge's timeout: 0.2 s of every edit)."""
    common: dict[str, Any] = {
        "header": GENERATED_HEADER,
        "error_ratio": ERROR_RATIO,
        "interval": SCRAPE_INTERVAL,
        "platform": ctx.catalog.platform,
    }
    folder = f"{COMPONENTS}/monitoring"
    kept = ctx.kept("monitoring")
    parts: dict[str, list[str]] = {path: [] for path in OVER_SERVICES}
    cut = blocks(sorted(ctx.catalog.services))
    keys = []
    for number, names in enumerate(cut):
        first, last = number == 0, number == len(cut) - 1
        key, rows = ctx.keyed(kept, ["block", first, last, common], names, partial(_alerts, ctx, names))
        keys.append(key)
        found = kept.get(key) or kept.put(
            key,
            {
                path: ctx.template(template, alerts=rows or _alerts(ctx, names), first=first, last=last, **common)
                for path, template in OVER_SERVICES.items()
            },
        )
        for path, text in found.items():
            parts[path].append(text)
    out = {
        f"{folder}/kustomization.yaml": ctx.template_kept(
            kept, "observability/kustomization.yaml.j2", service=None, **common
        )
    }
    # each file its blocks' texts joined, named by its blocks' keys (Kept.made), not hashed again
    out.update((path, kept.made(kept.key(["joined", path, keys]), "".join(texts))) for path, texts in parts.items())
    kept.save()
    return out


def render_mesh(ctx: RenderContext, mesh: Mesh) -> dict[str, str]:
    """One mesh's component: shared objects, one file per service, patches of base objects."""
    cat = ctx.catalog
    folder = f"{COMPONENTS}/{mesh.name}"
    who, allowed = callers(ctx), admitted(ctx, mesh)
    common: dict[str, Any] = {
        "header": GENERATED_HEADER,
        "names": naming,
        "mesh": mesh,
        "monitoring": monitoring_identity(ctx, mesh),
        "interval": SCRAPE_INTERVAL,
        "idempotent": "|".join(IDEMPOTENT),
        "infrastructure": [
            {"name": c, "port": cat.infrastructure[c].port, "identities": sorted(allowed[c])}
            for c in sorted(cat.infrastructure)
            if who.get(c)
        ],
        # managed instances: outside the mesh, registered so REGISTRY_ONLY sidecars may reach them
        "managed": [
            {"name": c, "host": ext.host, "port": ext.port}
            for c in sorted(cat.infrastructure)
            if (ext := cat.infrastructure[c].external) is not None and cat.users_of(c)
        ],
        "externals": [{"name": e, "host": external_host(ctx, e)} for e in sorted(cat.externals)],
        "targets": [_target(ctx, n, mesh, allowed) for n in sorted(cat.services)],
    }
    out: dict[str, str] = {}
    kept = ctx.kept(f"mesh-{mesh.name}")  # a service's file depends on its own target view alone
    own = {k: common[k] for k in ("header", "names", "mesh", "idempotent")}  # not the N targets
    for target in common["targets"]:
        out[f"{folder}/services/{target['name']}.yaml"] = ctx.template_kept(
            kept, f"mesh/{mesh.name}/service.yaml.j2", service=target["name"], t=target, **own
        )
    kept.save()
    for name in mesh.files:
        out[f"{folder}/{name}.yaml"] = ctx.template(f"mesh/{mesh.name}/{name}.yaml.j2", **common)
    resources = sorted(p.removeprefix(folder + "/") for p in out if not p.endswith("-patch.yaml"))
    patches = sorted(p.removeprefix(folder + "/") for p in out if p.endswith("-patch.yaml"))
    out[f"{folder}/kustomization.yaml"] = ctx.template(
        f"mesh/{mesh.name}/kustomization.yaml.j2", resources=resources, patches=patches, **common
    )
    return out


def render_docs(ctx: RenderContext) -> dict[str, str]:
    """The mesh page and who may call whom: an index page, and a page per team (linked by the docs index)."""
    cat = ctx.catalog
    teams: list[dict[str, Any]] = []
    for team, info in sorted(cat.teams.items()):
        members = sorted(n for n, s in cat.services.items() if s.team == team)
        if members:
            teams.append(
                {
                    "name": team,
                    "title": info.title,
                    "members": members,
                    "calls": sum(len(cat.services[m].depends_on) for m in members),
                }
            )
    default = _traffic(cat.platform.traffic)
    # most edges share the platform's settings, one object: each object's settings are worked
    # out once, not once per edge (29,000 edges at 10,000 services: 0.15 s)
    settings: dict[int, tuple[Traffic, dict[str, Any]]] = {}
    special = []
    for e in ctx.edges:
        t = ctx.traffic(e["source"], e["target"])
        if id(t) not in settings:
            settings[id(t)] = (t, _traffic(t))  # the object held: its id stays its own
        if (own := settings[id(t)][1]) != default:
            special.append({**e, **own})
    common: dict[str, Any] = {
        "header": GENERATED_HEADER,
        "names": naming,
        "meshes": MESHES,
        "teams": teams,
        "special": special,
        "callers": callers(ctx),
        "default": default,
        "sticky": sorted(n for n, svc in cat.services.items() if svc.session_affinity),
    }
    out = {
        "docs/architecture/mesh.md": ctx.template("mesh/docs/mesh.md.j2", **common),
        "docs/architecture/access-matrix.md": ctx.template("mesh/docs/access-matrix.md.j2", **common),
    }
    # a page per team, each linear in its services' edges (a single N x N matrix outgrew any
    # catalog), from its own rows alone: an edit that leaves a team's edges as they were takes
    # the page as it was (at 10,000 services six pages of 1,700 rows, a second of every edit)
    who = common["callers"]
    kept = ctx.kept("access")
    for page in teams:
        rows = [
            {
                "name": m,
                "hard": sorted(d for d, e in cat.services[m].depends_on.items() if e.kind == "hard"),
                "soft": sorted(d for d, e in cat.services[m].depends_on.items() if e.kind == "soft"),
                "callers": who[m],
            }
            for m in page["members"]
        ]
        out[f"docs/architecture/access/{page['name']}.md"] = ctx.template_kept(
            kept, "mesh/docs/access-team.md.j2", service=None, header=GENERATED_HEADER, team=page, rows=rows
        )
    kept.save()
    return out
