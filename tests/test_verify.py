"""`nexus verify` against real services, and the gateway routes it relies on."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
import yaml
from conftest import CATALOG, nexus
from running import platform, write_platform

from nexus.catalog import load_catalog
from nexus.catalog.graph import relays
from nexus.local import infra, runstate


def _report(catalog, *args):
    result = nexus("verify", "--json", "-c", str(catalog), *args)
    return result, json.loads(result.stdout)


def test_verify_proves_flows_and_health_through_the_gateway(tmp_path, minimal):
    catalog = write_platform(tmp_path / "demo", minimal)
    with platform(catalog) as ports:
        result, report = _report(catalog)
        assert result.returncode == 0, result.stderr
        assert report["ok"] and report["failures"] == []
        flows = {f["flow"]: f for f in report["flows"]}
        assert [h["service"] for h in flows["login"]["hops"]] == ["gateway", "auth"]
        assert flows["watch"]["hops"][-1] == {"service": "cdn", "external": True}  # reported, not called
        assert all(isinstance(h["ms"], float) for f in flows.values() for h in f["hops"] if not h.get("external"))
        services = {s["service"]: s for s in report["services"]}
        assert {s["status"] for s in services.values()} == {"ok"}
        assert services["auth"]["route"] == "gateway > auth" and services["gateway"]["route"] == "gateway"
        assert set(services["media"]["endpoints"]) == {"health", "ready", "live", "metrics"}
        assert "metric families" in services["media"]["endpoints"]["metrics"]["detail"]

        # the same checks against the gateway's URL only, as through a port-forward to a cluster
        remote, report = _report(catalog, "--base-url", f"http://127.0.0.1:{ports['gateway']}/")
        assert remote.returncode == 0, remote.stderr
        assert {s["via"] for s in report["services"]} == {"gateway"} and not report["local"]

        text = nexus("verify", "-c", str(catalog))
        assert text.returncode == 0
        assert "2/2 flows ok, 3/3 services ok" in text.stdout
        assert "gateway" in text.stdout and "cdn (external)" in text.stdout


def test_verify_opens_each_live_service_through_the_gateway(tmp_path, minimal):
    """The third of the spec's patterns, proved as a client outside meets it: a WebSocket
    through the gateway's relay gets the live service's own hello. A live service that is down
    fails verify, named, with the gateway's answer."""
    minimal["services"]["media"]["websocket"] = True
    catalog = write_platform(tmp_path / "demo", minimal)
    with platform(catalog) as ports:
        result, report = _report(catalog)
        assert result.returncode == 0, result.stderr
        ((media,),) = [report["live"]]
        assert media["service"] == "media" and media["ok"] and media["ms"] > 0
        remote, report = _report(catalog, "--base-url", f"http://127.0.0.1:{ports['gateway']}")
        assert remote.returncode == 0 and [r["ok"] for r in report["live"]] == [True], remote.stderr
        assert "1/1 live services ok" in nexus("verify", "-c", str(catalog)).stdout
        assert nexus("down", "media", "-c", str(catalog)).returncode == 0
        broken = nexus("verify", "-c", str(catalog))
        assert broken.returncode == 1
        assert "live media: the gateway answered HTTP 502" in broken.stderr, broken.stderr


def test_services_the_gateway_cannot_reach_are_checked_directly_here_and_reported_remotely(tmp_path, minimal):
    minimal["services"]["batch"] = {
        "port": 1,
        "category": "platform",
        "team": "core",
        "description": "Nightly jobs",
        "depends_on": {"auth": "hard"},
    }
    catalog = write_platform(tmp_path / "demo", minimal)
    with platform(catalog) as ports:
        _, local = _report(catalog)
        batch = next(s for s in local["services"] if s["service"] == "batch")
        assert local["ok"] and batch["status"] == "ok" and batch["via"] == "direct"
        _, remote = _report(catalog, "--base-url", f"http://127.0.0.1:{ports['gateway']}")
        batch = next(s for s in remote["services"] if s["service"] == "batch")
        assert batch["status"] == "skipped" and "no path of declared dependencies" in batch["detail"]
        # the gateway itself refuses to probe it: it would need a connection the policies forbid
        r = httpx.get(f"http://127.0.0.1:{ports['gateway']}/platform/health/batch/live")
        assert r.status_code == 404 and "not reachable from gateway" in r.json()["error"]
        # a relay goes only where its own dependencies go, whatever route it is handed
        r = httpx.get(
            f"http://127.0.0.1:{ports['batch']}/platform/health/media/live", headers={"x-nexus-route": "media"}
        )
        assert r.status_code == 404 and "media is not a declared dependency of batch" in r.json()["error"]
        r = httpx.get(f"http://127.0.0.1:{ports['batch']}/platform/health/auth/live")
        assert r.status_code == 200 and r.headers["x-nexus-via"] == "batch,auth"


def test_only_run_skips_what_it_did_not_start(tmp_path, minimal):
    catalog = write_platform(tmp_path / "demo", minimal)
    with platform(catalog, "--only", "gateway"):
        result, report = _report(catalog)
        assert result.returncode == 0, result.stderr
        assert {f["flow"]: f["status"] for f in report["flows"]} == {"login": "ok", "watch": "skipped"}
        assert {s["service"]: s["status"] for s in report["services"]} == {
            "auth": "ok",
            "gateway": "ok",
            "media": "skipped",
        }


def _gateway_spec():
    """The shipped gateway's generated ServiceSpec, as the runtime reads it."""
    import importlib.util
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "generated" / "runtime"))
    try:
        gateway = load_catalog(CATALOG).catalog.platform.gateway
        path = ROOT / "generated" / "services" / gateway / gateway.replace("-", "_") / "spec.py"
        spec = importlib.util.spec_from_file_location("shipped_gateway_spec", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.SPEC
    finally:
        sys.path.remove(str(ROOT / "generated" / "runtime"))


def test_gateway_relays_only_along_declared_edges():
    """The route the shipped gateway computes to every service takes declared edges only, is a
    shortest one, and reaches exactly what the catalog's graph reaches (what verify expects)."""
    cat = load_catalog(CATALOG).catalog
    spec = _gateway_spec()
    reached = spec.reached()
    table = relays(cat, spec.name)
    assert sorted(reached) == sorted(table)
    for target in table:
        steps = spec.route(reached, target)
        assert steps[-1] == target and steps[0] == table[target]
        for at, nxt in zip((spec.name, *steps), steps, strict=False):
            assert nxt in cat.services[at].depends_on, f"{at} -> {nxt} is not a declared edge"
    # every service is reachable from the gateway along declared edges: verify --base-url sees all
    assert sorted(set(cat.services) - set(table) - {spec.name}) == []
    # no other service's spec carries anything about services it does not call
    for name in cat.services:
        if name != spec.name:
            text = (CATALOG.parent / "generated" / "services" / name / name.replace("-", "_") / "spec.py").read_text()
            assert "graph=" not in text, name


@pytest.mark.xdist_group("shipped-ports")  # runs the shipped catalog on its own ports: one at a time
@pytest.mark.slow
def test_the_whole_shipped_platform_comes_up_verifies_and_goes_down(tmp_path):
    """The issue's done-when, on the shipped catalog (its ports moved to free ones)."""
    shipped = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    catalog = write_platform(tmp_path / "nexus", shipped, tree=CATALOG.parent / "generated")
    with platform(catalog):
        result, report = _report(catalog)
        assert result.returncode == 0, result.stderr
        assert [f["status"] for f in report["flows"]] == ["ok", "ok", "ok"]
        _the_teams_data_steps_wrote_a_ledger_entry_and_a_session(catalog, report)
        auth = next(f for f in report["flows"] if f["flow"] == "authentication")
        assert [h["service"] for h in auth["hops"]] == [
            "backend-api",
            "auth-service",
            "user-auth",
            "session-mgr",
            "token-mgr",
        ]
        services = {s["service"]: s for s in report["services"]}
        assert len(services) == 43 and {s["status"] for s in services.values()} == {"ok"}
        assert sum(s["via"] == "gateway" for s in services.values()) == 43
        # every event flow on the real broker: published, acknowledged by each consumer, streams replayed
        cat = yaml.safe_load(catalog.read_text(encoding="utf-8"))
        expected = {
            (name, hop)
            for name, ch in cat["events"].items()
            for hop in [
                f"publish as {sorted(ch['publishers'])[0]}",
                *(f"consume by {s}" for s in ch["subscribers"]),
                *(["replay"] if ch["kind"] == "stream" else []),
            ]
        }
        assert {(h["channel"], h["hop"]) for h in report["events"]} == expected
        assert all(h["ok"] for h in report["events"]), report["events"]
        # live streaming through the gateway's relays
        live = {r["service"]: r["ok"] for r in report["live"]}
        assert live == {"boom-boom-room-live": True, "puaboverse-v2": True, "v-caster-pro": True}
        # a consumer stopped: verify fails and names that hop
        assert nexus("down", "invoice-gen", "-c", str(catalog)).returncode == 0
        broken = nexus("verify", "-c", str(catalog), timeout=120)
        assert broken.returncode == 1
        assert "event invoice-requested: consume by invoice-gen:" in broken.stderr, broken.stderr
        down = nexus("down", "-c", str(catalog))
        assert down.returncode == 0 and "stopped 43 services" in down.stdout


def _the_teams_data_steps_wrote_a_ledger_entry_and_a_session(catalog, report):
    """The payment flow books a ledger entry in ledger-mgr's own database and the authentication
    flow opens a session in session-mgr's Redis: the teams' steps (their routes.py), read back
    here as their own users, from the servers themselves."""
    hops = {(f["flow"], h["service"]): h for f in report["flows"] for h in f["hops"]}
    (entry,) = hops["payment-processing", "ledger-mgr"]["data"]
    (session,) = hops["authentication", "session-mgr"]["data"]
    assert entry["wrote"].startswith("ledger_entries ") and session["wrote"].startswith("session session-mgr:session:")
    state = runstate.read(catalog.parent)
    creds = infra.Credentials.load(infra.credentials_path(Path(state.run_dir)))

    async def ledger() -> tuple[object, ...]:
        db = await asyncpg.connect(
            host="127.0.0.1",
            port=state.infrastructure["postgres"].port,
            user="ledger_mgr",
            password=creds.passwords["postgres"]["ledger-mgr"],
            database="ledger_mgr",
        )
        try:
            row = await db.fetchrow(
                "SELECT kind, amount_minor, debit_account <> credit_account, length(reference) > 0 FROM ledger_entries"
                " WHERE id = $1",
                int(entry["wrote"].split()[1]),
            )
            with pytest.raises(asyncpg.CheckViolationError, match="ledger_entries_probe_moves_nothing"):
                await db.execute(
                    "INSERT INTO ledger_entries"
                    " (kind, reference, debit_account, credit_account, amount_minor, currency)"
                    " VALUES ('probe', 'r', 'a', 'b', 100, 'USD')"
                )
            return tuple(row)
        finally:
            await db.close()

    assert asyncio.run(ledger()) == ("probe", 0, True, True)
    store = redis.Redis(
        port=state.infrastructure["redis"].port,
        username="session-mgr",
        password=creds.passwords["redis"]["session-mgr"],
        decode_responses=True,
    )
    key = session["wrote"].removeprefix("session ")
    assert store.hget(key, "flow") == "authentication" and 0 < store.pttl(key) <= 60_000


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", r"is not a URL \(Invalid port: ':1'\)"),
        ("http://127.0.0.1:99999", r": port 99999 is outside 1-65535"),
        ("http://gw:0", r": port 0 is outside 1-65535"),
        ("ftp://gw", r": its scheme is ftp, not http or https"),
        ("http://", r": it names no host"),
        ("http://gate way", r": it holds a space or a control character"),
    ],
)
def test_a_base_url_no_gateway_can_have_is_refused_before_anything_is_asked(url, message):
    """What httpx cannot read as a URL, or reads as one no gateway can answer at, is said as
    such (exit 1, one line), not a traceback nor a failed connection to a port-forward."""
    result = nexus("verify", "--base-url", url, "-c", str(CATALOG))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: --base-url {url!r}") and re.search(message, line), line
    assert line.endswith("; pass the gateway's URL, such as http://127.0.0.1:8080"), line


@pytest.mark.parametrize("url", ["localhost:8080", "127.0.0.1:8080", "gw.example.com"])
def test_a_base_url_without_its_scheme_is_given_back_with_it(url):
    result = nexus("verify", "--base-url", url, "-c", str(CATALOG))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr == (
        f"error: --base-url {url!r}: it has no scheme, http:// or https://; "
        f"pass the gateway's URL, such as http://{url}\n"
    )
