"""The bodies of the runtime's endpoints, as types: the handlers build them and the OpenAPI
document declares them (response models and error responses), so the document is the contract
that schemathesis holds every service to."""

from __future__ import annotations

from typing import Any, Literal, NotRequired

# pydantic reads TypedDicts from typing only on Python 3.12 and later
from typing_extensions import TypedDict


class Health(TypedDict):
    status: Literal["ok"]
    service: str


class Readiness(TypedDict):
    status: Literal["ready", "not ready", "shutting down"]
    service: str
    # dependency probed -> "ok", "http <status>" or "unreachable: <error>"; absent while shutting down
    dependencies: NotRequired[dict[str, str]]
    # what cannot be served now ("routes", "flow <name>") -> the dependencies it waits on
    unavailable: NotRequired[dict[str, list[str]]]


class DataHop(TypedDict):
    """A write and a read back on the service's own infrastructure, as part of a flow."""

    resource: str  # the catalog's component, e.g. postgres
    wrote: str  # what was written, e.g. flow_records 17
    ms: float


class Hop(TypedDict):
    service: str
    ms: NotRequired[float]  # time at this hop, including the hops after it
    external: NotRequired[bool]  # outside the platform: reported, never called
    error: NotRequired[str]  # why this hop failed
    data: NotRequired[list[DataHop]]  # what it wrote and read back in its own database and cache


class FlowResult(TypedDict):
    flow: str
    ok: bool
    hops: list[Hop]
    broken: NotRequired[str]  # the hop that failed


class PlatformIndex(TypedDict):
    gateway: str
    flows: list[str]
    services: list[str]


class Problem(TypedDict):
    """A platform route's error: which service it was about, and what went wrong."""

    service: str
    error: str


class NotFound(TypedDict):
    detail: str


PROMETHEUS_TEXT = "text/plain"  # Prometheus text exposition format


def problems(*codes: int, model: Any = Problem) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, all with one body type."""
    return {code: {"model": model} for code in codes}
