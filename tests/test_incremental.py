"""Runs after random edits give the very tree a run from nothing gives.

A synthetic catalog (benchmarks/synth.py) is edited at random, a few edits a round, of every kind
a team makes (a description, a port, an edge added or dropped, a team, flags, autoscaling,
traffic, a component used, a service removed, one onboarded by `nexus new`). After each round
`nexus generate` runs in the working copy, with its record, its caches and its spare tree as
the earlier rounds left them, and `nexus generate --strict` runs on the same catalog in a fresh
folder with an empty cache folder: both trees must hold the same files, byte for byte, but for
the teams' files (written once, then the team's; the working copy keeps them as first written).

By hand, larger: NEXUS_FUZZ_SERVICES=1000 NEXUS_FUZZ_ROUNDS=40 pytest tests/test_incremental.py
(2026-12-05, both seeds: no difference in 15 min). With a neighbourhood's hash left without its
neighbours' entries (a cache key too small), the default size fails at the fourth round.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import dump, nexus, synthetic, tree

from nexus.paths import TOOL_CACHES
from nexus.render.services import team_owned
from nexus.write import MANIFEST

SERVICES = int(os.environ.get("NEXUS_FUZZ_SERVICES", "120"))
ROUNDS = int(os.environ.get("NEXUS_FUZZ_ROUNDS", "8"))
ONBOARD = 0.15  # the share of rounds that also onboard a service with `nexus new`

Edit = Callable[[dict[str, Any], random.Random], "str | None"]  # what it did; None: nothing to do


def _services(data: dict[str, Any]) -> list[str]:
    """The services in catalog order but the gateway: a service only depends on earlier ones
    (synth.py), which keeps any edge added between them acyclic and in stage order."""
    return [name for name in data["services"] if name != data["platform"]["gateway"]]


def _flow_edges(data: dict[str, Any]) -> set[tuple[str, str]]:
    return {edge for flow in data["flows"].values() for edge in zip(flow["hops"], flow["hops"][1:], strict=False)}


def description(data: dict[str, Any], rng: random.Random) -> str:
    name = rng.choice(_services(data))
    data["services"][name]["description"] = f"Edited {rng.randrange(10**6)}"
    return name


def port(data: dict[str, Any], rng: random.Random) -> str:
    name = rng.choice(_services(data))
    data["services"][name]["port"] = max(s["port"] for s in data["services"].values()) + rng.randint(1, 5)
    return name


def add_edge(data: dict[str, Any], rng: random.Random) -> str | None:
    names = _services(data)
    i = rng.randrange(1, len(names))
    callee = names[rng.randrange(i)]
    kind = rng.choice(["hard", "soft", {"kind": "hard", "timeout": f"{rng.randint(1, 9)}s"}])
    data["services"][names[i]].setdefault("depends_on", {})[callee] = kind
    return f"{names[i]} -> {callee}"


def drop_edge(data: dict[str, Any], rng: random.Random) -> str | None:
    on_flows = _flow_edges(data)
    edges = [
        (s, t) for s in _services(data) for t in data["services"][s].get("depends_on", {}) if (s, t) not in on_flows
    ]
    if not edges:
        return None
    source, target = rng.choice(edges)
    del data["services"][source]["depends_on"][target]
    return f"{source} -/-> {target}"


def team(data: dict[str, Any], rng: random.Random) -> str:
    name = rng.choice(_services(data))
    data["services"][name]["team"] = rng.choice(sorted(data["teams"]))
    return name


def flag(data: dict[str, Any], rng: random.Random) -> str:
    name, key = rng.choice(_services(data)), rng.choice(["websocket", "session_affinity"])
    data["services"][name][key] = not data["services"][name].get(key, False)
    return f"{name}.{key}"


def autoscaling(data: dict[str, Any], rng: random.Random) -> str:
    name = rng.choice(_services(data))
    data["services"][name]["autoscaling"] = {"min_replicas": rng.randint(1, 3), "max_replicas": rng.randint(4, 9)}
    return name


def traffic(data: dict[str, Any], rng: random.Random) -> str:
    name = rng.choice(_services(data))
    data["services"][name]["traffic"] = {"timeout": f"{rng.randint(1, 9)}s", "retries": rng.randint(0, 5)}
    return name


def platform_traffic(data: dict[str, Any], rng: random.Random) -> str:
    data["platform"].setdefault("traffic", {})["timeout"] = timeout = f"{rng.randint(1, 9)}s"
    return timeout


def uses(data: dict[str, Any], rng: random.Random) -> str | None:
    name, component = rng.choice(_services(data)), rng.choice(sorted(data["infrastructure"]))
    used = data["services"][name].setdefault("uses", [])
    if component in used:
        return None
    used.append(component)
    return f"{name} uses {component}"


def team_title(data: dict[str, Any], rng: random.Random) -> str:
    key = rng.choice(sorted(data["teams"]))
    data["teams"][key]["title"] = f"Team {rng.randrange(1000)}"
    return key


def remove(data: dict[str, Any], rng: random.Random) -> str | None:
    """A service nobody calls and no critical path passes, with its place in its stage's list."""
    called = {t for s in data["services"].values() for t in s.get("depends_on", {})}
    on_flows = {hop for f in data["flows"].values() for hop in f["hops"]}
    free = [name for name in _services(data) if name not in called | on_flows]
    if not free:
        return None
    name = rng.choice(free)
    del data["services"][name]
    for stage in data["stages"]:
        if name in stage.get("services", []):
            stage["services"].remove(name)
    return name


EDITS: tuple[Edit, ...] = (
    description,
    port,
    add_edge,
    drop_edge,
    team,
    flag,
    autoscaling,
    traffic,
    platform_traffic,
    uses,
    team_title,
    remove,
)


def _write(data: dict[str, Any], catalog: Path) -> None:
    catalog.write_text(dump(data), encoding="utf-8")


def _run(monkeypatch: pytest.MonkeyPatch, cache: Path, *args: str, cwd: Path) -> Any:
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return nexus(*args, cwd=cwd, timeout=300)


def _differences(kept: dict[str, bytes], fresh: dict[str, bytes]) -> list[str]:
    """The paths the two trees do not hold alike: a team's file may differ (written once), and
    the manifest by the hashes of the teams' files alone."""
    out = sorted(kept.keys() ^ fresh.keys())
    for path in sorted(kept.keys() & fresh.keys()):
        if kept[path] == fresh[path] or team_owned(path):
            continue
        if path == MANIFEST:
            ours, theirs = (json.loads(tree[path])["files"] for tree in (kept, fresh))
            if ours.keys() == theirs.keys() and all(ours[p] == theirs[p] for p in ours if not team_owned(p)):
                continue
        out.append(path)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_a_run_after_random_edits_writes_what_a_run_from_nothing_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    work, fresh = tmp_path / "work", tmp_path / "fresh"
    work.mkdir()
    data = yaml.safe_load(synthetic(SERVICES))
    _write(data, work / "catalog.yaml")
    assert _run(monkeypatch, tmp_path / "cache", "generate", cwd=work).returncode == 0
    changed = 0
    for round_ in range(ROUNDS):
        before = yaml.safe_load((work / "catalog.yaml").read_text(encoding="utf-8"))
        done = [
            f"{edit.__name__}({what})" for edit in rng.choices(EDITS, k=rng.randint(1, 3)) if (what := edit(data, rng))
        ]
        _write(data, work / "catalog.yaml")
        if _run(monkeypatch, tmp_path / "cache", "validate", cwd=work).returncode != 0:
            data = before  # edits the catalog's rules refuse (a port taken, a hard edge into a later stage)
            _write(data, work / "catalog.yaml")
            continue
        if rng.random() < ONBOARD:
            # in the category and team of an early service (a later stage's would be refused), calling it
            caller = rng.choice(_services(data)[: len(_services(data)) // 2])
            name = f"new-{round_}"
            svc = data["services"][caller]
            args = ("new", name, "--category", svc["category"], "--team", svc["team"], "--depends-on", caller)
            onboarded = _run(monkeypatch, tmp_path / "cache", *args, cwd=work)
            assert onboarded.returncode == 0, (done, onboarded.stdout[-500:], onboarded.stderr[-2000:])
            done.append(f"new({name} -> {caller})")
            data = yaml.safe_load((work / "catalog.yaml").read_text(encoding="utf-8"))
        run = _run(monkeypatch, tmp_path / "cache", "generate", cwd=work)
        assert run.returncode == 0, (done, run.stdout[-500:], run.stderr[-2000:])
        shutil.rmtree(fresh, ignore_errors=True)
        fresh.mkdir()
        shutil.copy(work / "catalog.yaml", fresh / "catalog.yaml")
        shutil.rmtree(tmp_path / "empty-cache", ignore_errors=True)
        assert _run(monkeypatch, tmp_path / "empty-cache", "generate", "--strict", cwd=fresh).returncode == 0
        kept, anew = (tree(folder / "generated", TOOL_CACHES) for folder in (work, fresh))
        assert _differences(kept, anew) == [], (round_, done)
        changed += 1
    assert changed >= ROUNDS // 2  # most rounds were edits the catalog takes, or this proved little
    assert _run(monkeypatch, tmp_path / "cache", "generate", "--check", "--strict", cwd=work).returncode == 0
