"""The gateway is the platform's outside edge: what a client sends in the platform's own headers
(``x-nexus-*``: a chain's time budget, a relay's route, a broken hop) is dropped there, so no
client can shorten a chain's budget or pose as a hop. Inside, each hop sets them itself."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

INTERNAL_PREFIX = b"x-nexus-"


class EdgeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = [(k, v) for k, v in scope["headers"] if not k.startswith(INTERNAL_PREFIX)]
            if len(headers) != len(scope["headers"]):
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
