"""What every service's generated tests share: its real app with every dependency down, and
the checks of the spec's four health endpoints. Each service's tests call these; the checks
are written once, here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter
from fastapi.testclient import TestClient

from .app import create_app
from .settings import ServiceSettings
from .spec import ServiceSpec

# Port 9 (discard) refuses connections at once: every dependency is down, deterministically.
DOWN = "http://127.0.0.1:9"


@contextmanager
def client_with_dependencies_down(
    spec: ServiceSpec, settings_class: type[ServiceSettings], routes: APIRouter | None
) -> Iterator[TestClient]:
    values: dict[str, Any] = {"retries": 0, "json_logs": False} | {d.setting: DOWN for d in spec.dependencies}
    app = create_app(spec, settings_class, routes, settings=settings_class(**values))
    with TestClient(app) as client:
        yield client


def check_health_and_liveness(client: TestClient, spec: ServiceSpec) -> None:
    """/health and /health/live answer 200 whatever the dependencies do."""
    for path in (spec.health_path, spec.live_path):
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["service"] == spec.name


def check_readiness_follows_hard_dependencies(client: TestClient, spec: ServiceSpec) -> None:
    """With every dependency down (its infrastructure unconfigured), ready only when the service
    can still serve something: it uses no infrastructure, and has no hard dependency (its own
    routes) or is on a flow that calls no other service."""
    response = client.get(spec.ready_path)
    serves_alone = not spec.hard or any(hop.next is None or hop.external for hop in spec.flows.values())
    assert response.status_code == (200 if serves_alone and not spec.resources else 503), response.text
    flow_next = {hop.next for hop in spec.flows.values() if hop.next and not hop.external}
    own = {r.name for r in spec.resources}
    assert set(response.json()["dependencies"]) == {d.name for d in spec.hard} | flow_next | own


def check_metrics(client: TestClient, spec: ServiceSpec) -> None:
    """/metrics is Prometheus text and counts the requests served, by route and status."""
    client.get(spec.health_path)
    response = client.get(spec.metrics_path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert f'http_requests_total{{method="GET",route="{spec.health_path}",status="200"}}' in response.text
