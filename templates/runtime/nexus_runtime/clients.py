"""One httpx client per dependency: timeouts, bounded retries for idempotent calls, trace headers."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Mapping
from functools import cache

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
        transport = RetryTransport(
            httpx.AsyncHTTPTransport(verify=_tls(), limits=POOL), settings.retries, settings.retry_backoff_seconds
        )
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
