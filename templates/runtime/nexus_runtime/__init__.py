"""The runtime every generated Nexus service shares.

A service is described by a generated ``ServiceSpec`` and ``Settings`` class; ``create_app``
turns them into a FastAPI app with the four health endpoints, Prometheus metrics, one HTTP
client per dependency, JSON logs, the critical-path flow endpoints and, where asked, a
WebSocket. The service's own routes are plugged in as an APIRouter (a ``ServiceRouter`` when
the team writes its own data step for a flow's hop: data.py).
"""

from .app import create_app
from .data import ServiceRouter, Written
from .resources import Cache, Postgres
from .serve import serve
from .settings import Port, Retries, Seconds, ServiceSettings
from .spec import Dependency, FlowHop, Resource, ServiceSpec

__all__ = [
    "Cache",
    "Dependency",
    "FlowHop",
    "Port",
    "Postgres",
    "Resource",
    "Retries",
    "Seconds",
    "ServiceRouter",
    "ServiceSettings",
    "ServiceSpec",
    "Written",
    "create_app",
    "serve",
]
