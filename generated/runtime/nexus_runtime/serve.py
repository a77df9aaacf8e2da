"""Run one service with uvicorn on its configured host and port, shutting down gracefully.

Both ways of running a service listen on a socket made by ``listen``: ``python -m <package>``
(here) and `nexus up`'s embedded host (generator/host.py)."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for a server to listen on.

    Made with protocol IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections whose
    socket says TCP, and without it a response written in two parts (head, then body) waits for
    the client's delayed ACK, about 40 ms per request on a kept-alive connection. uvicorn's own
    ``bind_socket`` makes protocol-0 sockets, so it is not used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def server(app: FastAPI) -> tuple[uvicorn.Server, socket.socket]:
    """The service's uvicorn server and the socket it will listen on."""
    settings = app.state.settings
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        access_log=False,  # the metrics middleware counts requests; JSON logs carry events
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    return uvicorn.Server(config), listen(settings.host, settings.port)


def serve(app: FastAPI) -> None:
    """Serve until SIGINT or SIGTERM; a port that cannot be bound stops the start with a message."""
    try:
        srv, sock = server(app)
    except OSError as exc:
        raise SystemExit(f"{app.state.spec.name}: {exc}") from None
    srv.run(sockets=[sock])
