"""The WebSocket endpoint of live-streaming services: a connected client gets a hello, then each
text message back tagged with the service, and each binary message back as it was sent (the
team's own handler replaces the echo). And the gateway's relay to them (``relay_router``).

Ping, pong and the close handshake are the server's (uvicorn with the `websockets` library).
A message larger than WS_MAX_MESSAGE_BYTES closes the connection with 1009 (message too big):
the server enforces it while reading (serve.config), and the handler again, for a
server started without those options (``uvicorn <pkg>.main:app``). Text that is not UTF-8
is closed by the server with 1007. Every close is a close frame with a code, never a dropped
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status
from fastapi.responses import JSONResponse
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from . import tracing
from .schemas import Problem
from .settings import ServiceSettings
from .spec import ServiceSpec

PATH = "/ws"  # a live service's own endpoint
RELAY = "/live/{service}"  # the gateway's relay to the PATH of each dependency that serves one
# close codes that say why a connection ended but are never sent in a close frame (RFC 6455 7.4.1)
_NOT_SENT = {1005: status.WS_1000_NORMAL_CLOSURE, 1006: status.WS_1011_INTERNAL_ERROR}


def router(spec: ServiceSpec, settings: ServiceSettings, log: logging.Logger) -> APIRouter:
    r = APIRouter(tags=["live"])
    limit = settings.ws_max_message_bytes

    @r.websocket(PATH)
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        received, code = 0, status.WS_1000_NORMAL_CLOSURE
        try:
            await ws.send_json({"service": spec.name, "event": "connected"})
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    code = message.get("code", status.WS_1000_NORMAL_CLOSURE)
                    break
                text, data = message.get("text"), message.get("bytes")
                received += 1
                if len(text.encode() if text is not None else data or b"") > limit:
                    code = status.WS_1009_MESSAGE_TOO_BIG
                    await ws.close(code, f"a message is at most {limit} bytes")
                    break
                if text is not None:
                    await ws.send_json({"service": spec.name, "event": "message", "data": text})
                else:
                    await ws.send_bytes(data or b"")
        except WebSocketDisconnect as gone:
            code = gone.code
        log.info("websocket closed", extra={"route": PATH, "code": code, "messages": received})

    return r


def relay_router(spec: ServiceSpec, settings: ServiceSettings, log: logging.Logger) -> APIRouter:
    """The gateway's WebSocket relays: ``/live/<service>`` is that dependency's ``/ws``, for each
    dependency that serves one. The gateway is the platform's only way in (the NetworkPolicies
    admit outside traffic to it alone), so without a relay no client outside could reach live
    streaming. Each client connection gets its own upstream one, opened before the client's
    handshake is answered (a dependency that cannot be reached is an HTTP 502, not an accepted
    connection that closes) and with the handshake's request id, trace and client key, by which
    a mesh keeps the client on one pod. Then every message goes each way as it comes, and the
    close code of the side that closes first goes to the other."""
    r = APIRouter(tags=["live"])
    targets = {d.name: d.setting for d in spec.dependencies if d.websocket}

    @r.websocket(RELAY)
    async def relay(ws: WebSocket, service: str) -> None:
        if service not in targets:
            error = f"{service} is not a live service this gateway reaches"
            await _refuse(ws, 404, Problem(service=service, error=error))
            return
        base = str(getattr(settings, targets[service])).rstrip("/")
        trace = tracing.current.get()
        try:
            upstream = await connect(
                "ws" + base.removeprefix("http") + PATH,  # http -> ws, https -> wss
                additional_headers=trace.outgoing() if trace else None,
                proxy=None,  # the dependency's own address, never a proxy from the environment
                compression=None,  # a hop inside the platform: no CPU spent on deflate
                open_timeout=settings.request_timeout_seconds,
                max_size=settings.ws_max_message_bytes,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            log.warning("websocket relay failed", extra={"target": service, "error": type(exc).__name__})
            await _refuse(ws, 502, Problem(service=service, error=f"unreachable: {type(exc).__name__}"))
            return
        await ws.accept()
        async with upstream:
            code = await _pass_messages(ws, upstream)
        log.info("websocket relay closed", extra={"route": RELAY, "target": service, "code": code})

    return r


async def _refuse(ws: WebSocket, status_code: int, problem: Problem) -> None:
    """Answer the handshake with an HTTP error, where the server can (ASGI's denial response
    extension, which uvicorn has); else accept and close with 1014 (bad gateway)."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse(problem, status_code=status_code))
    else:
        await ws.accept()
        await ws.close(1014, problem["error"][:120])


async def _pass_messages(ws: WebSocket, upstream: ClientConnection) -> int:
    """Each side's messages to the other until one side closes; that side's close code goes to
    the other side too. Returns the code."""

    async def from_client() -> int:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or status.WS_1000_NORMAL_CLOSURE)
                await upstream.close(_NOT_SENT.get(code, code))
                return code
            text = message.get("text")
            await upstream.send(text if text is not None else message.get("bytes") or b"")

    async def from_upstream() -> int:
        with contextlib.suppress(ConnectionClosed):
            async for data in upstream:
                if isinstance(data, str):
                    await ws.send_text(data)
                else:
                    await ws.send_bytes(data)
        code = upstream.close_code or 1006
        # the client may be gone already (it closed first, or its connection broke)
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await ws.close(_NOT_SENT.get(code, code), upstream.close_reason or "")
        return code

    client, service = asyncio.create_task(from_client()), asyncio.create_task(from_upstream())
    done, _ = await asyncio.wait((client, service), return_when=asyncio.FIRST_COMPLETED)
    first = client if client in done else service
    if first is client and isinstance(client.exception(), ConnectionClosed):
        # the service closed while a message was on its way to it: its side says why
        await asyncio.wait((service,))
        first = service
    for task in (client, service):
        task.cancel()
    await asyncio.gather(client, service, return_exceptions=True)
    return first.result() if not first.cancelled() and first.exception() is None else status.WS_1011_INTERNAL_ERROR
