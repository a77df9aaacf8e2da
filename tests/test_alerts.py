"""The generated alerts, evaluated by a real Prometheus (Debian's) that scrapes a real local run
with the generated observability/prometheus.yml: each alert's expression names the series the
runtime really exports, with the labels it gives them, and fires for the fault it is about and
for no other. promtool (test_third_party) only checks that the files parse."""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml
from conftest import nexus
from running import free_ports, platform, until, write_platform
from tools import find

SLOW_MS = 1700  # auth's flow endpoint: above its p99 threshold, 1.6 s (80% of the gateway's 2 s timeout)


def _pending(prometheus: str) -> set[tuple[str, str]]:
    """(alert, service) of every alert pending or firing: each has a `for` of minutes, so in a
    test's seconds an alert whose expression holds is pending."""
    alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"]["service"]) for a in alerts}


def _after(prometheus: str, what: str, since: float) -> bool:
    """Whether every target was scraped (``what`` "targets") or every alert group evaluated
    ("rules") after ``since``, a time.time()."""
    data = httpx.get(f"{prometheus}/api/v1/{what}", timeout=5).json()["data"]
    stamps = [t["lastScrape"] for t in data["activeTargets"]] if what == "targets" else []
    stamps += [g["lastEvaluation"] for g in data.get("groups", [])]
    return bool(stamps) and all(datetime.fromisoformat(s).timestamp() > since for s in stamps)


def _settle(prometheus: str) -> None:
    """Wait for a scrape of every service after now, then an evaluation of every alert after that."""
    for what in ("targets", "rules"):
        now = time.time()
        until(lambda w=what, t=now: _after(prometheus, w, t), what=f"Prometheus's {what} after {now}", timeout=30)


def _down(prometheus: str) -> set[str]:
    targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    return {t["labels"]["job"] for t in targets if t["health"] != "up"}


def test_each_alert_fires_for_its_own_fault_and_none_on_a_healthy_run(tmp_path: Path, minimal: dict) -> None:
    catalog = write_platform(tmp_path / "demo", minimal)
    observability = catalog.parent / "generated" / "observability"
    config = yaml.safe_load((observability / "prometheus.yml").read_text(encoding="utf-8"))
    # the generated file scrapes every 30 s; the test's Prometheus every second, the rest as generated
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(observability / "alerts.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (port,) = free_ports(1)
    prometheus = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            find("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with platform(catalog, "--set", f"auth.inject_delay_ms={SLOW_MS}") as ports:
            url = {name: f"http://127.0.0.1:{p}" for name, p in ports.items()}
            _settle(prometheus)  # Prometheus may have started first: scrapes that found nothing are past
            until(lambda: _pending(prometheus) == set(), what="no alert on a healthy run", timeout=30)
            for name in url:  # traffic everywhere, none of it failing
                for _ in range(5):
                    assert httpx.get(f"{url[name]}/health", timeout=5).status_code == 200
            _settle(prometheus)
            assert _down(prometheus) == set() and _pending(prometheus) == set()  # not even pending

            for _ in range(3):  # slow: its own flow endpoint, asked directly (not through the gateway)
                assert httpx.get(f"{url['auth']}/flows/login", timeout=10).status_code == 200
            assert nexus("down", "media", "-c", str(catalog)).returncode == 0  # down
            for _ in range(10):  # failing: the gateway's watch flow, which needs media
                assert httpx.get(f"{url['gateway']}/flows/watch", timeout=5).status_code >= 500
            want = {("HighLatencyP99", "auth"), ("ServiceDown", "media"), ("HighErrorRate", "gateway")}
            until(lambda: _pending(prometheus) >= want, what=f"alerts {sorted(want)}", timeout=30)
            assert _pending(prometheus) == want  # and no other
    finally:
        server.terminate()
        server.wait(timeout=30)
