"""Critical paths, end to end: each service on a flow serves GET /flows/<flow>, calls the next
hop, and returns the hops so far with their timings. A broken hop is named in the answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from .settings import ServiceSettings
from .spec import ServiceSpec


def router(spec: ServiceSpec, settings: ServiceSettings, clients: dict[str, httpx.AsyncClient]) -> APIRouter:
    r = APIRouter(tags=["flows"])

    @r.get("/flows/{flow}")
    async def run_flow(flow: str) -> JSONResponse:
        hop = spec.flows.get(flow)
        if hop is None:
            raise HTTPException(404, f"{spec.name} is not on flow '{flow}'; it is on: {', '.join(sorted(spec.flows)) or 'none'}")
        start = time.perf_counter()
        if settings.inject_delay_ms:
            await asyncio.sleep(settings.inject_delay_ms / 1000)
        downstream: list[dict[str, Any]] = []
        broken: str | None = None
        if hop.next and hop.external:
            downstream = [{"service": hop.next, "external": True}]
        elif hop.next:
            downstream, broken = await _call(clients[hop.next], hop.next, flow)
        me = {"service": spec.name, "ms": round((time.perf_counter() - start) * 1000, 3)}
        body: dict[str, Any] = {"flow": flow, "ok": broken is None, "hops": [me, *downstream]}
        if broken:
            body["broken"] = broken
        return JSONResponse(body, status_code=200 if broken is None else 502)

    return r


async def _call(client: httpx.AsyncClient, name: str, flow: str) -> tuple[list[dict[str, Any]], str | None]:
    """The next hop's hops, or a record naming it (or whoever it names) as broken."""
    try:
        response = await client.get(f"/flows/{flow}")
        body = response.json()
    except httpx.TimeoutException:
        return [{"service": name, "error": "timed out"}], name
    except (httpx.HTTPError, ValueError) as exc:
        return [{"service": name, "error": type(exc).__name__}], name
    if response.status_code == 200 and body.get("ok"):
        return body["hops"], None
    return body.get("hops") or [{"service": name, "error": f"http {response.status_code}"}], body.get("broken", name)
