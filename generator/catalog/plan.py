"""Plan stage: the deployment order as data.

The spec's stages come first, in catalog order; inside a stage, services are layered into
waves by their hard dependencies (Kahn's layers, via graphlib), each wave sorted by name so
the plan is the same whatever order the catalog lists services in. Soft edges never order
anything: they are request-time calls the dependent survives without.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from functools import cached_property

from .models import Catalog


@dataclass(frozen=True)
class Wave:
    number: int  # 1-based across the whole plan; becomes the Argo CD sync-wave
    stage: str
    services: tuple[str, ...] = ()
    infrastructure: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    waves: tuple[Wave, ...]

    @cached_property
    def wave_of(self) -> dict[str, int]:
        return {name: w.number for w in self.waves for name in (*w.services, *w.infrastructure)}

    @cached_property
    def stage_of(self) -> dict[str, str]:
        return {name: w.stage for w in self.waves for name in (*w.services, *w.infrastructure)}

    def order(self) -> list[str]:
        """Every service and component, in deployment order."""
        return [name for w in self.waves for name in (*w.infrastructure, *w.services)]

    def as_dict(self) -> dict[str, object]:
        return {
            "waves": [
                {
                    "wave": w.number,
                    "stage": w.stage,
                    "infrastructure": list(w.infrastructure),
                    "services": list(w.services),
                }
                for w in self.waves
            ]
        }


def plan(cat: Catalog) -> Plan:
    """Refine the catalog's stages into waves. Assumes a validated catalog (no hard cycles)."""
    stage_of = cat.stage_of()
    waves: list[Wave] = []
    for stage in cat.stages:
        if stage.infrastructure:
            waves.append(Wave(len(waves) + 1, stage.name, infrastructure=tuple(sorted(stage.infrastructure))))
        members = sorted(n for n, s in stage_of.items() if s == stage.name)
        inside = set(members)
        sorter = graphlib.TopologicalSorter(
            {n: [d for d, e in cat.services[n].depends_on.items() if e.kind == "hard" and d in inside] for n in members}
        )
        sorter.prepare()
        while sorter.is_active():
            ready = sorted(sorter.get_ready())
            waves.append(Wave(len(waves) + 1, stage.name, services=tuple(ready)))
            sorter.done(*ready)
    return Plan(tuple(waves))
