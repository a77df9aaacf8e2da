"""Plan stage: stages in order, each split into waves by hard dependencies, deterministically."""

from __future__ import annotations

import json
import random

import pytest
import yaml
from broken import add_service
from conftest import CATALOG, dump, nexus

from nexus.catalog import load_catalog, load_catalog_text
from nexus.catalog.plan import Plan


def plan_of(data: dict) -> Plan:
    return load_catalog_text(dump(data)).plan


def test_minimal_plan(minimal):
    waves = [(w.number, w.stage, w.infrastructure, w.services) for w in plan_of(minimal).waves]
    assert waves == [
        (1, "infrastructure", ("postgres",), ()),
        (2, "core", (), ("auth",)),
        (3, "apps", (), ("gateway", "media")),  # both need only 'auth', from an earlier stage
    ]


def test_hard_chain_inside_a_stage_becomes_waves_and_soft_edges_do_not_order(minimal):
    add_service(minimal, "c", 4010, depends_on={"b": "hard"})
    add_service(minimal, "b", 4011, depends_on={"a": "hard"})
    add_service(minimal, "a", 4012)
    add_service(minimal, "d", 4013, depends_on={"c": "soft"})  # calls c, but is ready without it
    apps = [w.services for w in plan_of(minimal).waves if w.stage == "apps"]
    assert apps == [("a", "d", "gateway", "media"), ("b",), ("c",)]


def test_soft_cycle_is_still_a_validation_error(minimal):
    # request-time call loops recurse forever, so validation refuses them though plan could order them
    add_service(minimal, "a", 4010, depends_on={"b": "soft"})
    add_service(minimal, "b", 4011, depends_on={"a": "soft"})
    with pytest.raises(ValueError, match="dependency cycle"):
        plan_of(minimal)


def test_empty_stage_makes_no_wave(minimal):
    minimal["stages"].insert(2, {"name": "empty", "title": "Empty", "description": "Nothing yet"})
    assert "empty" not in {w.stage for w in plan_of(minimal).waves}


# -- the shipped catalog ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return load_catalog(CATALOG)


def test_every_service_and_component_is_in_exactly_one_wave(shipped):
    placed = [n for w in shipped.plan.waves for n in (*w.infrastructure, *w.services)]
    assert sorted(placed) == sorted([*shipped.catalog.services, *shipped.catalog.infrastructure])


def test_waves_are_numbered_in_order_and_sorted_inside(shipped):
    waves = shipped.plan.waves
    assert [w.number for w in waves] == list(range(1, len(waves) + 1))
    for w in waves:
        assert list(w.services) == sorted(w.services) and list(w.infrastructure) == sorted(w.infrastructure)


def test_stages_come_in_catalog_order_each_in_one_run_of_waves(shipped):
    order = [w.stage for w in shipped.plan.waves]
    runs = [s for i, s in enumerate(order) if i == 0 or order[i - 1] != s]
    assert runs == [s.name for s in shipped.catalog.stages if s.name in order]


def test_every_hard_edge_and_every_use_points_at_an_earlier_wave(shipped):
    wave = shipped.plan.wave_of
    for name, service in shipped.catalog.services.items():
        for dep, edge in service.depends_on.items():
            if edge.kind == "hard":
                assert wave[dep] < wave[name], f"{name} -> {dep}"
        for comp in service.uses:
            assert wave[comp] < wave[name], f"{name} uses {comp}"


def test_waves_are_as_early_as_possible(shipped):
    # a service waits only for its own hard dependencies: in any wave but its stage's first,
    # one of them is in the wave just before
    cat, p = shipped.catalog, shipped.plan
    first_of_stage = {}
    for w in p.waves:
        first_of_stage.setdefault(w.stage, w.number)
    for name, service in cat.services.items():
        if p.wave_of[name] > first_of_stage[p.stage_of[name]]:
            hard = [d for d, e in service.depends_on.items() if e.kind == "hard"]
            assert any(p.wave_of[d] == p.wave_of[name] - 1 for d in hard), name


def test_soft_edges_are_what_lets_the_gateway_route_to_later_stages(shipped):
    # the spec's contradiction, resolved by edge kinds: some soft edges point at later waves
    wave = shipped.plan.wave_of
    later = [
        (n, d)
        for n, s in shipped.catalog.services.items()
        for d, e in s.depends_on.items()
        if e.kind == "soft" and wave[d] > wave[n]
    ]
    assert any(n == shipped.catalog.platform.gateway for n, _ in later)


def _shuffled(text: str, seed: int) -> str:
    """The same catalog with every mapping of services and edges, and every stage list, reordered."""
    data = yaml.safe_load(text)
    rng = random.Random(seed)

    def shuffle(mapping: dict) -> dict:
        items = list(mapping.items())
        rng.shuffle(items)
        return dict(items)

    data["services"] = shuffle(data["services"])
    for service in data["services"].values():
        if "depends_on" in service:
            service["depends_on"] = shuffle(service["depends_on"])
    for stage in data["stages"]:
        for key in ("services", "infrastructure"):
            rng.shuffle(stage.get(key, []))
    return dump(data)


@pytest.mark.parametrize("seed", range(5))
def test_plan_does_not_depend_on_catalog_order(seed):
    text = CATALOG.read_text()
    shuffled = _shuffled(text, seed)
    assert shuffled != text
    assert load_catalog_text(shuffled).plan.as_dict() == load_catalog_text(text).plan.as_dict()


def test_plan_json_is_identical_for_a_shuffled_catalog(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(_shuffled(CATALOG.read_text(), seed=42))
    original, shuffled = (
        nexus("plan", "--json", "--catalog", str(CATALOG)),
        nexus("plan", "--json", "--catalog", str(path)),
    )
    assert original.returncode == shuffled.returncode == 0, original.stderr + shuffled.stderr
    assert shuffled.stdout == original.stdout
    assert json.loads(original.stdout)["waves"][0]["infrastructure"]
