"""The gateway is the platform's outside edge: what a client sends in the platform's own headers
(``x-nexus-*``: a chain's time budget, a relay's route, a broken hop, the client key) is dropped
there, so no client can shorten a chain's budget, pose as a hop or choose its pods. Inside, each
hop sets them itself.

The edge sets one of them: the client key (tracing.CLIENT_HEADER), from the client's address as
the proxy in front of the gateway saw it, the last address of X-Forwarded-For (the one that
proxy added; those before it are the client's own words), or the connection's peer where no
proxy is in front (`nexus up`, a port-forward)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .tracing import CLIENT_HEADER, client_key

INTERNAL_PREFIX = b"x-nexus-"
FORWARDED_FOR = b"x-forwarded-for"


def client_address(scope: Scope) -> str | None:
    """The client's address as the nearest proxy saw it, else the connection's peer."""
    forwarded: list[bytes] = [value for key, value in scope["headers"] if key == FORWARDED_FOR]
    if forwarded:
        last = forwarded[-1].decode("latin-1").rsplit(",", 1)[-1].strip()
        if last:
            return last
    peer = scope.get("client")
    return str(peer[0]) if peer else None


class EdgeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = [(k, v) for k, v in scope["headers"] if not k.startswith(INTERNAL_PREFIX)]
            address = client_address(scope)
            if address is not None:
                headers.append((CLIENT_HEADER.encode("ascii"), client_key(address).encode("ascii")))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)
