"""create_app: a service's spec and settings in, a complete FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from . import flows, health, live, logs, platform_routes, tracing
from .clients import build_clients, close_all
from .metrics import Metrics, MetricsMiddleware
from .settings import ServiceSettings
from .spec import ServiceSpec


class TraceMiddleware:
    """Adopt or start the request id and trace for each request, and echo the id back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        trace = tracing.from_headers(headers.get("x-request-id"), headers.get("traceparent"))
        token = tracing.current.set(trace)

        async def send_with_id(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", trace.request_id.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            tracing.current.reset(token)


def create_app(
    spec: ServiceSpec,
    settings_class: type[ServiceSettings],
    routes: APIRouter | None = None,
    settings: ServiceSettings | None = None,
) -> FastAPI:
    """Build the service. ``settings`` overrides the environment (tests, the embedded runner)."""
    settings = settings or settings_class()
    log = logs.logger(spec.name, settings.log_level, settings.json_logs)
    metrics = Metrics(spec.name)
    clients = build_clients(spec, settings)
    readiness = health.Readiness(spec, settings, clients)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.info("started", extra={"port": settings.port, "dependencies": [d.name for d in spec.dependencies]})
        yield
        # Graceful shutdown: fail readiness first so traffic drains, then close the clients.
        readiness.shutting_down = True
        await close_all(clients)
        log.info("stopped")

    app = FastAPI(title=spec.name, description=spec.description, version="1.0.0", lifespan=lifespan)
    app.state.spec, app.state.settings, app.state.clients, app.state.metrics = spec, settings, clients, metrics
    answers = health.endpoints(spec, readiness, metrics)
    app.include_router(health.router(spec, answers))
    if spec.flows:
        app.include_router(flows.router(spec, settings, clients))
    if spec.gateway or spec.relay:
        app.include_router(platform_routes.router(spec, settings, clients, answers))
    if spec.websocket:
        app.include_router(live.router(spec))
    if routes is not None:
        app.include_router(routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(TraceMiddleware)
    return app
