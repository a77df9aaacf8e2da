"""The WebSocket endpoint of live-streaming services: a connected client gets a hello and its
messages back, tagged with the service (the team's own handler replaces the echo)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from .spec import ServiceSpec


def router(spec: ServiceSpec) -> APIRouter:
    r = APIRouter(tags=["live"])

    @r.websocket("/ws")
    async def live(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_json({"service": spec.name, "event": "connected"})
        try:
            while True:
                await ws.send_json({"service": spec.name, "event": "message", "data": await ws.receive_text()})
        except WebSocketDisconnect:
            return

    return r
