"""The docs area: the services index reproduces the spec, every link resolves, each page says
what it must, the output is deterministic, and any catalog text comes out intact."""

from __future__ import annotations

import random
import re
from typing import Any

import markdown_it
import pytest
import yaml
from conftest import CATALOG, SPEC, dump
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus.catalog import load_catalog, load_catalog_text
from nexus.catalog.models import Catalog
from nexus.catalog.naming import pkg
from nexus.catalog.plan import plan
from nexus.checks import docs as docs_checks
from nexus.checks.docs import broken_links, cells, prose_lines
from nexus.checks.docs import run as checks
from nexus.errors import CatalogError, TemplateError
from nexus.render import RenderContext
from nexus.render.docs import INDEX, render
from nexus.render.text import md_cell, md_line, md_text


def docs_for(loaded: Any) -> tuple[RenderContext, dict[str, str]]:
    ctx = RenderContext(loaded.catalog, loaded.plan)
    return ctx, render(ctx)


@pytest.fixture(scope="module")
def shipped() -> tuple[RenderContext, dict[str, str]]:
    return docs_for(load_catalog(CATALOG))


def category_tables(markdown: str) -> dict[str, set[str]]:
    """'### Title (N)' -> the rows of the table under it, in the Service Categories section."""
    tables: dict[str, set[str]] = {}
    section, heading = "", None
    for line in markdown.splitlines():
        if line.startswith("## "):
            section, heading = line, None
        elif section == "## Service Categories" and line.startswith("### "):
            heading = line
            tables[heading] = set()
        elif heading and line.startswith("| ") and not line.startswith("| Service |"):
            tables[heading].add(line.rstrip())
    return tables


def section(page: str, title: str) -> str:
    """The text of one '## ' section of a page."""
    start = page.index(f"\n## {title}\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else None]


def tables(markdown: str) -> list[list[str]]:
    """Every table: its header row followed by its body rows."""
    lines = markdown.split("\n")
    out = []
    for i in range(1, len(lines)):
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i]) and lines[i - 1].startswith("|"):
            rows = [lines[i - 1]]
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                rows.append(lines[j])
                j += 1
            out.append(rows)
    return out


# markdown-it-py (a dependency of rich) parses as GitHub does: an independent view of the structure.
MARKDOWN = markdown_it.MarkdownIt("commonmark").enable("table")


def same_structure_as_a_real_parser(text: str) -> bool:
    """The tables, rows and headings we see are the ones a Markdown parser sees."""
    tokens = MARKDOWN.parse(text)
    ours = tables(text)
    headings = sum(1 for _, line in prose_lines(text, spans=False) if re.match(r"#{1,6} ", line))
    return (
        sum(t.type == "table_open" for t in tokens) == len(ours)
        and sum(t.type == "tr_open" for t in tokens) == sum(len(rows) for rows in ours)
        and sum(t.type == "heading_open" for t in tokens) == headings
    )


# -- the services index against the spec --------------------------------------------------------


def test_index_reproduces_the_spec_rows_per_category(shipped: Any) -> None:
    if not SPEC.exists():
        pytest.skip(f"spec not found at {SPEC}")
    _, files = shipped
    spec = category_tables(SPEC.read_text(encoding="utf-8"))
    ours = category_tables(files[INDEX])
    assert len(spec) == 9 and sum(len(rows) for rows in spec.values()) == 43  # the parse found the spec
    assert list(ours) == list(spec)  # headings, counts and order
    for heading, rows in spec.items():
        assert ours[heading] == rows, heading


def test_index_orders_rows_by_port(shipped: Any) -> None:
    _, files = shipped
    for rows in tables(files[INDEX]):
        if rows[0].startswith("| Service | Port |"):
            ports = [int(cells(r)[1]) for r in rows[1:]]
            assert ports == sorted(ports)


def test_index_has_the_specs_other_sections(shipped: Any) -> None:
    _, files = shipped
    index = files[INDEX]
    for heading in (
        "## Overview",
        "### Critical Paths",
        "## Deployment Order",
        "## Service Health",
        "## Common Operations",
        "## Service Ownership",
        "## Support",
    ):
        assert f"\n{heading}\n" in index
    assert "consists of 43 microservices" in index and "**Total Services**: 43" in index
    assert "   Client → backend-api → auth-service → user-auth → session-mgr → token-mgr\n" in index
    assert "   Client → backend-api → content-management → streamcore → cdn (external)\n" in index
    assert "1. **Infrastructure**: Databases, Redis, message queues\n" in index
    for path in ("/health", "/health/ready", "/health/live", "/metrics"):
        assert f"- `GET {path}` - " in index
    assert "**Core Platform**: [auth-service](auth-service.md)," in index
    assert "| Core Platform | owner+platform@nexuscos.example.com | owner+oncall@nexuscos.example.com |" in index


# -- links and checks ---------------------------------------------------------------------------


def test_the_shipped_docs_parse_as_we_read_them(shipped: Any) -> None:
    _, files = shipped
    for path, text in files.items():
        assert same_structure_as_a_real_parser(text), path


def test_every_relative_link_resolves(shipped: Any) -> None:
    ctx, files = shipped
    links = sum(
        len(docs_checks._LINK.findall(line)) for text in files.values() for _, line in docs_checks.prose_lines(text)
    )
    assert links > 43 * 10  # the link parser really sees the links
    assert broken_links(files) == []
    assert checks(ctx, files) == []


def test_every_page_is_reachable_from_the_docs_readme(shipped: Any) -> None:
    _, files = shipped
    readme = files["docs/README.md"]
    for path in files:
        if path != "docs/README.md":
            assert f"]({path.removeprefix('docs/')})" in readme, path


def test_checks_name_a_missing_page(shipped: Any) -> None:
    ctx, files = shipped
    broken = {p: t for p, t in files.items() if p != "docs/services/token-mgr.md"}
    failures = checks(ctx, broken)
    assert "docs/services/token-mgr.md: token-mgr: page missing" in failures
    # ...and every link to it is reported, with the file and line it is on: each page of the
    # folder that links to it (the verdict on one link is shared by the pages beside it)
    linking = sorted(
        f"{p}:{n}"
        for p, text in broken.items()
        if p.startswith("docs/services/")
        for n, line in docs_checks.prose_lines(text)
        if "](token-mgr.md)" in line
    )
    assert len(linking) > 1
    named = sorted(
        f.split(": link token-mgr.md:")[0]
        for f in failures
        if "link token-mgr.md: no rendered file docs/services/token-mgr.md" in f
    )
    assert named == linking


def test_checks_name_a_broken_link_and_a_missing_anchor(shipped: Any) -> None:
    ctx, files = shipped
    page = "docs/services/streamcore.md"
    broken = dict(files)
    broken[page] = (
        files[page].replace("(key-service.md)", "(key-servce.md)").replace("#flow-content-delivery", "#flow-nope")
    )
    failures = checks(ctx, broken)
    assert any(
        f.startswith(f"{page}:") and "link key-servce.md: no rendered file docs/services/key-servce.md" in f
        for f in failures
    )
    assert any(f.startswith(f"{page}:") and "critical-paths.md has no anchor #flow-nope" in f for f in failures)


def test_every_wrong_link_is_named_once_per_occurrence_in_the_pages_order(shipped: Any) -> None:
    """Targets are looked at once each, by where they resolve from, but every occurrence of a
    wrong one is named with its line, page by page and in each page's order: two on one line
    (the later target first), the same one twice, a bare #fragment, one in another folder."""
    _, files = shipped
    page, other = "docs/services/streamcore.md", "docs/architecture/service-map.md"
    broken = {
        **files,
        page: files[page] + "\n[z](zz.md) and [a](aa.md)\n\n[again](zz.md) [here](#nowhere) [ok](#dependents)\n",
        other: files[other] + "\n[z](zz.md)\n",
    }
    assert "\n## Dependents\n" in files[page]  # the anchor #dependents, which resolves
    last = broken[page].count("\n")
    lines = broken[other].count("\n")
    assert broken_links(broken) == [
        f"{other}:{lines}: link zz.md: no rendered file docs/architecture/zz.md",
        f"{page}:{last - 2}: link zz.md: no rendered file docs/services/zz.md",
        f"{page}:{last - 2}: link aa.md: no rendered file docs/services/aa.md",
        f"{page}:{last}: link zz.md: no rendered file docs/services/zz.md",
        f"{page}:{last}: link #nowhere: {page} has no anchor #nowhere",
    ]


def test_checks_refuse_a_link_out_of_the_tree(shipped: Any) -> None:
    ctx, files = shipped
    broken = {**files, "docs/README.md": files["docs/README.md"] + "\n[up](../../catalog.yaml)\n"}
    assert any("docs/README.md:" in f and "no rendered file ../catalog.yaml" in f for f in checks(ctx, broken))


def test_checks_ignore_links_in_code(shipped: Any) -> None:
    ctx, files = shipped
    extra = "\n```text\n[not a link](nowhere.md)\n```\n\nInline `[nor this](nowhere.md)` either.\n"
    assert checks(ctx, {**files, "docs/README.md": files["docs/README.md"] + extra}) == []


def test_checks_catch_a_wrong_index_row(shipped: Any) -> None:
    ctx, files = shipped
    broken = {
        **files,
        INDEX: files[INDEX].replace("| 3001 | Primary authentication service |", "| 3001 | Primary auth service |"),
    }
    failures = checks(ctx, broken)
    assert (
        f"{INDEX}: auth-service: row missing under '### Core Services (5)' (expected | auth-service | 3001 | Primary "
        "authentication service | [auth-service.md](auth-service.md) |)" in failures
    )
    assert any(f.startswith(f"{INDEX}: unexpected row under '### Core Services (5)'") for f in failures)


def test_checks_catch_rows_out_of_port_order_and_a_wrong_count(shipped: Any) -> None:
    ctx, files = shipped
    first = "| auth-service | 3001 | Primary authentication service | [auth-service.md](auth-service.md) |"
    second = (
        "| auth-service-v2 | 3002 | Enhanced authentication with OAuth 2.0 | [auth-service-v2.md](auth-service-v2.md) |"
    )
    swapped = files[INDEX].replace(first, "@@").replace(second, first).replace("@@", second)
    assert checks(ctx, {**files, INDEX: swapped}) == [
        f"{INDEX}: rows under '### Core Services (5)' are not in port order"
    ]
    miscounted = files[INDEX].replace("### Core Services (5)", "### Core Services (6)")
    assert any("category headings" in f for f in checks(ctx, {**files, INDEX: miscounted}))


# -- service pages ------------------------------------------------------------------------------


def test_each_service_page_says_what_it_must(shipped: Any) -> None:
    ctx, files = shipped
    cat = ctx.catalog
    for name, svc in cat.services.items():
        page = files[f"docs/services/{name}.md"]
        assert page.startswith("<!-- Generated by nexus")
        assert f"# {name}\n" in page and f"**What it is**: {svc.description}\n" in page
        assert f"| Port | {svc.port} " in page
        team = cat.teams[svc.team]
        assert f"[{team.title}](README.md#team-{svc.team}): questions to {team.contact}, on-call {team.oncall}" in page
        deps = section(page, "Dependencies")
        for dep, edge in svc.depends_on.items():
            assert f"| [{dep}]({dep}.md) | {cat.services[dep].port} | {edge.kind} |" in deps
        dependents = section(page, "Dependents")
        for other in ctx.dependents[name]:
            assert (
                f"| [{other}]({other}.md) | {cat.services[other].port} | {cat.services[other].depends_on[name].kind} |"
                in dependents
            )
        for comp in svc.uses:
            assert f"| {comp} | {cat.infrastructure[comp].kind} |" in section(page, "Infrastructure")
        paths = section(page, "Critical Paths")
        endpoints = section(page, "Endpoints")
        for flow in ctx.flows_of[name]:
            assert f"(../architecture/critical-paths.md#flow-{flow})" in paths
            assert f"| GET | `/flows/{flow}` |" in endpoints
        for path in ("/health", "/health/ready", "/health/live", "/metrics"):
            assert f"| GET | `{path}` |" in endpoints
        assert ("| WebSocket | `/ws` |" in endpoints) == svc.websocket
        stage = next(s for s in cat.stages if s.name == ctx.plan.stage_of[name])
        wave = ctx.plan.wave_of[name]
        assert (
            f"[{stage.title}](../architecture/deployment-order.md#stage-{stage.name}); wave "
            f"[{wave}](../architecture/deployment-order.md#wave-{wave})" in page
        )
        assert f"**{stage.title}**, in wave {wave}" in section(page, "Deployment")
        scaling = cat.autoscaling_for(name)
        ops = section(page, "Common Operations")
        assert f"kubectl scale deployment/{name} " in ops
        assert (
            f"kubectl autoscale deployment/{name} \\\n  --min={scaling.min_replicas} --max={scaling.max_replicas} "
            f"--cpu-percent={scaling.cpu_percent} -n nexus-cos" in ops
        )
        assert f"kubectl logs -n nexus-cos -l app={name} --tail=100" in ops
        assert f"kubectl rollout restart deployment/{name} -n nexus-cos" in ops
        assert f"kubectl delete pod -n nexus-cos -l app={name}" in ops
        assert f"- `{pkg(name)}/routes.py`" in section(page, "Source Code")
        assert ("mesh.md#session-affinity" in page) == svc.session_affinity
        # the gateway lists its WebSocket relays, one per live dependency; no other page has one
        relays = re.findall(r"^\| WebSocket \| `/live/([a-z0-9-]+)` \|", section(page, "Endpoints"), re.M)
        gateway = name == cat.platform.gateway
        assert relays == (sorted(d for d in svc.depends_on if cat.services[d].websocket) if gateway else [])


def test_flow_positions_and_next_hops(shipped: Any) -> None:
    _, files = shipped
    assert (
        "| [Authentication Flow](../architecture/critical-paths.md#flow-authentication) | 3 of 5 | "
        "[auth-service](auth-service.md) | [session-mgr](session-mgr.md) |" in files["docs/services/user-auth.md"]
    )
    assert (
        "| 3 of 4 | [content-management](content-management.md) | cdn (external) |"
        in files["docs/services/streamcore.md"]
    )
    assert "| 5 of 5 | [session-mgr](session-mgr.md) | end of the path |" in files["docs/services/token-mgr.md"]


def test_a_services_own_autoscaling_reaches_its_page(minimal: dict[str, Any]) -> None:
    minimal["services"]["media"]["autoscaling"] = {"min_replicas": 3, "max_replicas": 7, "cpu_percent": 55}
    _, files = docs_for(load_catalog_text(dump(minimal)))
    assert "--min=3 --max=7 --cpu-percent=55 -n demo" in files["docs/services/media.md"]
    assert "--min=2 --max=10 --cpu-percent=70 -n demo" in files["docs/services/auth.md"]


# -- architecture pages -------------------------------------------------------------------------


def test_architecture_pages(shipped: Any) -> None:
    ctx, files = shipped
    service_map = files["docs/architecture/service-map.md"]
    assert (
        "```mermaid\ngraph LR\n" in service_map
        and "  s_backend_api --> s_auth_service\n" in service_map
        and "  s_backend_api -.-> s_billing_service\n" in service_map
    )
    assert "Solid arrow" in service_map and "Dotted arrow" in service_map
    order = files["docs/architecture/deployment-order.md"]
    for wave in ctx.plan.waves:
        assert f'| <a id="wave-{wave.number}"></a>{wave.number} |' in order
    assert order.index("## 1. Infrastructure") < order.index("## 2. Core Services") < order.index("## 5. Frontend")
    assert (
        "| [backend-api](../services/backend-api.md) | [creator-hub-v2](../services/creator-hub-v2.md) | 3 → 5 |"
        in order
    )
    paths = files["docs/architecture/critical-paths.md"]
    assert "| 4 | cdn (external) | n/a | reported, not called" in paths
    assert paths.count("sequenceDiagram") == 3
    assert "  Note over s_streamcore,x_cdn: external: reported, not called\n" in paths
    onboarding = files["docs/services/service-template.md"]
    assert "nexus new NAME --category C --team T [--port P] [--depends-on A,B:soft]" in onboarding
    assert "cookiecutter path/to/nexus/templates/service" in onboarding


# -- determinism and bad input ------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_order_of_the_catalog_changes_nothing(shipped: Any, seed: int) -> None:
    _, files = shipped
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    rng = random.Random(seed)

    def shuffled(mapping: dict[str, Any]) -> dict[str, Any]:
        items = list(mapping.items())
        rng.shuffle(items)
        return dict(items)

    for svc in data["services"].values():
        svc["depends_on"] = shuffled(svc.get("depends_on", {}))
        rng.shuffle(svc.setdefault("uses", []))
    data["services"] = shuffled(data["services"])
    data["infrastructure"] = shuffled(data["infrastructure"])
    data["flows"] = shuffled(data["flows"])
    _, again = docs_for(load_catalog_text(dump(data)))
    assert again == files


BAD = 'Say "hi": {{ x }} {% if %} #1 | a|b\\c\nnext line\rcafé ñ 漢字 😀'


def test_catalog_text_comes_out_intact(minimal: dict[str, Any]) -> None:
    minimal["services"]["gateway"]["description"] = BAD
    minimal["categories"]["platform"] = {
        "title": 'Platform {{ y }} | "Services" #',
        "summary": "# not a heading: {% raw %}",
    }
    minimal["categories"]["empty"] = {"title": "Empty", "summary": "Nothing yet:"}
    minimal["flows"]["login"]["title"] = "Login [beta] {{ z }} | ü"
    minimal["teams"]["core"]["title"] = "Core: {{ t }} 'ops'"
    ctx, files = docs_for(load_catalog_text(dump(minimal)))
    assert checks(ctx, files) == []
    index = files[INDEX]
    assert f"| gateway | 4000 | {md_cell(BAD)} | [gateway.md](gateway.md) |" in index
    assert md_cell(BAD) == 'Say "hi": {{ x }} {% if %} #1 \\| a\\|b\\\\c<br>next line<br>café ñ 漢字 😀'
    assert '### Platform {{ y }} | "Services" # (3)\n' in index
    assert "\n\\# not a heading: {% raw %}\n" in index
    assert "### Empty (0)\n\nNothing yet:\n\nNo services in this category yet.\n" in index
    page = files["docs/services/gateway.md"]
    assert f"**What it is**: {md_text(BAD)}\n" in page
    assert "[Login \\[beta\\] {{ z }} \\| ü](../architecture/critical-paths.md#flow-login)" in page
    assert "## Login [beta] {{ z }} | ü\n" in files["docs/architecture/critical-paths.md"]
    assert "- <a id=\"team-core\"></a>**Core: {{ t }} 'ops'**: [auth](auth.md)" in index
    for path, text in files.items():
        for rows in tables(text):
            assert {len(cells(r)) for r in rows} == {len(cells(rows[0]))}, (path, rows)
        assert same_structure_as_a_real_parser(text), path


def test_two_categories_may_share_a_title(minimal: dict[str, Any]) -> None:
    minimal["categories"]["twin"] = {"title": "Platform Services", "summary": "The other one:"}
    minimal["services"]["media"]["category"] = "twin"
    minimal["services"]["extra"] = {"port": 4005, "category": "twin", "team": "core", "description": "Extra"}
    ctx, files = docs_for(load_catalog_text(dump(minimal)))
    assert files[INDEX].count("### Platform Services (2)") == 2
    assert checks(ctx, files) == []


def test_a_service_page_may_not_overwrite_another_page(minimal: dict[str, Any]) -> None:
    minimal["services"]["readme"] = {"port": 4010, "category": "platform", "team": "core", "description": "Clash"}
    # validation refuses the name (naming.claims); the renderer still guards a Catalog built in Python
    with pytest.raises(CatalogError, match=r"docs page 'docs/services/readme\.md', the name of the services index"):
        load_catalog_text(dump(minimal))
    cat = Catalog.model_validate(minimal)
    with pytest.raises(
        TemplateError,
        match=r"services\.readme: its page docs/services/readme\.md would overwrite docs/services/README\.md",
    ):
        render(RenderContext(cat, plan(cat)))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("# x", "\\# x"),
        ("1. x", "1\\. x"),
        ("    - x", "\\- x"),
        ("[a]: b", "\\[a]: b"),
        ("plain: #1", "plain: #1"),
        ("a\n# b", "a # b"),
    ],
)
def test_md_line_never_starts_a_block(text: str, line: str) -> None:
    assert md_line(text) == line


# Any text but lone surrogates, which no file can hold, and whitespace alone, which the catalog refuses.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(descriptions=st.lists(TEXT, min_size=3, max_size=3), flow_title=TEXT, category=st.tuples(TEXT, TEXT))
def test_any_text_renders_with_whole_table_rows(
    minimal: dict[str, Any], descriptions: list[str], flow_title: str, category: tuple[str, str]
) -> None:
    for svc, text in zip(minimal["services"].values(), descriptions, strict=False):
        svc["description"] = text
    minimal["flows"]["watch"]["title"] = flow_title
    minimal["categories"]["platform"] = {"title": category[0], "summary": category[1]}
    cat = Catalog.model_validate(minimal)
    ctx = RenderContext(cat, plan(cat))
    files = render(ctx)
    assert docs_checks.index_rows(ctx, files) == []
    for path, text in files.items():
        for rows in tables(text):
            assert {len(cells(r)) for r in rows} == {len(cells(rows[0]))}, (path, rows)
        assert same_structure_as_a_real_parser(text), path
    for name, svc in cat.services.items():
        assert f"**What it is**: {md_text(svc.description)}\n" in files[f"docs/services/{name}.md"]
    if not any("](" in t or "<" in t for t in (*descriptions, *category)):  # such text is a link or HTML of its own
        assert broken_links(files) == []
