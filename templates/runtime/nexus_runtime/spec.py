"""What a service is, as data: generated per service from the catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Dependency:
    name: str
    kind: Literal["hard", "soft"]  # hard: readiness fails while it is unreachable
    setting: str  # the Settings field that holds its base URL


@dataclass(frozen=True)
class Resource:
    """Infrastructure the service uses: its own database, cache user or broker user."""

    name: str  # the catalog's component, e.g. postgres
    engine: Literal["postgres", "redis", "nats"]
    setting: str  # the Settings field holding its URL (with this service's credentials)


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
    # Service -> the dependency to ask for its health: the first step of the shortest path of
    # declared edges, so a relayed probe only crosses connections the NetworkPolicies allow.
    relay: dict[str, str] = field(default_factory=dict)

    @property
    def hard(self) -> tuple[Dependency, ...]:
        return tuple(d for d in self.dependencies if d.kind == "hard")

    def health_paths(self) -> dict[str, str]:
        """The four endpoints by name, as the platform routes call them."""
        return {
            "health": self.health_path,
            "ready": self.ready_path,
            "live": self.live_path,
            "metrics": self.metrics_path,
        }
