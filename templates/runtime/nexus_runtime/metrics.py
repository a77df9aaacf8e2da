"""Prometheus metrics: requests by route and status, a latency histogram, requests in flight.

Each app gets its own registry, so many services can share one process (`nexus up`'s
embedded mode) without their series colliding.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"service": service}
        self.requests = Counter("http_requests", "HTTP requests handled.", ["route", "method", "status"], registry=self.registry).labels  # noqa: E501
        self.latency = Histogram("http_request_duration_seconds", "Time to handle a request.", ["route", "method"], buckets=BUCKETS, registry=self.registry).labels  # noqa: E501
        self.in_flight = Gauge("http_requests_in_flight", "Requests being handled now.", registry=self.registry)
        Gauge("nexus_service_info", "Which service this is.", list(labels), registry=self.registry).labels(**labels).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware): it adds no task per request, and it reads the
    route template after routing, so label values stay bounded (`/flows/{flow}`, not ids)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.in_flight.dec()
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests(route=route, method=method, status=str(status)).inc()
            self.metrics.latency(route=route, method=method).observe(time.perf_counter() - start)
