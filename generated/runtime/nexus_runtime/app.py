"""create_app: a service's spec and settings in, a complete FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from . import flows, health, live, logs, platform_routes
from .clients import build_clients, close_all
from .data import steps_of
from .edge import EdgeMiddleware
from .events import Broker, Delivering, EventsSpec
from .metrics import Metrics, MetricsMiddleware
from .resources import build as build_resources
from .settings import ServiceSettings, load
from .spec import ServiceSpec
from .tracing import TraceMiddleware


def create_app(
    spec: ServiceSpec,
    settings_class: type[ServiceSettings],
    routes: APIRouter | None = None,
    settings: ServiceSettings | None = None,
    events: EventsSpec | None = None,
) -> FastAPI:
    """Build the service. ``settings`` overrides the environment (tests, the embedded runner);
    ``events`` is what it publishes and consumes (its generated events.py)."""
    settings = settings or load(settings_class, spec.name)
    log = logs.logger(spec.name, settings.log_level, settings.json_logs)
    metrics = Metrics(spec.name)
    clients = build_clients(spec, settings)
    resources = build_resources(spec, settings)
    steps = steps_of(routes, spec.name, resources)  # the team's own data steps (data.py)
    readiness = health.Readiness(spec, settings, clients, resources)
    broker = Broker(events, _delivering(settings)) if events else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if broker is not None and settings.broker_servers:
            password = settings.broker_password.get_secret_value() if settings.broker_password else None
            await broker.start(settings.broker_servers, settings.broker_user, password)
        elif broker is not None:
            log.warning("events are off: BROKER_SERVERS is not set")
        log.info("started", extra={"port": settings.port, "dependencies": [d.name for d in spec.dependencies]})
        yield
        # Graceful shutdown: fail readiness first so traffic drains, then close the clients.
        readiness.shutting_down = True
        if broker is not None:
            await broker.stop()
        await close_all(clients)
        await resources.close()
        log.info("stopped")

    docs = settings.api_docs
    app = FastAPI(
        title=spec.name,
        description=spec.description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        max_body_size=settings.max_request_body_bytes,
    )
    app.state.spec, app.state.settings, app.state.clients, app.state.metrics = spec, settings, clients, metrics
    app.state.resources = resources  # routes reach the database and cache here (resources.py)
    app.state.broker = broker
    app.state.readiness = readiness  # serve.Draining fails it at SIGTERM, before the server stops
    answers = health.endpoints(spec, readiness, metrics)
    app.include_router(health.router(spec, answers))
    if spec.flows:
        app.include_router(flows.router(spec, settings, clients, resources, steps))
    if spec.relays and settings.platform_routes:
        app.include_router(platform_routes.router(spec, settings, clients, answers, resources, steps))
    if spec.websocket:
        app.include_router(live.router(spec, settings, log))
    if spec.gateway and any(d.websocket for d in spec.dependencies):
        app.include_router(live.relay_router(spec, settings, log))
    if routes is not None:
        app.include_router(routes)
    # the last added runs first: the edge drops internal headers, then the trace is set, so
    # the access line (metrics middleware) carries its ids
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=log if settings.access_log else None)
    app.add_middleware(TraceMiddleware)
    if spec.gateway:
        app.add_middleware(EdgeMiddleware)
    return app


def _delivering(settings: ServiceSettings) -> Delivering:
    return Delivering(settings.event_max_attempts, settings.event_backoff_seconds, settings.event_batch)
