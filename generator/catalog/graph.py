"""The dependency graph in the forms other tools read: JSON (the machine view), Mermaid, DOT."""

from __future__ import annotations

import json
from typing import Any

from . import events
from .models import Catalog
from .plan import Plan


def edges(cat: Catalog) -> list[dict[str, str]]:
    """Every service-to-service edge, sorted: the one list policy, docs and checks derive from."""
    return [
        {"source": name, "target": dep, "kind": edge.kind}
        for name in sorted(cat.services)
        for dep, edge in sorted(cat.services[name].depends_on.items())
    ]


def relays(cat: Catalog, source: str) -> dict[str, str]:
    """Every service ``source`` reaches along declared edges (hard or soft) -> the dependency
    it asks first: the first step of a shortest path, ties broken by name. The gateway relays
    health probes this way, crossing only connections the NetworkPolicies allow."""
    first: dict[str, str] = {}
    frontier = [(dep, dep) for dep in sorted(cat.services[source].depends_on)]
    while frontier:
        following: list[tuple[str, str]] = []
        for name, via in frontier:
            if name == source or name in first:
                continue
            first[name] = via
            following.extend((dep, via) for dep in sorted(cat.services[name].depends_on))
        frontier = following
    return dict(sorted(first.items()))


def as_data(cat: Catalog, plan: Plan) -> dict[str, Any]:
    return {
        "services": [
            {
                "name": name,
                "port": svc.port,
                "category": svc.category,
                "team": svc.team,
                "description": svc.description,
                "stage": plan.stage_of[name],
                "wave": plan.wave_of[name],
                "dependencies": [{"name": d, "kind": e.kind} for d, e in sorted(svc.depends_on.items())],
                "uses": sorted(svc.uses),
            }
            for name, svc in sorted(cat.services.items())
        ],
        "infrastructure": [
            {"name": name, "kind": comp.kind, "port": comp.port, "wave": plan.wave_of.get(name)}
            for name, comp in sorted(cat.infrastructure.items())
        ],
        "edges": edges(cat),
        "channels": [
            {"name": name, "kind": ch.kind, "version": ch.message.version} for name, ch in sorted(cat.events.items())
        ],
        "event_edges": events.edges(cat),
    }


def as_json(cat: Catalog, plan: Plan) -> str:
    return json.dumps(as_data(cat, plan), indent=2, ensure_ascii=False) + "\n"


def as_mermaid(cat: Catalog, plan: Plan) -> str:
    """Services grouped by stage; hard edges solid, soft edges dotted."""
    lines = ["graph LR"]
    for stage in cat.stages:
        members = sorted(n for n in cat.services if plan.stage_of[n] == stage.name)
        if not members:
            continue
        lines.append(f"  subgraph stage_{stage.name.replace('-', '_')}[{_mermaid_string(stage.title)}]")
        lines.extend(f'    {_id(n)}["{n}:{cat.services[n].port}"]' for n in members)
        lines.append("  end")
    for e in edges(cat):
        arrow = "-->" if e["kind"] == "hard" else "-.->"
        lines.append(f"  {_id(e['source'])} {arrow} {_id(e['target'])}")
    # event channels are nodes of their own (a rounded box saying the kind), with thick arrows
    for name, ch in sorted(cat.events.items()):
        lines.append(f'  {_channel_id(name)}(["{name} ({ch.kind})"])')
    for e in events.edges(cat):
        ends = (_id(e["service"]), _channel_id(e["channel"]))
        source, target = ends if e["role"] == "publishes" else ends[::-1]
        lines.append(f"  {source} ==>|{e['kind']}| {target}")
    return "\n".join(lines) + "\n"


def as_dot(cat: Catalog, plan: Plan) -> str:
    lines = ["digraph nexus {", "  rankdir=LR;", "  node [shape=box];"]
    for i, stage in enumerate(cat.stages):
        members = sorted(n for n in cat.services if plan.stage_of[n] == stage.name)
        if not members:
            continue
        lines.append(f"  subgraph cluster_{i} {{ label={_dot_string(stage.title)};")
        lines.extend(f'    "{n}" [label="{n}\\n:{cat.services[n].port}"];' for n in members)
        lines.append("  }")
    for e in edges(cat):
        style = "" if e["kind"] == "hard" else " [style=dashed]"
        lines.append(f'  "{e["source"]}" -> "{e["target"]}"{style};')
    for name, ch in sorted(cat.events.items()):
        lines.append(f'  "channel:{name}" [shape=cds, label="{name}\\n({ch.kind})"];')
    for e in events.edges(cat):
        ends = (e["service"], f"channel:{e['channel']}")
        source, target = ends if e["role"] == "publishes" else ends[::-1]
        lines.append(f'  "{source}" -> "{target}" [style=bold, label="{e["kind"]}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


# Mermaid has no backslash escapes inside a quoted label: it takes entity codes (#quot;, #60;),
# which it decodes, so a '#' is one too (a title with '#quot;' in it stays that text), and
# labels are HTML, so '<', '>' and '&' are (a title with '<b>' in it is not made bold)
_MERMAID_CODES = str.maketrans({"#": "#35;", '"': "#quot;", "<": "#60;", ">": "#62;", "&": "#38;"})


def _mermaid_string(text: str) -> str:
    return '"' + text.translate(_MERMAID_CODES) + '"'


def _dot_string(text: str) -> str:
    # stage titles are free text: a '"' would end the DOT string early
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _channel_id(name: str) -> str:
    return "c_" + name.replace("-", "_")


def _id(name: str) -> str:
    # Mermaid ids cannot contain '-' (names are DNS labels, so '_' cannot collide), and a bare
    # name could be a keyword such as `end`; services get "s_", channels "c_", stages "stage_"
    return "s_" + name.replace("-", "_")


FORMATS = {"json": as_json, "mermaid": as_mermaid, "dot": as_dot}
