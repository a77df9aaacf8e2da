"""What a service is, as data: generated per service from the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Dependency:
    name: str
    kind: Literal["hard", "soft"]  # hard: readiness fails while it is unreachable
    setting: str  # the Settings field that holds its base URL
    websocket: bool = False  # it serves /ws (live.PATH); the gateway relays it at /live/<name>


@dataclass(frozen=True)
class Resource:
    """Infrastructure the service uses: its own database, cache user or broker user."""

    name: str  # the catalog's component, e.g. postgres
    engine: Literal["postgres", "redis", "nats"]
    setting: str  # the Settings field holding its URL (with this service's credentials)
    password: str | None = None  # the Settings field holding the password when the URL has none (Kubernetes)


@dataclass(frozen=True)
class FlowHop:
    """This service's place on a critical path: who it calls next (if anyone)."""

    next: str | None = None
    external: bool = False  # the next hop is outside the platform: reported, never called


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    description: str
    team: str
    dependencies: tuple[Dependency, ...] = ()
    resources: tuple[Resource, ...] = ()
    flows: dict[str, FlowHop] = field(default_factory=dict)
    websocket: bool = False
    health_path: str = "/health"
    ready_path: str = "/health/ready"
    live_path: str = "/health/live"
    metrics_path: str = "/metrics"
    # The platform's entry point serves /platform/...: every flow, and every service's health.
    gateway: bool = False
    # The gateway only: every service it reaches along declared edges -> that service's own
    # dependencies. From it the gateway computes a probe's path, so a relayed probe only crosses
    # connections the NetworkPolicies allow. Other services carry nothing about the rest of the
    # platform: a relay checks each next step against its own dependencies.
    graph: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def hard(self) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if d.kind == "hard")

    @property
    def relays(self) -> bool:
        """Whether it serves /platform/health: the gateway, and every service that can pass a
        probe on to a dependency."""
        return self.gateway or bool(self.dependencies)

    def reached(self) -> dict[str, str]:
        """The gateway's map of what it reaches: service -> the step before it on a shortest path
        of declared edges (this service's own name for its dependencies), ties broken by name.
        Linear in the graph; `route` walks it back."""
        before: dict[str, str] = {}
        frontier = [(d, self.name) for d in sorted(dep.name for dep in self.dependencies)]
        while frontier:
            following: list[tuple[str, str]] = []
            for name, prev in frontier:
                if name == self.name or name in before:
                    continue
                before[name] = prev
                following.extend((d, name) for d in sorted(self.graph.get(name, ())))
            frontier = following
        return before

    def route(self, reached: dict[str, str], target: str) -> tuple[str, ...]:
        """The steps from this service to ``target`` (target last), from a `reached` map."""
        steps = [target]
        while reached[steps[-1]] != self.name:
            steps.append(reached[steps[-1]])
        return tuple(reversed(steps))

    def health_paths(self) -> dict[str, str]:
        """The four endpoints by name, as the platform routes call them."""
        return {
            "health": self.health_path,
            "ready": self.ready_path,
            "live": self.live_path,
            "metrics": self.metrics_path,
        }
