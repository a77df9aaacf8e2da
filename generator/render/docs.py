"""Render area: docs. Markdown for people, rendered from the catalog and the deployment plan.

What a page shows is computed here as plain, sorted data (the views); the templates under
templates/docs/ only lay it out. Links point at explicit anchors (``<a id="flow-NAME">``)
built from catalog keys, which are DNS labels, so a link never depends on how a title is
spelled, and `checks` can verify every one of them before anything is written.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

from ..catalog import messages, naming
from ..catalog.graph import as_mermaid
from ..catalog.ports import next_port
from ..errors import TemplateError
from . import events as render_events
from . import mesh as render_mesh
from .context import GENERATED_HEADER, RenderContext
from .services import team_files

INDEX = naming.SERVICES_INDEX_PAGE

# Output path -> template, for the pages that are not one-per-service.
PAGES = {
    "docs/README.md": "docs/README.md.j2",
    INDEX: "docs/services-index.md.j2",
    naming.SERVICE_TEMPLATE_PAGE: "docs/service-template.md.j2",
    "docs/architecture/service-map.md": "docs/service-map.md.j2",
    "docs/architecture/deployment-order.md": "docs/deployment-order.md.j2",
    "docs/architecture/critical-paths.md": "docs/critical-paths.md.j2",
}

# The spec's Service Health section, in its words; the paths themselves come from the catalog.
HEALTH = (
    ("health", "Basic health check"),
    ("ready", "Readiness probe: fails while a hard dependency is unreachable"),
    ("live", "Liveness probe: never depends on another service"),
    ("metrics", "Prometheus metrics"),
)

EXAMPLE = "my-service"  # the name the service-template page's examples use


def _hop(ctx: RenderContext, hop: object, prev: str | None) -> dict[str, Any]:
    cat = ctx.catalog
    if isinstance(hop, str):
        kind = cat.services[prev].depends_on[hop].kind if prev else None
        return {
            "name": hop,
            "external": False,
            "port": cat.services[hop].port,
            "kind": kind,
            "id": f"s_{hop.replace('-', '_')}",
        }
    name = hop.external  # type: ignore[attr-defined]
    return {
        "name": name,
        "external": True,
        "port": None,
        "kind": "external",
        "id": f"x_{name.replace('-', '_')}",
        "url": cat.externals[name].url,
    }


def _flows(ctx: RenderContext) -> dict[str, dict[str, Any]]:
    out = {}
    for key, flow in sorted(ctx.catalog.flows.items()):
        hops, prev = [], None
        for hop in flow.hops:
            hops.append(_hop(ctx, hop, prev))
            prev = hop if isinstance(hop, str) else None
        # Each participant once, in order of first appearance (a flow may pass a service twice).
        participants = list({h["id"]: h for h in hops}.values())
        path = " → ".join(["Client", *(h["name"] + (" (external)" if h["external"] else "") for h in hops)])
        calls = [{"caller": a, "callee": b} for a, b in itertools.pairwise(hops)]
        out[key] = {
            "key": key,
            "title": flow.title,
            "description": flow.description,
            "hops": hops,
            "calls": calls,
            "participants": participants,
            "path": path,
        }
    return out


def _stages(ctx: RenderContext) -> list[dict[str, Any]]:
    return [
        {
            "number": i,
            "key": stage.name,
            "title": stage.title,
            "description": stage.description,
            "waves": [w for w in ctx.plan.waves if w.stage == stage.name],
        }
        for i, stage in enumerate(ctx.catalog.stages, 1)
    ]


def _dumped(ctx: RenderContext) -> dict[str, dict[str, dict[str, Any]]]:
    """Each team, component and external as the service views show it, dumped once: dumped for
    each service that names it, it was a third of building the views at 10,000 services. (The
    views share these dicts; templates only read them.)"""
    cat = ctx.catalog
    return {
        "teams": {k: {"key": k, **t.model_dump()} for k, t in cat.teams.items()},
        "infrastructure": {n: {"name": n, **c.model_dump()} for n, c in cat.infrastructure.items()},
        "externals": {n: {"name": n, **x.model_dump()} for n, x in cat.externals.items()},
    }


def _row(
    ctx: RenderContext, name: str, stages: dict[str, dict[str, Any]], dumped: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    """What the index pages show of a service: each lists every service, so only this is built
    for all of them (a service's own page, ``_service``, is built when it renders again)."""
    cat = ctx.catalog
    svc = cat.services[name]
    return {
        "name": name,
        "port": svc.port,
        "description": svc.description,
        "category": {"key": svc.category, "title": cat.categories[svc.category].title},
        "team": dumped["teams"][svc.team],
        # the stage by name and number only: its waves list services, and a page is kept by its
        # view's content (a view that held the stage's services would grow with the catalog)
        "stage": {k: stages[ctx.plan.stage_of[name]][k] for k in ("key", "number", "title")},
        "wave": ctx.plan.wave_of[name],
        "dependency_count": len(svc.depends_on),
        "dependent_count": len(ctx.dependents[name]),
        "session_affinity": svc.session_affinity,
        "websocket": svc.websocket,
        "events": _events(ctx, name),
    }


def _service(
    ctx: RenderContext,
    name: str,
    stages: dict[str, dict[str, Any]],
    flows: dict[str, dict[str, Any]],
    dumped: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """A service's page: its row, and its peers, components, flows and files."""
    cat = ctx.catalog
    svc = cat.services[name]

    def peer(other: str, kind: str) -> dict[str, Any]:
        return {
            "name": other,
            "port": cat.services[other].port,
            "kind": kind,
            "description": cat.services[other].description,
        }

    on_flows = []
    for key in ctx.flows_of[name]:
        hops = flows[key]["hops"]
        for i, hop in enumerate(hops):
            if hop["name"] == name and not hop["external"]:
                on_flows.append(
                    {
                        # what the page shows of the flow: the other hops are not its neighbours
                        # (RenderContext.hood)
                        "flow": {k: flows[key][k] for k in ("key", "title")},
                        "position": i + 1,
                        "total": len(hops),
                        "previous": hops[i - 1] if i else None,
                        "next": hops[i + 1] if i + 1 < len(hops) else None,
                    }
                )
    return {
        **_row(ctx, name, stages, dumped),
        "dependencies": [peer(d, e.kind) for d, e in sorted(svc.depends_on.items())],
        "dependents": [peer(d, cat.services[d].depends_on[name].kind) for d in ctx.dependents[name]],
        "infrastructure": [dumped["infrastructure"][c] for c in sorted(set(svc.uses))],
        "externals": [dumped["externals"][x] for x in sorted(set(svc.externals))],
        "flows": on_flows,
        # the gateway's WebSocket relays (nexus_runtime.live.relay_router): its live dependencies
        "relays": cat.relayed_live() if name == cat.platform.gateway else [],
        "autoscaling": cat.autoscaling_for(name),
        "team_files": team_files(name, postgres=any(cat.infrastructure[c].engine == "postgres" for c in svc.uses)),
    }


def _events(ctx: RenderContext, name: str) -> list[dict[str, Any]]:
    """The service's event edges, each with the services on the channel's other side."""
    cat = ctx.catalog
    out = []
    for e in ctx.event_edges_of.get(name, []):
        ch = cat.events[e["channel"]]
        others = ch.subscribers if e["role"] == "publishes" else ch.publishers
        out.append(
            {
                **e,
                "subject": messages.subject(e["channel"], ch.message.version),
                "others": sorted(set(others) - {name}),
            }
        )
    return out


def views(ctx: RenderContext) -> dict[str, Any]:
    """Everything the docs templates read, computed once; every list sorted or in catalog order.
    ``page``: what builds a service's page view (``_service``), by its name."""
    cat = ctx.catalog
    stages = _stages(ctx)
    flows = _flows(ctx)
    by_stage = {s["key"]: s for s in stages}
    dumped = _dumped(ctx)
    services = {n: _row(ctx, n, by_stage, dumped) for n in sorted(cat.services)}
    by_port = sorted(services.values(), key=lambda s: (s["port"], s["name"]))
    stage_index = {s["key"]: s["number"] for s in stages}
    return {
        "header": GENERATED_HEADER,
        "platform": cat.platform,
        "health": [
            {"method": "GET", "path": getattr(cat.platform.health, key), "purpose": text} for key, text in HEALTH
        ],
        "example_team_files": team_files(EXAMPLE),
        "services": services,
        # Categories and teams keep the catalog's order: it is the spec's order of headings.
        "categories": [
            {
                "key": key,
                "title": c.title,
                "summary": c.summary,
                "services": [s for s in by_port if s["category"]["key"] == key],
            }
            for key, c in cat.categories.items()
        ],
        "teams": [
            {**dumped["teams"][key], "services": [s for s in services.values() if s["team"]["key"] == key]}
            for key in cat.teams
        ],
        "stages": stages,
        "flows": list(flows.values()),
        "infrastructure": [
            {**dumped["infrastructure"][n], "wave": ctx.plan.wave_of.get(n)} for n in sorted(cat.infrastructure)
        ],
        "edges": ctx.edges,
        # Soft edges into a later stage: allowed, and the reason soft edges exist (the gateway).
        "forward_soft": [
            e
            for e in ctx.edges
            if e["kind"] == "soft"
            and stage_index[ctx.plan.stage_of[e["target"]]] > stage_index[ctx.plan.stage_of[e["source"]]]
        ],
        "mermaid": as_mermaid(cat, ctx.plan),
        "channels": [
            {
                "name": name,
                "kind": ch.kind,
                "subject": messages.subject(name, ch.message.version),
                "publishers": sorted(set(ch.publishers)),
                "subscribers": sorted(set(ch.subscribers)),
            }
            for name, ch in sorted(cat.events.items())
        ],
        "next_port": next_port(cat, next(iter(cat.categories))) if cat.categories else None,
        "page": partial(_service, ctx, stages=by_stage, flows=flows, dumped=dumped),
    }


# -- render -------------------------------------------------------------------------------------


def render(ctx: RenderContext) -> dict[str, str]:
    """Every docs file, keyed by its path under generated/."""
    docs = ctx
    v = views(ctx)
    out = {path: docs.template(template, **v) for path, template in PAGES.items()}
    taken = {p.lower(): p for p in out}
    kept = ctx.kept("docs")  # a service's page depends on its own view (_service) alone
    page = {"header": v["header"], "health": v["health"], "stage_count": len(v["stages"])}
    for name in v["services"]:
        path = naming.service_page(name)
        # Validation refuses a name whose page clashes (naming.claims); this guards a Catalog built
        # in Python without it. Compared case-insensitively: "readme" would clobber README.md on macOS.
        if path.lower() in taken:
            raise TemplateError(
                f"services.{name}: its page {path} would overwrite {taken[path.lower()]}; rename the service"
            )
        # found by the service's neighbourhood and stage, its view built only when they changed
        out[path] = ctx.template_kept(
            kept, "docs/service.md.j2", service=name, view=partial(v["page"], name=name), staged=True, **page
        )
    kept.save()
    out.update(render_mesh.render_docs(ctx))  # the mesh area knows what its settings become
    out.update(render_events.render_docs(ctx))  # the events area writes the AsyncAPI documents
    return dict(sorted(out.items()))
