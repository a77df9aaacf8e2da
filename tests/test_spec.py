"""The shipped catalog against the spec (shared/spec/services-index.md), read at test time.

The spec lives beside the checkout (`<clone>/../shared`), in CI as on a workstation; the tests
skip, saying why, only where it is truly absent.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import CATALOG, SPEC, nexus

from nexus.catalog import load_catalog

pytestmark = pytest.mark.skipif(
    not SPEC.is_file(), reason=f"spec not found at {SPEC} (shared/ must sit beside the checkout)"
)


def _section(text: str, heading: str) -> str:
    """The body of a '## ' or '### ' section, up to the next heading of the same level or above."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n") + len(heading) + 1
    stop = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE).search(text, start)
    return text[start : stop.start() if stop else len(text)]


@pytest.fixture(scope="module")
def spec() -> dict:
    text = SPEC.read_text(encoding="utf-8")
    services, counts = {}, {}
    categories = _section(text, "## Service Categories")
    for heading, body in re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", categories, flags=re.MULTILINE | re.DOTALL):
        title, count = re.fullmatch(r"(.+) \((\d+)\)", heading).groups()
        rows = re.findall(r"^\| ([a-z0-9-]+) \| (\d+) \| (.+?) \| \[.+?\]\(.+?\) \|$", body, flags=re.MULTILINE)
        counts[title] = (int(count), len(rows))
        for name, port, description in rows:
            services[name] = {"port": int(port), "category": title, "description": description}
    paths = {
        title: [h.strip() for h in arrows.split("→")]
        for title, arrows in re.findall(
            r"\d+\. \*\*(.+?)\*\*:\s*```\s*(.+?)\s*```", _section(text, "### Critical Paths"), flags=re.DOTALL
        )
    }
    stages = re.findall(r"^\d+\. \*\*(.+?)\*\*: (.+)$", _section(text, "## Deployment Order"), flags=re.MULTILINE)
    owners = re.findall(r"^- \*\*(.+?)\*\*: (.+)$", _section(text, "### Teams"), flags=re.MULTILINE)
    total = int(re.search(r"\*\*Total Services\*\*: (\d+)", text).group(1))
    return {
        "text": text,
        "services": services,
        "counts": counts,
        "paths": paths,
        "stages": stages,
        "owners": owners,
        "total": total,
    }


@pytest.fixture(scope="module")
def graph() -> dict:
    result = nexus("graph", "--format", "json", "--catalog", str(CATALOG))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CATALOG.read_text(encoding="utf-8"))


def test_the_spec_was_read_whole(spec):
    # guards the parser itself: every table row found, the headings' counts add up to the total
    assert all(declared == found for declared, found in spec["counts"].values()), spec["counts"]
    assert len(spec["services"]) == sum(d for d, _ in spec["counts"].values()) == spec["total"] == 43
    assert len(spec["paths"]) == 3 and len(spec["stages"]) == 5


def test_graph_lists_exactly_the_spec_services_character_for_character(spec, graph, raw):
    titles = {key: c["title"] for key, c in raw["categories"].items()}
    ours = {
        s["name"]: {"port": s["port"], "category": titles[s["category"]], "description": s["description"]}
        for s in graph["services"]
    }
    assert len(graph["services"]) == 43
    assert sorted(ours) == sorted(spec["services"])
    mismatched = {n: (ours[n], spec["services"][n]) for n in ours if ours[n] != spec["services"][n]}
    assert not mismatched


def test_critical_paths_are_the_catalog_flows(spec):
    cat = load_catalog(CATALOG).catalog
    flows = {f.title: f for f in cat.flows.values()}
    assert sorted(flows) == sorted(spec["paths"])
    for title, arrows in spec["paths"].items():
        assert arrows[0] == "Client"  # the spec's client is implicit in the catalog: flows start at the gateway
        expected = [h if h in cat.services else ("external", h.lower()) for h in arrows[1:]]
        actual = [h if isinstance(h, str) else ("external", h.external) for h in flows[title].hops]
        assert actual == expected, title
        assert actual[0] == cat.platform.gateway


def test_plan_follows_the_spec_deployment_order(spec, graph):
    cat = load_catalog(CATALOG).catalog
    result = nexus("plan", "--json", "--catalog", str(CATALOG))
    assert result.returncode == 0, result.stderr
    order = []
    for wave in json.loads(result.stdout)["waves"]:
        if not order or order[-1] != wave["stage"]:
            order.append(wave["stage"])
    titles = {s.name: s.title for s in cat.stages}
    assert [titles[s] for s in order] == [title for title, _ in spec["stages"]]
    # the services a spec stage names are in that stage
    stage_of = {s["name"]: titles[s["stage"]] for s in graph["services"]}
    for title, listed in spec["stages"]:
        for name in (n.strip() for n in listed.split(",")):
            if name in stage_of:
                assert stage_of[name] == title, name


def test_named_owners_are_the_spec_teams(spec, raw):
    team_title = {key: t["title"] for key, t in raw["teams"].items()}
    assert sorted(team_title.values()) == sorted(t for t, _ in spec["owners"])
    for team, listed in spec["owners"]:
        for name in (n.strip() for n in listed.split(",")):
            if name in raw["services"]:
                assert team_title[raw["services"][name]["team"]] == team, name


def test_platform_defaults_are_the_spec_numbers(spec, raw):
    text = spec["text"]
    platform = raw["platform"]
    assert sorted(platform["health"].values()) == sorted(re.findall(r"`GET (/\S+)`", text))
    autoscale = re.search(r"--min=(\d+) --max=(\d+) --cpu-percent=(\d+) -n (\S+)", text).groups()
    a = platform["autoscaling"]
    assert (str(a["min_replicas"]), str(a["max_replicas"]), str(a["cpu_percent"]), platform["namespace"]) == autoscale
    contacts = set(re.findall(r"owner\+\w+@nexuscos\.example\.com", _section(text, "## Support")))
    assert {t[k] for t in raw["teams"].values() for k in ("contact", "oncall")} <= contacts
