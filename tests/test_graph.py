"""Graph stage: the JSON view other tools read, and the Mermaid and DOT pictures."""

from __future__ import annotations

import json
import re

import pytest
from conftest import CATALOG, dump, nexus

from nexus.catalog import load_catalog, load_catalog_text
from nexus.catalog.graph import as_data, as_dot, as_json, as_mermaid


@pytest.fixture
def loaded(minimal):
    return load_catalog_text(dump(minimal))


def test_json_lists_every_service_with_its_facts(loaded):
    data = json.loads(as_json(loaded.catalog, loaded.plan))
    cat = loaded.catalog
    assert [s["name"] for s in data["services"]] == sorted(cat.services)
    for s in data["services"]:
        svc = cat.services[s["name"]]
        assert (s["port"], s["category"], s["team"], s["description"]) == (
            svc.port,
            svc.category,
            svc.team,
            svc.description,
        )
        assert (s["stage"], s["wave"]) == (loaded.plan.stage_of[s["name"]], loaded.plan.wave_of[s["name"]])
        assert {(d["name"], d["kind"]) for d in s["dependencies"]} == {(d, e.kind) for d, e in svc.depends_on.items()}


def test_json_edges_are_every_dependency_once_sorted(loaded):
    data = as_data(loaded.catalog, loaded.plan)
    from_services = sorted((s["name"], d["name"], d["kind"]) for s in data["services"] for d in s["dependencies"])
    edges = [(e["source"], e["target"], e["kind"]) for e in data["edges"]]
    assert edges == from_services
    assert ("gateway", "media", "soft") in edges and ("media", "auth", "hard") in edges


def test_json_of_the_shipped_catalog_is_consistent():
    shipped = load_catalog(CATALOG)
    data = as_data(shipped.catalog, shipped.plan)
    names = {s["name"] for s in data["services"]}
    assert len(names) == len(data["services"]) == 43
    assert all(e["source"] in names and e["target"] in names and e["kind"] in {"hard", "soft"} for e in data["edges"])
    assert len(data["edges"]) == sum(len(s.depends_on) for s in shipped.catalog.services.values())


def test_mermaid_draws_hard_solid_and_soft_dotted(loaded):
    text = as_mermaid(loaded.catalog, loaded.plan)
    assert text.startswith("graph LR\n")
    assert "  s_gateway -.-> s_media\n" in text and "  s_media --> s_auth\n" in text
    # every service is drawn once, inside its stage's subgraph
    nodes = re.findall(r'^    (\w+)\["', text, flags=re.MULTILINE)
    assert sorted(nodes) == sorted("s_" + n.replace("-", "_") for n in loaded.catalog.services)


def test_dot_draws_soft_dashed(loaded):
    text = as_dot(loaded.catalog, loaded.plan)
    assert text.startswith("digraph nexus {") and text.endswith("}\n")
    assert '  "gateway" -> "media" [style=dashed];\n' in text and '  "media" -> "auth";\n' in text


def test_stage_titles_are_escaped(minimal):
    minimal["stages"][2]["title"] = 'The "apps" \\ stage'
    loaded = load_catalog_text(dump(minimal))
    assert 'label="The \\"apps\\" \\\\ stage";' in as_dot(loaded.catalog, loaded.plan)
    assert 'subgraph stage_apps["The #quot;apps#quot; \\ stage"]' in as_mermaid(loaded.catalog, loaded.plan)


def test_a_mermaid_label_shows_the_title_as_typed(minimal):
    """Mermaid decodes entity codes and renders labels as HTML: each character that would be
    read as either is given as its code, so none is lost or taken as markup."""
    minimal["stages"][2]["title"] = "R&D #quot; <b>apps</b>"
    loaded = load_catalog_text(dump(minimal))
    label = "R#38;D #35;quot; #60;b#62;apps#60;/b#62;"
    assert f'subgraph stage_apps["{label}"]' in as_mermaid(loaded.catalog, loaded.plan)


@pytest.mark.parametrize("fmt", ["json", "mermaid", "dot"])
def test_graph_command_prints_the_same_as_the_library(fmt):
    shipped = load_catalog(CATALOG)
    render = {"json": as_json, "mermaid": as_mermaid, "dot": as_dot}[fmt]
    result = nexus("graph", "--format", fmt, "--catalog", str(CATALOG))
    assert result.returncode == 0, result.stderr
    assert result.stdout == render(shipped.catalog, shipped.plan)


def test_mermaid_ids_cannot_be_keywords(minimal):
    # `end` is a valid DNS label and a Mermaid keyword; a stage may share a service's name
    minimal["services"]["end"] = {"port": 4009, "category": "platform", "team": "core", "description": "End"}
    minimal["stages"][2]["name"] = "gateway"
    loaded = load_catalog_text(dump(minimal))
    text = as_mermaid(loaded.catalog, loaded.plan)
    assert '    s_end["end:4009"]' in text and "subgraph stage_gateway[" in text
