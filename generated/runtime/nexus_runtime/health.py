"""The spec's four endpoints. Liveness never looks at another service. Readiness says whether
this service can serve anything at all, so that an outage takes out of rotation only what cannot
serve anything without it (docs/running.md, "Readiness"):

- its own routes need every hard dependency (with none, they can always be served);
- each critical path it is on needs only its next hop (none, or an external one: always);
- both need the infrastructure it uses (its database, cache, broker): a real round trip each,
  so a broken server makes unready exactly the services that use it.

It is ready while at least one of these can be served. A dependency counts as up while it
answers its own liveness probe: never its readiness, so an outage does not travel further up
the graph than the services that cannot serve anything without it. Probes are cached for the
settings' cache period, so readiness checks do not fan out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from .metrics import Metrics
from .resources import Resources
from .resources import probe as probe_resource
from .schemas import PROMETHEUS_TEXT, Health, problems
from .schemas import Readiness as ReadinessBody
from .settings import ServiceSettings
from .spec import ServiceSpec

Endpoint = Callable[[], Awaitable[Response]]


def needs(spec: ServiceSpec) -> dict[str, tuple[str, ...]]:
    """What this service can serve, each with the dependencies it cannot be served without.

    Its own infrastructure (its database, cache, broker) is needed by everything it serves:
    its routes own the data, and each flow's hop here touches it."""
    own = tuple(r.name for r in spec.resources)
    served = {"routes": (*own, *(d.name for d in spec.hard))}
    for flow, hop in sorted(spec.flows.items()):
        served[f"flow {flow}"] = (*own, *((hop.next,) if hop.next and not hop.external else ()))
    return served


class Readiness:
    def __init__(
        self,
        spec: ServiceSpec,
        settings: ServiceSettings,
        clients: dict[str, httpx.AsyncClient],
        resources: Resources | None = None,
    ) -> None:
        self.spec, self.settings, self.clients = spec, settings, clients
        self.resources = resources or Resources()
        self.shutting_down = False
        self.needs = needs(spec)
        self.probed = sorted({name for names in self.needs.values() for name in names})
        self._checked_at = float("-inf")
        self._result: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def _probe(self, name: str) -> tuple[str, str]:
        if name in self.resources.engines:  # infrastructure: a real round trip (a query, a PING)
            return name, await probe_resource(self.resources, name, self.settings.resource_probe_timeout_seconds)
        try:
            # no retries for probes: the retrying transport would hide an outage for seconds
            r = await self.clients[name].get(
                self.spec.live_path,
                timeout=self.settings.readiness_timeout_seconds,
                extensions={"nexus_no_retry": True},
            )
            return name, "ok" if r.status_code == 200 else f"http {r.status_code}"
        except httpx.HTTPError as exc:
            return name, f"unreachable: {type(exc).__name__}"

    async def check(self) -> dict[str, str]:
        async with self._lock:
            if time.monotonic() - self._checked_at >= self.settings.readiness_cache_seconds:
                self._result = dict(await asyncio.gather(*(self._probe(name) for name in self.probed)))
                self._checked_at = time.monotonic()
            return self._result


def endpoints(spec: ServiceSpec, readiness: Readiness, metrics: Metrics) -> dict[str, Endpoint]:
    """The four answers by name (health, ready, live, metrics): served on the spec's paths, and
    by the gateway's platform routes when it is asked about itself."""
    ok = Health(status="ok", service=spec.name)

    async def health() -> Response:
        return JSONResponse(ok)

    async def ready() -> Response:
        if readiness.shutting_down:
            return JSONResponse(ReadinessBody(status="shutting down", service=spec.name), status_code=503)
        deps = await readiness.check()
        # what cannot be served now, and the dependencies it waits on
        down = {what: [n for n in names if deps[n] != "ok"] for what, names in readiness.needs.items()}
        unavailable = {what: names for what, names in down.items() if names}
        ok = len(unavailable) < len(readiness.needs)
        body = ReadinessBody(
            status="ready" if ok else "not ready", service=spec.name, dependencies=deps, unavailable=unavailable
        )
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return {"health": health, "ready": ready, "live": health, "metrics": prometheus}


# What each endpoint declares in the OpenAPI document (response_model, responses, response_class)
CONTRACT: dict[str, dict[str, Any]] = {
    "health": {"response_model": Health},
    "live": {"response_model": Health},
    "ready": {"response_model": ReadinessBody, "responses": problems(503, model=ReadinessBody)},
    "metrics": {
        "response_class": PlainTextResponse,
        "responses": {
            200: {
                "description": "Prometheus text exposition format",
                "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
            }
        },
    },
}


def router(spec: ServiceSpec, answers: dict[str, Endpoint]) -> APIRouter:
    r = APIRouter(tags=["health"])
    for name, path in spec.health_paths().items():
        r.add_api_route(path, answers[name], methods=["GET"], name=name, **CONTRACT[name])
    return r
