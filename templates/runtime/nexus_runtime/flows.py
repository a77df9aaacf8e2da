"""Critical paths, end to end: each service on a flow serves GET /flows/<flow>, calls the next
hop, and returns the hops so far with their timings. A broken hop is named in the answer.

A failed answer carries the ``x-nexus-broken`` header: it is final, so callers up the chain
pass it on instead of retrying it (a retry at every hop would multiply the calls at the bottom
of the chain by 3 per hop, and the time to fail with them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse

from . import tracing
from .clients import BROKEN_HEADER
from .data import DataHopError, DataStep, record_flow
from .deadline import Deadline
from .resources import Resources
from .schemas import FlowResult, NotFound, problems
from .settings import ServiceSettings
from .spec import ServiceSpec


def handler(
    spec: ServiceSpec,
    settings: ServiceSettings,
    clients: dict[str, httpx.AsyncClient],
    resources: Resources | None = None,
    steps: Mapping[str, DataStep] | None = None,
) -> Callable[[Request, str], Awaitable[JSONResponse]]:
    """The flow endpoint: served at /flows/<flow>, and on the gateway also at /platform/flows/<flow>."""

    # the flows it is on, as an enum in the OpenAPI document; any other name answers 404
    flow_param = Path(description=f"A critical path {spec.name} is on", json_schema_extra={"enum": sorted(spec.flows)})

    async def run_flow(request: Request, flow: str = flow_param) -> JSONResponse:
        hop = spec.flows.get(flow)
        if hop is None:
            raise HTTPException(
                404, f"{spec.name} is not on flow '{flow}'; it is on: {', '.join(sorted(spec.flows)) or 'none'}"
            )
        start = time.perf_counter()
        deadline = Deadline.of(request.headers, settings.request_timeout_seconds, settings.connect_timeout_seconds)
        if settings.inject_delay_ms:
            await asyncio.sleep(settings.inject_delay_ms / 1000)
        trace = tracing.current.get()
        request_id = trace.request_id if trace else uuid.uuid4().hex

        async def onward() -> tuple[Hops, str | None, int]:
            if hop.next and hop.external:
                return [{"service": hop.next, "external": True}], None, 200
            if hop.next:
                return await _call(clients[hop.next], hop.next, flow, deadline)
            return [], None, 200

        # its own data step and the next hop at once: the data step spends none of the next hop's budget
        data, (downstream, broken, status) = await asyncio.gather(
            _own_data(resources, steps, flow, request_id), onward()
        )
        if isinstance(data, DataHopError):
            # its own database or cache failed: this hop is the broken one, whatever followed
            failed = {"service": spec.name, "error": str(data), "ms": round((time.perf_counter() - start) * 1000, 3)}
            answer = {"flow": flow, "ok": False, "hops": [failed], "broken": spec.name}
            return JSONResponse(answer, status_code=503, headers={BROKEN_HEADER: spec.name})
        me: dict[str, Any] = {"service": spec.name, "ms": round((time.perf_counter() - start) * 1000, 3)}
        if data:
            me["data"] = data
        body: dict[str, Any] = {"flow": flow, "ok": broken is None, "hops": [me, *downstream]}
        if broken is None:
            return JSONResponse(body)
        body["broken"] = broken
        return JSONResponse(body, status_code=status, headers={BROKEN_HEADER: broken})

    return run_flow


# the flow endpoint's OpenAPI declaration: a 502 (a hop answered badly or too late) or a 503 (a
# hop could not be reached) names the broken hop in the same body
CONTRACT: dict[str, Any] = {
    "response_model": FlowResult,
    "responses": {**problems(502, 503, model=FlowResult), **problems(404, model=NotFound)},
}


def router(
    spec: ServiceSpec,
    settings: ServiceSettings,
    clients: dict[str, httpx.AsyncClient],
    resources: Resources,
    steps: Mapping[str, DataStep],
) -> APIRouter:
    r = APIRouter(tags=["flows"])
    r.add_api_route(
        "/flows/{flow}", handler(spec, settings, clients, resources, steps), methods=["GET"], name="flow", **CONTRACT
    )
    return r


Hops = list[dict[str, Any]]


async def _own_data(
    resources: Resources | None, steps: Mapping[str, DataStep] | None, flow: str, request_id: str
) -> Hops | DataHopError:
    if resources is None:
        return []
    try:
        return await record_flow(resources, flow, request_id, steps)
    except DataHopError as exc:
        return exc


async def _call(client: httpx.AsyncClient, name: str, flow: str, deadline: Deadline) -> tuple[Hops, str | None, int]:
    """The next hop's hops, or a record naming it (or whoever it names) as broken, with the
    status to answer: 503 when the broken hop could not be reached (it is down: the caller may
    try again later), 502 when it answered badly or too late. A final answer from further down
    (it names the broken hop) keeps its status."""
    timeout, headers = deadline.next_hop()
    start = time.perf_counter()
    # Only what the next hop did is blamed on it: an error raised here while building the
    # request is this hop's own, and surfaces as its 500 (its caller then names it).
    try:
        response = await client.get(f"/flows/{flow}", timeout=timeout, headers=headers)
    except httpx.TimeoutException:
        waited = round((time.perf_counter() - start) * 1000)
        return [{"service": name, "error": f"timed out after {waited} ms"}], name, 502
    except httpx.ConnectError as exc:
        return [{"service": name, "error": f"unreachable: {type(exc).__name__}"}], name, 503
    except httpx.HTTPError as exc:
        return [{"service": name, "error": type(exc).__name__}], name, 502
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return [{"service": name, "error": f"http {response.status_code}, not a flow answer"}], name, 502
    if response.status_code == 200 and body.get("ok"):
        return body["hops"], None, 200
    status = response.status_code if BROKEN_HEADER in response.headers else 502
    hops = body.get("hops") or [{"service": name, "error": f"http {response.status_code}"}]
    return hops, body.get("broken", name), status
