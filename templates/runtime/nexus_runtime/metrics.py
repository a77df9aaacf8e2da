"""Prometheus metrics: requests by route and status, a latency histogram, requests in flight;
and the access log, one JSON line per request, written by the same middleware.

Each app gets its own registry, so many services can share one process (`nexus up`'s
embedded mode) without their series colliding. Label values are bounded by construction: a
route is its template (``/flows/{flow}``) or ``unmatched``, a method one of HTTP's or ``other``,
so no client can add series by making up paths or methods.
"""

from __future__ import annotations

import logging
import time
from functools import cache

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
OTHER_METHOD = "other"
UNMATCHED = "unmatched"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The series of one service. Each label set's child is looked up once (``cache``): the
    labels are bounded (above), and prometheus_client's ``labels()`` takes a lock and checks its
    arguments on every call, a measurable part of a hop under load."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = {"service": service}
        self.requests = cache(
            Counter(
                "http_requests", "HTTP requests handled.", ["route", "method", "status"], registry=self.registry
            ).labels
        )
        self.latency = cache(
            Histogram(
                "http_request_duration_seconds",
                "Time to handle a request.",
                ["route", "method"],
                buckets=BUCKETS,
                registry=self.registry,
            ).labels
        )
        self.in_flight = Gauge("http_requests_in_flight", "Requests being handled now.", registry=self.registry)
        Gauge("nexus_service_info", "Which service this is.", list(labels), registry=self.registry).labels(
            **labels
        ).set(1)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware): it adds no task per request, and it reads the
    route template after routing. ``access_log``, when given, gets one line per request (it
    runs inside the trace middleware, so the line carries the request and trace ids)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: logging.Logger | None = None) -> None:
        self.app, self.metrics, self.access_log = app, metrics, access_log

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
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else OTHER_METHOD
            self.metrics.requests(route=route, method=method, status=str(status)).inc()
            self.metrics.latency(route=route, method=method).observe(seconds)
            if self.access_log is not None and self.access_log.isEnabledFor(logging.INFO):
                extra = {"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 3)}
                self.access_log.info("request", extra=extra)
