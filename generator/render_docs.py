"""Render area: docs. Markdown for people, rendered from the catalog and the deployment plan.

What a page shows is computed here as plain, sorted data (the views); the templates under
templates/docs/ only lay it out. Links point at explicit anchors (``<a id="flow-NAME">``)
built from catalog keys, which are DNS labels, so a link never depends on how a title is
spelled, and `checks` can verify every one of them before anything is written.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from . import render_mesh
from .errors import TemplateError
from .graph import as_mermaid
from .render import (  # noqa: F401 - re-exported for tests
    GENERATED_HEADER,
    RenderContext,
    fence,
    md_cell,
    md_line,
    md_link_text,
    md_text,
)

INDEX = "docs/services/README.md"

# Output path -> template, for the pages that are not one-per-service.
PAGES = {
    "docs/README.md": "docs/README.md.j2",
    INDEX: "docs/services-index.md.j2",
    "docs/services/service-template.md": "docs/service-template.md.j2",
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

# Files of generated/services/<name>/ that belong to the team: created once, never rewritten.
# "{pkg}" is the service's Python package. Everything else in the folder is regenerated.
TEAM_FILES = ("{pkg}/routes.py", "tests/test_routes.py")



def _hop(ctx: RenderContext, hop: object, prev: str | None) -> dict[str, Any]:
    cat = ctx.catalog
    if isinstance(hop, str):
        kind = cat.services[prev].depends_on[hop].kind if prev else None
        return {"name": hop, "external": False, "port": cat.services[hop].port, "kind": kind, "id": f"s_{hop.replace('-', '_')}"}
    name = hop.external  # type: ignore[attr-defined]
    return {"name": name, "external": True, "port": None, "kind": "external", "id": f"x_{name.replace('-', '_')}", "url": cat.externals[name].url}


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
        calls = [{"caller": a, "callee": b} for a, b in zip(hops, hops[1:])]
        out[key] = {"key": key, "title": flow.title, "description": flow.description, "hops": hops, "calls": calls, "participants": participants, "path": path}
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


def _service(ctx: RenderContext, name: str, stages: dict[str, dict[str, Any]], flows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    cat = ctx.catalog
    svc = cat.services[name]

    def peer(other: str, kind: str) -> dict[str, Any]:
        return {"name": other, "port": cat.services[other].port, "kind": kind, "description": cat.services[other].description}

    on_flows = []
    for key in ctx.flows_of[name]:
        hops = flows[key]["hops"]
        for i, hop in enumerate(hops):
            if hop["name"] == name and not hop["external"]:
                on_flows.append(
                    {"flow": flows[key], "position": i + 1, "total": len(hops), "previous": hops[i - 1] if i else None, "next": hops[i + 1] if i + 1 < len(hops) else None}
                )
    return {
        "name": name,
        "port": svc.port,
        "description": svc.description,
        "category": {"key": svc.category, "title": cat.categories[svc.category].title},
        "team": {"key": svc.team, **cat.teams[svc.team].model_dump()},
        "stage": stages[ctx.plan.stage_of[name]],
        "wave": ctx.plan.wave_of[name],
        "dependencies": [peer(d, e.kind) for d, e in sorted(svc.depends_on.items())],
        "dependents": [peer(d, cat.services[d].depends_on[name].kind) for d in ctx.dependents[name]],
        "infrastructure": [{"name": c, **cat.infrastructure[c].model_dump()} for c in sorted(set(svc.uses))],
        "externals": [{"name": x, **cat.externals[x].model_dump()} for x in sorted(set(svc.externals))],
        "flows": on_flows,
        "autoscaling": cat.autoscaling_for(name),
        "session_affinity": svc.session_affinity,
        "websocket": svc.websocket,
    }


def views(ctx: RenderContext) -> dict[str, Any]:
    """Everything the docs templates read, computed once; every list sorted or in catalog order."""
    cat = ctx.catalog
    stages = _stages(ctx)
    flows = _flows(ctx)
    by_stage = {s["key"]: s for s in stages}
    services = {n: _service(ctx, n, by_stage, flows) for n in sorted(cat.services)}
    by_port = sorted(services.values(), key=lambda s: (s["port"], s["name"]))
    stage_index = {s["key"]: s["number"] for s in stages}
    return {
        "header": GENERATED_HEADER,
        "platform": cat.platform,
        "health": [{"method": "GET", "path": getattr(cat.platform.health, key), "purpose": text} for key, text in HEALTH],
        "team_files": TEAM_FILES,
        "services": services,
        # Categories and teams keep the catalog's order: it is the spec's order of headings.
        "categories": [
            {"key": key, "title": c.title, "summary": c.summary, "services": [s for s in by_port if s["category"]["key"] == key]}
            for key, c in cat.categories.items()
        ],
        "teams": [
            {"key": key, **t.model_dump(), "services": [s for s in services.values() if s["team"]["key"] == key]}
            for key, t in cat.teams.items()
        ],
        "stages": stages,
        "flows": list(flows.values()),
        "infrastructure": [{"name": n, **c.model_dump(), "wave": ctx.plan.wave_of.get(n)} for n, c in sorted(cat.infrastructure.items())],
        "edges": ctx.edges,
        # Soft edges into a later stage: allowed, and the reason soft edges exist (the gateway).
        "forward_soft": [
            e for e in ctx.edges
            if e["kind"] == "soft" and stage_index[ctx.plan.stage_of[e["target"]]] > stage_index[ctx.plan.stage_of[e["source"]]]
        ],
        "mermaid": as_mermaid(cat, ctx.plan),
        "next_port": _next_port({s.port for s in cat.services.values()}),
    }


def _next_port(used: set[int]) -> int:
    """The first port above every one in use, else the lowest free one."""
    top = max(used, default=2999) + 1
    return top if top <= 65535 else min(set(range(1024, 65536)) - used)


# -- render -------------------------------------------------------------------------------------


def render(ctx: RenderContext) -> dict[str, str]:
    """Every docs file, keyed by its path under generated/."""
    docs = ctx
    v = views(ctx)
    out = {path: docs.template(template, **v) for path, template in PAGES.items()}
    taken = {p.lower(): p for p in out}
    for name, service in v["services"].items():
        path = f"docs/services/{name}.md"
        # Compared case-insensitively: a service named "readme" would clobber README.md on macOS.
        if path.lower() in taken:
            raise TemplateError(f"services.{name}: its page {path} would overwrite {taken[path.lower()]}; rename the service")
        out[path] = docs.template("docs/service.md.j2", service=name, s=service, **v)
    out.update(render_mesh.render_docs(ctx))  # the mesh area knows what its settings become
    return dict(sorted(out.items()))


# -- checks -------------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).*?(?<!`)\1(?!`)")  # runs of equal, maximal length
_LINK = re.compile(r"(?<!\\)\[(?:\\.|[^\\\]])*\]\(([^()\s]*)\)")
_ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
_HEADING = re.compile(r"^ {0,3}#{1,6} +(.*?)(?: +#+)? *$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str, spans: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; with ``spans``, code spans removed."""
    out, open_fence = [], ""
    for number, line in enumerate(text.split("\n"), 1):
        m = _FENCE.match(line) if "``" in line or "~~" in line else None
        if open_fence:
            if m and m.group(1)[0] == open_fence[0] and len(m.group(1)) >= len(open_fence):
                open_fence = ""
        elif m:
            open_fence = m.group(1)
        else:
            out.append((number, _CODE_SPAN.sub("", line) if spans and "`" in line else line))
    return out


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"<[^>]*>", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every fragment a link into ``text`` may name: explicit ids and heading slugs."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in prose_lines(text):
        found.update(_ANCHOR.findall(line))
        m = _HEADING.match(line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(files: dict[str, str]) -> list[str]:
    """Every relative link in a docs page must name a rendered file, and an anchor in it."""
    failures: list[str] = []
    cache: dict[str, set[str]] = {}
    for path, text in sorted(files.items()):
        if not (path.startswith("docs/") and path.endswith(".md")):
            continue
        for number, line in prose_lines(text):
            for target in _LINK.findall(line):
                if _URL.match(target):
                    continue
                file, _, fragment = target.partition("#")
                resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), file)) if file else path
                where = f"{path}:{number}: link {target}"
                if resolved.startswith("../") or resolved not in files:
                    failures.append(f"{where}: no rendered file {resolved}")
                elif fragment:
                    if resolved not in cache:
                        cache[resolved] = anchors(files[resolved])
                    if fragment not in cache[resolved]:
                        failures.append(f"{where}: {resolved} has no anchor #{fragment}")
    return failures


def cells(row: str) -> list[str]:
    """A Markdown table row's cells, split as GFM does: on pipes not escaped by a backslash."""
    parts = [""]
    for token in re.findall(r"\\.|\||[^|\\]+|\\", row.strip()):
        if token == "|":
            parts.append("")
        else:
            parts[-1] += token
    # The outer pipes delimit the row; they do not add empty cells.
    if parts[0] == "" and len(parts) > 1:
        parts = parts[1:]
    if parts[-1] == "" and len(parts) > 1:
        parts = parts[:-1]
    return [p.strip() for p in parts]


def expected_index(ctx: RenderContext) -> list[tuple[str, list[str]]]:
    """The services index's category headings and rows, derived from the catalog on its own."""
    cat = ctx.catalog
    out = []
    for key, category in cat.categories.items():
        members = sorted((s.port, n) for n, s in cat.services.items() if s.category == key)
        rows = [f"| {n} | {port} | {md_cell(cat.services[n].description)} | [{n}.md]({n}.md) |" for port, n in members]
        out.append((f"### {md_text(category.title)} ({len(members)})", rows))
    return out


def index_rows(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    """The services index lists exactly the catalog's services, under the right categories."""
    if INDEX not in files:
        return [f"{INDEX}: missing"]
    found: list[tuple[str, list[str]]] = []
    section, in_table = "", False
    # Code spans are kept: GFM splits a row into cells before it looks for them.
    for _, line in prose_lines(files[INDEX], spans=False):
        if line.startswith("## "):
            section = line
        elif section != "## Service Categories":
            continue
        elif line.startswith("### "):
            found.append((line, []))
        elif line.startswith("| Service |"):
            in_table = bool(found)
        elif not line.startswith("|"):
            in_table = False
        elif in_table and not line.startswith("|--"):
            found[-1][1].append(line)
    failures = []
    expected = expected_index(ctx)
    if [h for h, _ in found] != [h for h, _ in expected]:
        failures.append(f"{INDEX}: category headings {[h for h, _ in found]} differ from the catalog's {[h for h, _ in expected]}")
    # Compared by position: two categories may share a title.
    for i, (heading, rows) in enumerate(expected):
        got = found[i][1] if i < len(found) and found[i][0] == heading else []
        failures.extend(f"{INDEX}: {cells(row)[0]}: row missing under '{heading}' (expected {row})" for row in rows if row not in got)
        failures.extend(f"{INDEX}: unexpected row under '{heading}': {row}" for row in got if row not in rows)
        if sorted(got) == sorted(rows) and got != rows:
            failures.append(f"{INDEX}: rows under '{heading}' are not in port order")
    return failures


def missing_pages(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    return [f"docs/services/{n}.md: {n}: page missing" for n in sorted(ctx.catalog.services) if f"docs/services/{n}.md" not in files]


def checks(ctx: RenderContext, files: dict[str, str]) -> list[str]:
    """Pre-write checks for this area: one line per failure, naming the service and the file."""
    return [*missing_pages(ctx, files), *index_rows(ctx, files), *broken_links(files)]
