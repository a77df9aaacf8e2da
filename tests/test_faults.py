"""Faults, with real services on loopback: a hard dependency stops and comes back; a
dependency is slow; a broken hop is not retried at every level of the chain; an outage on the
shipped platform takes out of rotation only what cannot serve anything without it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml
from conftest import CATALOG, nexus
from prometheus_client.parser import text_string_to_metric_families
from running import free_ports, listening, platform, status_code, until, write_platform

MODES = ["embedded", "process"]


def _chain(minimal):
    """The minimal catalog with a three-hop login flow: gateway -> auth -> store."""
    minimal["services"]["store"] = {
        "port": 1,
        "category": "platform",
        "team": "core",
        "description": "Credential store",
    }
    minimal["services"]["auth"]["depends_on"] = {"store": "hard"}
    minimal["stages"][1]["services"] = ["auth", "store"]
    minimal["flows"]["login"]["hops"] = ["gateway", "auth", "store"]
    return minimal


def _requests(port, route, status):
    """How many requests the service on ``port`` has counted for ``route`` with ``status``."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "http_requests_total" and s.labels["route"] == route and s.labels["status"] == str(status):
                return s.value
    return 0.0


@pytest.mark.parametrize("mode", MODES)
def test_stopped_hard_dependency_fails_readiness_not_liveness_and_recovers_on_restart(tmp_path, minimal, mode):
    # gateway -> auth -> store: auth can serve nothing without store (its routes need it, its
    # flow calls it); the gateway still serves the watch flow, so only auth goes unready
    catalog = write_platform(tmp_path / "demo", _chain(minimal))
    with platform(catalog, "--mode", mode) as ports:
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for _ in range(3):
            httpx.get(f"{url['gateway']}/health")
        assert nexus("down", "store", "-c", str(catalog)).returncode == 0

        until(lambda: status_code(f"{url['auth']}/health/ready") == 503, what="auth to become unready")
        assert httpx.get(f"{url['auth']}/health/ready").json()["dependencies"] == {
            "postgres": "ok",  # its own database (MINIMAL's auth uses it) is fine
            "store": "unreachable: ConnectError",
        }
        assert status_code(f"{url['auth']}/health/live") == 200
        # auth itself is up, so nothing the gateway serves waits on it; on a loaded machine one
        # probe of a healthy service (0.5 s) may time out, so the answer is awaited, not sampled once
        until(
            lambda: (
                (gateway := httpx.get(f"{url['gateway']}/health/ready")).status_code == 200
                and gateway.json()["unavailable"] == {}
            ),
            what="the gateway ready, nothing it serves unavailable",
        )
        result = nexus("verify", "-c", str(catalog))
        assert result.returncode == 1
        assert "flow login: broken at store" in result.stderr
        assert "service store:" in result.stderr.split("service auth:")[0]  # the cause is named before its effects

        assert nexus("restart", "store", "-c", str(catalog)).returncode == 0
        until(lambda: status_code(f"{url['auth']}/health/ready") == 200, what="auth to recover")
        assert nexus("verify", "-c", str(catalog)).returncode == 0
        # not restarted: the gateway still holds the requests it counted before the outage
        assert _requests(ports["gateway"], "/health", 200) >= 3


@pytest.mark.parametrize("mode", MODES)
def test_slow_dependency_fails_its_hop_fast_and_is_named(tmp_path, minimal, mode):
    catalog = write_platform(tmp_path / "demo", _chain(minimal))
    # store sleeps 60 s on the flow; every service gives up on a call after 1 s
    with platform(
        catalog, "--mode", mode, "--set", "request_timeout_seconds=1", "--set", "store.inject_delay_ms=60000"
    ) as ports:
        r = httpx.get(
            f"http://127.0.0.1:{ports['gateway']}/platform/flows/login", timeout=15
        )  # bounded: far below 60 s
        body = r.json()
        assert r.status_code == 502 and body["broken"] == "store"  # the slow one, not auth, which waited on it
        assert [h["service"] for h in body["hops"]] == ["gateway", "auth", "store"]
        assert "timed out" in body["hops"][-1]["error"]
        result = nexus("verify", "-c", str(catalog), timeout=60)
        assert result.returncode == 1 and "flow login: broken at store: timed out" in result.stderr

        assert nexus("restart", "store", "--set", "store.inject_delay_ms=0", "-c", str(catalog)).returncode == 0
        assert nexus("verify", "-c", str(catalog)).returncode == 0


def test_a_broken_hop_is_not_retried_up_the_chain(tmp_path, minimal):
    catalog = write_platform(tmp_path / "demo", _chain(minimal))
    with platform(catalog) as ports:
        assert nexus("down", "store", "-c", str(catalog)).returncode == 0
        r = httpx.get(f"http://127.0.0.1:{ports['gateway']}/flows/login", timeout=15)
        assert r.status_code == 503 and r.json()["broken"] == "store"  # 503: store is down, not broken
        # auth retried its own failed connection, then answered once with a final 503; the
        # gateway passed that on instead of asking auth again (which would ask store again)
        assert _requests(ports["auth"], "/flows/{flow}", 503) == 1


def test_an_outage_makes_unready_only_what_cannot_serve_anything_without_it(tmp_path):
    """The shipped platform without token-mgr, which 23 services hard-depend on. The gateway
    still serves two of its three flows, so it stays ready (in a cluster it stays in its
    Service); session-mgr, whose only flow calls token-mgr and whose routes need it, is the one
    on the flows that goes unready; the authentication flow fails fast, 503, naming token-mgr."""
    catalog = write_platform(tmp_path / "shipped", yaml.safe_load(CATALOG.read_text(encoding="utf-8")))
    with platform(catalog) as ports:
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        assert nexus("down", "token-mgr", "-c", str(catalog)).returncode == 0

        until(lambda: status_code(f"{url['session-mgr']}/health/ready") == 503, what="session-mgr to become unready")
        for name in ("backend-api", "auth-service", "user-auth", "content-management", "billing-service"):
            response = httpx.get(f"{url[name]}/health/ready")
            assert response.status_code == 200, (name, response.text)
        ready = httpx.get(f"{url['session-mgr']}/health/ready").json()
        assert ready["unavailable"] == {"routes": ["token-mgr"], "flow authentication": ["token-mgr"]}
        assert httpx.get(f"{url['backend-api']}/health/ready").json()["unavailable"] == {"routes": ["token-mgr"]}

        for flow in ("content-delivery", "payment-processing"):
            response = httpx.get(f"{url['backend-api']}/platform/flows/{flow}", timeout=10)
            assert response.status_code == 200 and response.json()["ok"], response.text
        response = httpx.get(f"{url['backend-api']}/platform/flows/authentication", timeout=10)
        body = response.json()
        assert response.status_code == 503 and body["broken"] == "token-mgr", response.text
        assert body["hops"][-1] == {"service": "token-mgr", "error": "unreachable: ConnectError"}


def _serve(catalog, service, port, drain):
    """``python -m <service>`` as its image runs it (its own uvicorn, its own signal handling)."""
    folder = catalog.parent / "generated"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder / "runtime"), str(folder / "services" / service)]),
        "PORT": str(port),
        "SHUTDOWN_DRAIN_SECONDS": str(drain),
    }
    return subprocess.Popen([sys.executable, "-m", service], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _readiness(url):
    try:
        return httpx.get(f"{url}/health/ready", timeout=5).json()["status"]
    except httpx.HTTPError:
        return None


def test_sigterm_drains_then_stops_and_a_second_sigterm_stops_at_once(tmp_path, minimal):
    """uvicorn stops listening at SIGTERM, while Kubernetes takes a moment to drop the pod from its
    Service's endpoints: in a rolling update, callers that had not heard yet were refused. The
    runtime fails readiness at once and goes on accepting and serving for SHUTDOWN_DRAIN_SECONDS,
    then stops as before; a second SIGTERM (or Ctrl-C) stops at once."""
    catalog = write_platform(tmp_path / "demo", minimal)
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    proc = _serve(catalog, "media", port, drain=3)
    try:
        until(lambda: status_code(f"{url}/health") == 200, what="media to start")
        assert _readiness(url) in ("ready", "not ready")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        until(lambda: _readiness(url) == "shutting down", what="readiness to fail", timeout=2)
        while time.monotonic() - signalled < 2:  # each call a new connection, as a caller's would be
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            time.sleep(0.1)
        assert proc.poll() is None
        proc.wait(timeout=20)
        assert time.monotonic() - signalled >= 3
        assert not listening(port)
    finally:
        proc.kill()
        proc.wait()
    proc = _serve(catalog, "media", port, drain=60)
    try:
        until(lambda: status_code(f"{url}/health") == 200, what="media to start again")
        proc.send_signal(signal.SIGTERM)
        until(lambda: _readiness(url) == "shutting down", what="readiness to fail", timeout=2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)  # not the 60 s drain
        assert b"Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
