"""Render area: Kubernetes. A kustomize base under ``k8s/base`` and one overlay per environment.

The base holds the namespace (Pod Security "restricted"), a namespace-wide default deny, one
multi-document file per service (Deployment, Service, ServiceAccount, ConfigMap, HPA, PDB,
NetworkPolicy) and the ingress policies of the infrastructure the services use. Overlays only
patch what differs by environment (ENVIRONMENTS). Conventions the generated service code relies
on: object, container and ServiceAccount names are the service name; the ConfigMap is
``<name>-config`` with SERVICE_NAME, PORT and one ``<DEP>_URL`` per dependency; the container
port is named ``http``.

Checks of the rendered output live in k8s_checks (semantics) and k8s_schema (schemas).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from functools import partial
from typing import Any

from ..catalog import naming
from . import infrastructure
from . import mesh as render_mesh
from .context import GENERATED_HEADER, Kept, RenderContext

BASE = "k8s/base"
PSS_VERSION = "v1.32"  # the Kubernetes minor the manifests are validated against (k8s_schema)
SECURITY = {"uid": 10001, "tmp_size": "64Mi"}
# (probe, health endpoint, period s, timeout s, failures): startup allows 30 x 2 s to boot,
# after which liveness restarts a hung process and readiness takes a pod out of its Service.
PROBES = (
    ("startupProbe", "health", 2, 2, 30),
    ("livenessProbe", "live", 10, 2, 3),
    ("readinessProbe", "ready", 5, 2, 3),
)
# Egress to externals: the internet on 443, never the private ranges pods and nodes live in.
OUTSIDE = (
    ("0.0.0.0/0", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")),
    ("::/0", ("fc00::/7",)),
)


@dataclass(frozen=True)
class Environment:
    name: str
    summary: str
    min_replicas: int | None = None  # None: the catalog's
    max_replicas: int | None = None  # a cap on the catalog's; None: the catalog's
    request_share: Decimal | None = None  # requests scaled by this (limits kept); None: the catalog's
    settings: tuple[tuple[str, str], ...] = ()  # runtime settings (env var, value) of every service here


# The outside sees no API docs and no /platform routes in prod; dev and staging keep them, so
# `nexus verify --base-url` works there (docs/running.md, "Exposure").
PROD_SETTINGS = (("API_DOCS", "false"), ("PLATFORM_ROUTES", "false"))
ENVIRONMENTS = (
    Environment("dev", "one replica (at most two) and half the resource requests; limits kept", 1, 2, Decimal("0.5")),
    Environment("staging", "the catalog's numbers, as in prod: what is tested is what ships"),
    Environment("prod", "the catalog's numbers; no API docs, no /platform routes", settings=PROD_SETTINGS),
)
# The services' Deployments, which a patch with a target selects by label rather than by name
DEPLOYMENTS = {"kind": "Deployment", "labelSelector": "app.kubernetes.io/managed-by=nexus"}


def service_path(name: str) -> str:
    return f"{BASE}/services/{name}.yaml"


def config_of(ctx: RenderContext, name: str) -> dict[str, str]:
    """The ConfigMap data of a service: what its settings read from the environment."""
    cat = ctx.catalog
    data = {"SERVICE_NAME": name, "PORT": str(cat.services[name].port)}
    for dep in sorted(cat.services[name].depends_on):
        data[naming.url_variable(dep)] = f"http://{dep}:{cat.services[dep].port}"
    for comp in sorted(cat.services[name].uses):
        infra = cat.infrastructure[comp]
        host, port = infra.address(comp)
        # no password in a URL here: it is a file from a Secret (credentials_of), which the runtime adds
        data[naming.url_variable(comp)] = naming.connection_url(infra.engine, name, host, port)
        data["SECRETS_DIR"] = naming.SECRETS_DIR
        if infra.engine == "nats":  # the runtime's event layer connects as the service's own broker user
            data |= {"BROKER_SERVERS": f"nats://{host}:{port}", "BROKER_USER": name}
    return dict(sorted(data.items()))


def credentials_of(ctx: RenderContext, name: str) -> list[dict[str, Any]]:
    """The Secrets a service's pod mounts under naming.SECRETS_DIR: for each component it uses,
    its own password, as the file its runtime setting reads (the broker's also as broker_password,
    the runtime's event layer's setting)."""
    out = []
    for comp in sorted(ctx.catalog.services[name].uses):
        paths = [naming.password_setting(comp)]
        if ctx.catalog.infrastructure[comp].engine == "nats":
            paths.append("broker_password")
        out.append({"secret": naming.secret(comp, name), "paths": paths})
    return out


def migrations_of(ctx: RenderContext, name: str) -> str | None:
    """The variable holding the URL of the PostgreSQL component whose database a service's
    migrations (its team-owned migrations/ folder) run against; None without PostgreSQL."""
    cat = ctx.catalog
    comps = sorted(c for c in cat.services[name].uses if cat.infrastructure[c].engine == "postgres")
    return naming.url_variable(comps[0]) if comps else None


def labels_of(ctx: RenderContext, name: str) -> dict[str, str]:
    cat, svc = ctx.catalog, ctx.catalog.services[name]
    return {
        "app": name,  # the spec's `kubectl logs -l app=<service-name>`
        "app.kubernetes.io/component": svc.category,
        "app.kubernetes.io/managed-by": "nexus",
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": cat.platform.name,
        "app.kubernetes.io/version": cat.platform.version,
        "nexus.dev/team": svc.team,
    }


def _service(ctx: RenderContext, name: str) -> dict[str, Any]:
    cat = ctx.catalog
    svc = cat.services[name]
    config = config_of(ctx, name)
    return {
        "name": name,
        "port": svc.port,
        "description": svc.description,
        "contact": cat.teams[svc.team].contact,
        "labels": sorted(labels_of(ctx, name).items()),
        "wave": ctx.plan.wave_of[name],
        "image": f"{cat.platform.image_registry}/{name}:{cat.platform.version}",
        "config": sorted(config.items()),
        "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "session_affinity": svc.session_affinity,
        "gateway": name == cat.platform.gateway,
        "dependents": ctx.dependents[name],
        "deps": [{"name": d, "port": cat.services[d].port} for d in sorted(svc.depends_on)],
        "uses": [
            {"name": c, "port": cat.infrastructure[c].port}
            for c in sorted(svc.uses)
            if cat.infrastructure[c].external is None
        ],
        "managed": sorted(
            {(i.external.port, c) for c in svc.uses if (i := cat.infrastructure[c]).external is not None}
        ),
        "externals": sorted(svc.externals),
        "credentials": credentials_of(ctx, name),
        "migrations": migrations_of(ctx, name),
        "autoscaling": cat.autoscaling_for(name),
        "resources": cat.resources_for(name),
    }


def render(ctx: RenderContext) -> dict[str, str]:
    """Every file under k8s/, keyed by its path under generated/."""
    cat = ctx.catalog
    health = cat.platform.health
    common: dict[str, Any] = {"header": GENERATED_HEADER, "pss_version": PSS_VERSION, "names": naming}
    probes = [
        {"kind": k, "path": getattr(health, ep), "period": p, "timeout": t, "failures": f} for k, ep, p, t, f in PROBES
    ]
    out: dict[str, str] = {}
    kept = ctx.kept("k8s")  # a service's manifest depends on its own view (_service) alone
    for name in sorted(cat.services):
        out[service_path(name)] = ctx.template_kept(
            kept,
            "k8s/service.yaml.j2",
            service=name,
            view=partial(_service, ctx, name),
            probes=probes,
            security=SECURITY,
            outside=OUTSIDE,
            **common,
        )
    out[f"{BASE}/namespace.yaml"] = ctx.template("k8s/namespace.yaml.j2", **common)
    out[f"{BASE}/default-deny.yaml"] = ctx.template("k8s/default-deny.yaml.j2", **common)
    out.update(infrastructure.render(ctx, {**common, "security": SECURITY, "outside": OUTSIDE}))
    resources = sorted(p.removeprefix(BASE + "/") for p in out)
    out[f"{BASE}/kustomization.yaml"] = ctx.template("k8s/kustomization.yaml.j2", resources=resources, **common)
    for env in ENVIRONMENTS:
        out.update(_overlay(ctx, kept, env, common))
    kept.save()
    return dict(sorted(out.items()))


def _overlay(ctx: RenderContext, kept: Kept, env: Environment, common: dict[str, Any]) -> dict[str, str]:
    """An environment's patches: kept by what they are given (a patch per service, 10,000 in one
    file, rendered again only when a bound or a request changes)."""
    cat = ctx.catalog
    folder = f"k8s/overlays/{env.name}"
    replicas, requests = [], []
    for name in sorted(cat.services):
        auto = cat.autoscaling_for(name)
        low = auto.min_replicas if env.min_replicas is None else min(auto.min_replicas, env.min_replicas)
        high = auto.max_replicas if env.max_replicas is None else max(low, min(auto.max_replicas, env.max_replicas))
        if (low, high) != (auto.min_replicas, auto.max_replicas):
            replicas.append({"name": name, "min_replicas": low, "max_replicas": high})
        if env.request_share is not None:
            req = cat.resources_for(name).requests
            requests.append(
                {
                    "name": name,
                    "cpu": scale_quantity(req.cpu, env.request_share, cpu=True),
                    "memory": scale_quantity(req.memory, env.request_share),
                }
            )
    out: dict[str, str] = {}
    named = {"name": env.name}  # all the patches see of the environment: its shares are in the items
    if replicas:
        out[f"{folder}/autoscaling-patch.yaml"] = ctx.template_kept(
            kept, "k8s/autoscaling-patch.yaml.j2", service=None, env=named, items=replicas, **common
        )
    if requests:
        out[f"{folder}/resources-patch.yaml"] = ctx.template_kept(
            kept, "k8s/resources-patch.yaml.j2", service=None, env=named, items=requests, **common
        )
    if env.settings:
        out[f"{folder}/settings-patch.yaml"] = ctx.template("k8s/settings-patch.yaml.j2", env=env, **common)
    targets = {f"{folder}/settings-patch.yaml": DEPLOYMENTS}
    patches = [{"path": p.removeprefix(folder + "/"), "target": targets.get(p)} for p in sorted(out)]
    components = [f"../../components/{c}" for c in render_mesh.components(ctx)]  # mesh and monitoring
    out[f"{folder}/kustomization.yaml"] = ctx.template(
        "k8s/overlay.yaml.j2", env=env, patches=patches, components=components, **common
    )
    return out


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|Ki|Mi|Gi|Ti)?$")
_UNITS = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def scale_quantity(quantity: str, share: Decimal, *, cpu: bool = False) -> str:
    """``quantity`` times ``share``, rounded up: CPU in millicores, memory in the largest exact unit."""
    match = _QUANTITY.match(quantity)
    if not match:  # the catalog's Quantity type makes this unreachable; keep the value rather than guess
        return quantity
    amount = Decimal(match.group(1)) * _UNITS[match.group(2)] * share
    if cpu:
        return f"{max(1, int((amount * 1000).to_integral_value(ROUND_CEILING)))}m"
    size = max(1, int(amount.to_integral_value(ROUND_CEILING)))
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        if size % int(_UNITS[unit]) == 0:
            return f"{size // int(_UNITS[unit])}{unit}"
    return str(size)
