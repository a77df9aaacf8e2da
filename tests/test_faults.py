"""Faults, with real services on loopback: a hard dependency stops and comes back; a
dependency is slow; a broken hop is not retried at every level of the chain."""

from __future__ import annotations

import httpx
import pytest
from conftest import nexus
from prometheus_client.parser import text_string_to_metric_families
from running import platform, status_code, until, write_platform

MODES = ["embedded", "process"]


def _chain(minimal):
    """The minimal catalog with a three-hop login flow: gateway -> auth -> store."""
    minimal["services"]["store"] = {"port": 1, "category": "platform", "team": "core", "description": "Credential store"}
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
    catalog = write_platform(tmp_path / "demo", minimal)
    with platform(catalog, "--mode", mode) as ports:
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for _ in range(3):
            httpx.get(f"{url['gateway']}/health")
        assert nexus("down", "auth", "-c", str(catalog)).returncode == 0

        for dependent in ("gateway", "media"):
            until(lambda d=dependent: status_code(f"{url[d]}/health/ready") == 503, what=f"{dependent} to become unready")
            assert status_code(f"{url[dependent]}/health/live") == 200
        result = nexus("verify", "-c", str(catalog))
        assert result.returncode == 1
        assert "flow login: broken at auth" in result.stderr
        assert "service auth:" in result.stderr.split("service gateway:")[0]  # the cause is named before its effects

        assert nexus("restart", "auth", "-c", str(catalog)).returncode == 0
        for dependent in ("gateway", "media"):
            until(lambda d=dependent: status_code(f"{url[d]}/health/ready") == 200, what=f"{dependent} to recover")
        assert nexus("verify", "-c", str(catalog)).returncode == 0
        # not restarted: the gateway still holds the requests it counted before the outage
        assert _requests(ports["gateway"], "/health", 200) >= 3


@pytest.mark.parametrize("mode", MODES)
def test_slow_dependency_fails_its_hop_fast_and_is_named(tmp_path, minimal, mode):
    catalog = write_platform(tmp_path / "demo", _chain(minimal))
    # store sleeps 60 s on the flow; every service gives up on a call after 1 s
    with platform(catalog, "--mode", mode, "--set", "request_timeout_seconds=1", "--set", "store.inject_delay_ms=60000") as ports:
        r = httpx.get(f"http://127.0.0.1:{ports['gateway']}/platform/flows/login", timeout=15)  # bounded: far below 60 s
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
        assert r.status_code == 502 and r.json()["broken"] == "store"
        # auth retried its own failed connection, then answered once with a final 502; the
        # gateway passed that on instead of asking auth again (which would ask store again)
        assert _requests(ports["auth"], "/flows/{flow}", 502) == 1
