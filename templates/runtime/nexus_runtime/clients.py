"""One httpx client per dependency: timeouts, bounded retries for idempotent calls, trace headers."""

from __future__ import annotations

import asyncio
import random
import select
import socket
import ssl
from collections.abc import Iterable, Mapping
from functools import cache

import httpcore
import httpx

from . import tracing
from .serve import KEEP_ALIVE_SECONDS
from .settings import ServiceSettings
from .spec import ServiceSpec

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
RETRY_STATUS = frozenset({502, 503, 504})
# A Nexus service that names a broken hop has already retried it: its answer is final.
BROKEN_HEADER = "x-nexus-broken"
# Failures before any answer arrived: safe to repeat for an idempotent request. A ReadError or
# WriteError is what a request gets on a kept-alive connection the server closed meanwhile.
RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# Up to 100 connections per dependency, of which 20 are kept idle between calls (httpx's
# default), let go before the server's keep-alive timeout (serve.py) so a request is never sent
# on a connection the server is closing at that moment. Keeping all 100 idle was measured
# slower, not faster: httpcore's pool checks every idle connection (a poll() each, and a count
# of the idle ones for each) on every request and every answer, so its cost grows with the
# square of the idle connections; at 50 concurrent flows it took half a hop's CPU, more than
# the TCP handshakes the smaller pool costs (docs/running.md, Load).
POOL = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=KEEP_ALIVE_SECONDS - 5)


class RetryTransport(httpx.AsyncBaseTransport):
    """Retries idempotent requests on connection errors (RETRY_ERRORS) and 502/503/504, with jittered
    exponential backoff. httpx's own ``retries=`` only covers failed connects, and only once
    per attempt, so the bounded policy lives here. A timeout is not retried: the caller's
    time budget (deadline.py) is already spent."""

    def __init__(self, inner: httpx.AsyncBaseTransport, retries: int, backoff: float) -> None:
        self._inner, self._retries, self._backoff = inner, retries, backoff

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        retryable = request.method in IDEMPOTENT and not request.extensions.get("nexus_no_retry")
        attempts = self._retries + 1 if retryable else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self._inner.handle_async_request(request)
            except RETRY_ERRORS:
                if last:
                    raise
            else:
                if response.status_code not in RETRY_STATUS or BROKEN_HEADER in response.headers or last:
                    return response
                await response.aclose()
            await asyncio.sleep(self._backoff * (2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Stream(httpcore.AsyncNetworkStream):
    """A pooled connection's stream that answers httpcore's "is_readable" with the socket it
    looked up once. httpcore asks it of every idle connection on every request and answer;
    anyio answers by building a table of the socket's attributes, with a getpeername() system
    call, each time: measured at a sixth of a hop's CPU under load. Everything else is anyio's."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.start_tls(ssl_context, server_hostname, timeout)

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable" and self._socket is not None:
            # idle and readable means the server closed it (httpcore then drops the connection)
            poller = select.poll()
            poller.register(self._socket, select.POLLIN)
            return bool(poller.poll(0))
        return self._inner.get_extra_info(info)


# what httpcore's backends take as socket_options (setsockopt's arguments)
SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Backend(httpcore.AsyncNetworkBackend):
    """anyio's connections (the services run on asyncio), each in a _Stream."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _transport() -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(verify=_tls(), limits=POOL)
    # httpx has no parameter for httpcore's network_backend (httpcore's pool takes one): set on
    # the pool it made; tests/test_runtime_load.py fails if a connection is not a _Stream
    transport._pool._network_backend = _Backend()
    return transport


async def _add_trace(request: httpx.Request) -> None:
    trace = tracing.current.get()
    if trace is not None:
        request.headers.update(trace.outgoing())


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process, shared by every client. httpx builds one per transport by
    default, loading the CA bundle each time: about 25 ms per dependency at start-up."""
    return httpx.create_ssl_context()


def build_clients(spec: ServiceSpec, settings: ServiceSettings) -> dict[str, httpx.AsyncClient]:
    timeout = httpx.Timeout(settings.request_timeout_seconds, connect=settings.connect_timeout_seconds)
    clients = {}
    for dep in spec.dependencies:
        transport = RetryTransport(_transport(), settings.retries, settings.retry_backoff_seconds)
        clients[dep.name] = httpx.AsyncClient(
            base_url=str(getattr(settings, dep.setting)),
            timeout=timeout,
            transport=transport,
            event_hooks={"request": [_add_trace]},
            headers={"user-agent": f"{spec.name} (nexus)"},
        )
    return clients


async def close_all(clients: Mapping[str, httpx.AsyncClient]) -> None:
    await asyncio.gather(*(c.aclose() for c in clients.values()))
