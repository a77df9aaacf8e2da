"""The WebSocket endpoint of live-streaming services: a connected client gets a hello, then each
text message back tagged with the service, and each binary message back as it was sent (the
team's own handler replaces the echo).

Ping, pong and the close handshake are the server's (uvicorn with the `websockets` library).
A message larger than WS_MAX_MESSAGE_BYTES closes the connection with 1009 (message too big):
the server enforces it while reading (serve.config), and the handler again, for a
server started without those options (``uvicorn <pkg>.main:app``). Text that is not UTF-8
is closed by the server with 1007. Every close is a close frame with a code, never a dropped
connection.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status

from .settings import ServiceSettings
from .spec import ServiceSpec


def router(spec: ServiceSpec, settings: ServiceSettings, log: logging.Logger) -> APIRouter:
    r = APIRouter(tags=["live"])
    limit = settings.ws_max_message_bytes

    @r.websocket("/ws")
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
        log.info("websocket closed", extra={"route": "/ws", "code": code, "messages": received})

    return r
