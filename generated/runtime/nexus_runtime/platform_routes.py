"""The platform seen through its gateway: every flow and every service's health under /platform,
so one port-forward to the gateway is enough to verify a deployed platform (`nexus verify
--base-url`).

The gateway may only open connections its NetworkPolicy allows, that is to the services it
declares as dependencies. A probe for any other service is therefore relayed along declared
edges: the gateway computes a shortest path from its map of the graph (``spec.graph``) and sends
the rest of it along (``x-nexus-route``); each relay checks the next step against its own
dependencies and asks it, and the last one calls the target's own endpoint. Each step is an
allowed connection, and no service but the gateway carries anything about the others. Services
that no path of declared edges reaches cannot be probed this way, and `nexus verify` reports
them as such. Relayed probes are never retried and share one time budget.

Routes:
  GET /platform                                   gateway: its flows and the services it reaches
  GET /platform/flows/{flow}                      gateway: the flow, as /flows/{flow}
  GET /platform/health/{service}/{endpoint}       endpoint: health, ready, live or metrics
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse

from . import flows
from .clients import BROKEN_HEADER
from .data import DataStep
from .deadline import Deadline
from .health import Endpoint
from .resources import Resources
from .schemas import (
    PROMETHEUS_TEXT,
    Health,
    PlatformIndex,
    Problem,
    Readiness,
    problems,
)
from .settings import ServiceSettings
from .spec import ServiceSpec

VIA_HEADER = "x-nexus-via"  # the services a relayed probe passed through, gateway first
ROUTE_HEADER = "x-nexus-route"  # the steps a relayed probe has still to take, target last
PASSED_ON = ("content-type", BROKEN_HEADER)


# The probe answers what the target's endpoint answers (JSON, or Prometheus text for metrics);
# a relay that cannot go on answers a Problem naming the hop it could not reach.
PROBE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The target's own answer",
        "model": Health | Readiness,
        "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
    },
    503: {"description": "The target is not ready", "model": Readiness},
    **problems(404, 502, 504),
}


def router(
    spec: ServiceSpec,
    settings: ServiceSettings,
    clients: dict[str, httpx.AsyncClient],
    answers: dict[str, Endpoint],
    resources: Resources | None = None,
    steps: Mapping[str, DataStep] | None = None,
) -> APIRouter:
    r = APIRouter(tags=["platform"])
    reached = spec.reached() if spec.gateway else {}
    own = {d.name for d in spec.dependencies}
    # the gateway documents the services it reaches as an enum; a relay goes where the route says
    service_param = Path(
        description="A service this one can probe",
        json_schema_extra={"enum": sorted({spec.name, *reached})} if spec.gateway else None,
    )
    endpoint_param = Path(
        description="Which of its health endpoints", json_schema_extra={"enum": list(spec.health_paths())}
    )

    @r.get("/platform/health/{service}/{endpoint}", responses=PROBE_RESPONSES, response_model=None)
    async def service_health(
        request: Request, service: str = service_param, endpoint: str = endpoint_param
    ) -> Response:
        paths = spec.health_paths()
        if endpoint not in paths:
            return _error(404, service, f"no endpoint '{endpoint}': use one of {', '.join(paths)}")
        if service == spec.name:
            response = await answers[endpoint]()
            response.headers[VIA_HEADER] = spec.name
            return response
        if spec.gateway:
            if service not in reached:
                return _error(404, service, f"{service} is not reachable from {spec.name} along declared dependencies")
            steps = spec.route(reached, service)
        else:
            # the route the gateway computed (the edge drops any a client sends it); without
            # one, only a dependency of this service itself can be probed
            steps = tuple(request.headers.get(ROUTE_HEADER, service).split(","))
            if steps[-1] != service:
                return _error(404, service, f"the route {','.join(steps)} does not end at {service}")
        nxt = steps[0]
        if nxt not in own:
            return _error(404, service, f"{nxt} is not a declared dependency of {spec.name}: no probe through it")
        # the last step calls the target's own endpoint; earlier steps ask the next relay
        path = paths[endpoint] if nxt == service else f"/platform/health/{service}/{endpoint}"
        timeout, headers = Deadline.of(
            request.headers, settings.request_timeout_seconds, settings.connect_timeout_seconds
        ).next_hop()
        if len(steps) > 1:
            headers = {**headers, ROUTE_HEADER: ",".join(steps[1:])}
        try:
            upstream = await clients[nxt].get(
                path, timeout=timeout, headers=headers, extensions={"nexus_no_retry": True}
            )
        except httpx.TimeoutException:
            return _error(504, service, f"{spec.name} timed out calling {nxt}", broken=nxt)
        except httpx.HTTPError as exc:
            return _error(502, service, f"{spec.name} could not reach {nxt}: {type(exc).__name__}", broken=nxt)
        passed = {k: v for k, v in upstream.headers.items() if k in PASSED_ON}
        passed[VIA_HEADER] = f"{spec.name},{upstream.headers.get(VIA_HEADER, nxt)}"
        return Response(upstream.content, status_code=upstream.status_code, headers=passed)

    if spec.gateway:
        r.add_api_route(
            "/platform/flows/{flow}",
            flows.handler(spec, settings, clients, resources, steps),
            methods=["GET"],
            name="platform_flow",
            **flows.CONTRACT,
        )

        @r.get("/platform", response_model=PlatformIndex)
        async def index() -> PlatformIndex:
            return {"gateway": spec.name, "flows": sorted(spec.flows), "services": sorted({spec.name, *reached})}

    return r


def _error(status: int, service: str, error: str, broken: str | None = None) -> JSONResponse:
    return JSONResponse(
        Problem(service=service, error=error), status_code=status, headers={BROKEN_HEADER: broken} if broken else None
    )
