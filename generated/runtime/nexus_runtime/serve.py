"""Run one service with uvicorn on its configured host and port, shutting down gracefully.

Both ways of running a service listen on a socket made by ``listen``: ``python -m <package>``
(here) and `nexus up`'s embedded host (nexus.local.host)."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import time
from functools import partial
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .health import Readiness
from .settings import ServiceSettings

# How long a server keeps an idle connection open (uvicorn's default is 5 s). Callers keep theirs
# for less (clients.py), so they close first and never send on a connection being closed. Long
# enough that a pool keeps its connections between bursts: a pool that reconnects under load
# was measured to stall requests for seconds (httpcore, see docs/running.md, Load).
KEEP_ALIVE_SECONDS = 65


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


class BoundedHead(HttpToolsProtocol):
    """uvicorn's protocol on httptools (its C parser, which it picks when installed), with a
    bound on a request's head, its request line and headers, in bytes and in time. uvicorn
    bounds a head's size only on h11 (``h11_max_incomplete_event_size``), the pure-Python parser,
    measured to serve a third fewer requests a second here; on httptools a head of any size was
    read into memory (a 200 MB header was, the service then held 289 MB). And no head has a
    time limit: a connection that sends nothing, or a head a byte at a time, was kept open for
    ever, each holding a file descriptor of the 1,024 a process may have (slowloris).

    A head still incomplete after ``max_head`` bytes is answered 431, one not complete within
    ``head_timeout`` seconds of the connection or of the read that began it 408; either closes
    the connection. (Between requests, uvicorn's keep-alive timeout applies.) Bytes are counted
    in ``data_received``, after the parser has read them: a read in which the head is still
    incomplete holds head bytes alone, except the read in which the request began, which may
    end the one before it and is left out of the count (its size is bounded by the transport's
    read size). A head that comes in one read, as nearly all do, starts no timer. Written here
    as uvicorn has no such settings for httptools; the methods it extends are uvicorn's
    protocol and parser callbacks (tests/test_hostile_clients.py sends the heads)."""

    def __init__(self, *args: Any, max_head: int, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head, self.head_timeout = max_head, head_timeout
        self.head_bytes, self.in_head, self.began = 0, False, False
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._untime_head()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_head, self.head_bytes, self.began = True, 0, True

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._untime_head()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        self.began = False
        super().data_received(data)
        if not self.in_head or self.transport.is_closing():
            return
        if self.head_timer is None:  # timed only once it spans reads: most heads come in one
            self._time_head()
        if not self.began:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head:
                self._refuse(HEAD_TOO_LARGE)

    def _time_head(self) -> None:
        self.head_timer = self.loop.call_later(self.head_timeout, self._refuse, HEAD_TOO_SLOW)

    def _untime_head(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _refuse(self, answer: bytes) -> None:
        self.in_head = False
        self._untime_head()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


def _plain(status: str) -> bytes:
    """A whole HTTP/1.1 answer of ``status`` that closes the connection, its reason as its body."""
    reason = status.split(" ", 1)[1].encode()
    head = f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(reason)}\r\n"
    return head.encode() + b"connection: close\r\n\r\n" + reason


HEAD_TOO_LARGE = _plain("431 Request Header Fields Too Large")
HEAD_TOO_SLOW = _plain("408 Request Timeout")


def config(app: Any, settings: ServiceSettings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings every service runs with, in its own process or in the embedded host."""
    values: dict[str, Any] = {
        "http": partial(
            BoundedHead, max_head=settings.max_request_head_bytes, head_timeout=settings.request_head_timeout_seconds
        ),
        "access_log": False,  # the runtime writes its own JSON access line (metrics.py)
        "ws_max_size": settings.ws_max_message_bytes,  # WebSocket frames are refused past this (1009)
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
        # asyncio's loop even where uvloop is installed: the embedded host runs on it, and with
        # uvloop 0.23 httpx calls were measured to stall for seconds and fail with ReadError
        "loop": "asyncio",
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        **overrides,
    }
    return uvicorn.Config(app, **values)


class Draining(uvicorn.Server):
    """uvicorn's server, which at the first SIGTERM drains before it stops: readiness fails at
    once, and connections are still accepted and served for ``drain`` seconds (settings'
    ``shutdown_drain_seconds``). uvicorn stops listening at the signal itself, so during a
    rolling update the callers that had not yet heard of the pod's end were refused. A second
    SIGTERM, or SIGINT (Ctrl-C), stops at once, as uvicorn does."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness, drain: float) -> None:
        super().__init__(config)
        self.readiness, self.drain = readiness, drain
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain > 0 and self.drain_until is None:
            # a signal handler: it only sets two attributes; on_tick, in the loop, does the rest
            self._captured_signals.append(sig)  # uvicorn raises it again once stopped, as it would
            self.readiness.shutting_down = True
            self.drain_until = time.monotonic() + self.drain
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)


def server(app: FastAPI) -> tuple[uvicorn.Server, socket.socket]:
    """The service's uvicorn server and the socket it will listen on."""
    settings = app.state.settings
    cfg = config(app, settings, log_level=settings.log_level.lower())
    return Draining(cfg, app.state.readiness, settings.shutdown_drain_seconds), listen(settings.host, settings.port)


def serve(app: FastAPI) -> None:
    """Serve until SIGINT or SIGTERM; a port that cannot be bound stops the start with a message."""
    try:
        srv, sock = server(app)
    except OSError as exc:
        raise SystemExit(f"{app.state.spec.name}: {exc}") from None
    # what was built to start (modules, the app, its clients) lives as long as the process: keep
    # the garbage collector from walking it again at every full collection under load
    gc.collect()
    gc.freeze()
    srv.run(sockets=[sock])
