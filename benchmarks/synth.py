"""Synthetic catalogs for the benchmark and the tests: N services, about 3N edges.

    python benchmarks/synth.py 10000 > /tmp/catalog-10k.yaml
    python benchmarks/synth.py 10000 0 2000 > /tmp/catalog-10k-events.yaml  # and 2,000 channels

The catalog is valid by construction, and deterministic for a given N and seed:
- acyclic: a service only depends on services with a lower index;
- stage-consistent: stages are contiguous index ranges in deployment order, so a
  dependency (lower index) is always in the same stage or an earlier one;
- the gateway is depended on by nobody, so its soft routes may point anywhere, as the
  real gateway's routes point at later stages;
- flows start at the gateway and then walk declared dependencies.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import yaml

# Share of services per stage, in deployment order (infrastructure holds components only).
STAGES = [("core", 0.05), ("platform", 0.10), ("business", 0.75), ("frontend", 0.10)]
TEAMS = ["core-platform", "media", "commerce", "fintech", "logistics", "ai-ml"]
CATEGORIES = ["core", "streaming", "puabo-dsp", "e-commerce", "financial", "logistics", "ai", "platform", "supporting"]
INFRA = {"postgres": ("database", 5432), "redis": ("cache", 6379), "nats": ("message-queue", 4222)}
FIRST_PORT = 10000  # clear of the infrastructure ports; 10000 + N must stay below 65536
EDGES_PER_SERVICE = 3


def synth(n: int, seed: int = 0, channels: int = 0) -> dict[str, Any]:
    """A valid catalog of ``n`` services (plus a gateway) as plain data, ready for yaml.dump;
    with ``channels``, that many pub/sub event channels between services that use the broker."""
    if not 1 <= n <= 65535 - FIRST_PORT:
        raise ValueError(f"n must be between 1 and {65535 - FIRST_PORT}")
    rng = random.Random(seed)
    names = [f"svc-{i:05d}" for i in range(n)]
    # contiguous index ranges per stage; every stage gets at least one service when n allows
    bounds, start = [], 0
    for k, (_, share) in enumerate(STAGES):
        end = n if k == len(STAGES) - 1 else min(n, max(start + 1, start + round(n * share)))
        bounds.append((start, end))
        start = end
    stage_of = {names[i]: STAGES[k][0] for k, (lo, hi) in enumerate(bounds) for i in range(lo, hi)}

    services: dict[str, Any] = {}
    for i, name in enumerate(names):
        deps: dict[str, str] = {}
        if i:
            # mostly near neighbours (realistic chains, deep waves), some far (cross-domain calls)
            for _ in range(rng.randint(1, 2 * EDGES_PER_SERVICE - 1)):
                j = max(0, i - rng.randint(1, 20)) if rng.random() < 0.7 else rng.randrange(i)
                deps[names[j]] = "hard" if rng.random() < 0.75 else "soft"
        services[name] = {
            "port": FIRST_PORT + i,
            "category": CATEGORIES[i % len(CATEGORIES)],
            "team": TEAMS[i % len(TEAMS)],
            "description": f"Synthetic service {i}",
            **({"depends_on": deps} if deps else {}),
            **({"uses": sorted(rng.sample(sorted(INFRA), rng.randint(1, 2)))} if rng.random() < 0.5 else {}),
        }

    # The gateway lives in the platform stage, depends hard on one core service, and routes
    # (soft) to a sample of everything else; flows enter through those routes.
    entries = sorted(rng.sample(names, min(n, 12)))
    gateway: dict[str, str] = {names[0]: "hard"}
    gateway.update({e: "soft" for e in entries if e != names[0]})
    services["gateway"] = {
        "port": FIRST_PORT - 1,
        "category": "platform",
        "team": "core-platform",
        "description": "Synthetic gateway",
        "depends_on": gateway,
    }

    flows: dict[str, Any] = {}
    for k, entry_point in enumerate(entries[:3]):
        hops = ["gateway", entry_point]
        while len(hops) < 6 and services[hops[-1]].get("depends_on"):
            hops.append(min(services[hops[-1]]["depends_on"]))
        flows[f"flow-{k}"] = {"title": f"Flow {k}", "hops": hops}

    # only what some service uses: a component nobody uses is an error
    used = sorted({u for svc in services.values() for u in svc.get("uses", [])})
    stages: list[dict[str, Any]] = [
        {
            "name": "infrastructure",
            "title": "Infrastructure",
            "description": "Databases, Redis, message queues",
            "infrastructure": used,
        }
    ]
    for stage, _ in STAGES:
        entry: dict[str, Any] = {"name": stage, "title": stage.title(), "description": f"The {stage} services"}
        if stage == "business":
            entry["default"] = True  # like the shipped catalog: unlisted services land here
        else:
            entry["services"] = [s for s in names if stage_of[s] == stage] + (
                ["gateway"] if stage == "platform" else []
            )
        stages.append(entry)

    events = _events(services, channels, random.Random(seed + 1)) if channels else {}
    return {
        "version": 1,
        "platform": {
            "name": "synth",
            "namespace": "synth",
            "version": "0.0.0",
            "image_registry": "registry.example.com/synth",
            "gateway": "gateway",
        },
        "teams": {
            t: {"title": t.title(), "contact": f"{t}@example.com", "oncall": "oncall@example.com"} for t in TEAMS
        },
        "categories": {c: {"title": c.title(), "summary": f"{c}:"} for c in CATEGORIES},
        "stages": stages,
        "infrastructure": {k: {"kind": INFRA[k][0], "description": k, "port": INFRA[k][1]} for k in used},
        "services": services,
        "flows": flows,
        **({"events": events} if events else {}),
    }


def _events(services: dict[str, Any], channels: int, rng: random.Random) -> dict[str, Any]:
    """``channels`` pub/sub channels, each with one publisher and up to three subscribers, all
    among the services that use the broker (a service on a channel must), sent a small message.
    Its own random numbers: the services are those of the same catalog without events."""
    members = [name for name, svc in services.items() if "nats" in svc.get("uses", [])]
    if not members:
        raise ValueError("no service uses the broker: too few services for channels")
    out: dict[str, Any] = {}
    for k in range(channels):
        publisher = rng.choice(members)
        subscribers = sorted({rng.choice(members) for _ in range(3)} - {publisher})
        out[f"channel-{k:05d}"] = {
            "kind": "pubsub",
            "description": f"Synthetic channel {k}",
            "message": {"version": 1, "fields": {"id": "uuid", "amount": "integer", "note": "string?"}},
            "publishers": [publisher],
            "subscribers": subscribers or [publisher],
        }
    return out


def synth_yaml(n: int, seed: int = 0, channels: int = 0) -> str:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(synth(n, seed, channels), Dumper=dumper, sort_keys=False, width=1000)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not 1 <= len(args) <= 3 or not all(a.isdigit() for a in args):
        sys.exit("usage: python benchmarks/synth.py N [SEED [CHANNELS]] > catalog.yaml")
    sys.stdout.write(synth_yaml(*map(int, args)))
