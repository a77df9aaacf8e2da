"""Stage 1 for real: `nexus up` starts PostgreSQL, Redis and NATS, each service gets its own
database and role, ACL user and key prefix, and broker user, and nothing of another's.

Real servers on free ports, real clients (asyncpg, redis-py, nats-server's own config check)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from conftest import nexus
from running import cleanup, until, write_platform

from nexus.catalog.events import Permissions
from nexus.errors import RunError
from nexus.local import infra, runstate
from nexus.render import broker


@pytest.fixture
def catalog(tmp_path, minimal):
    minimal["infrastructure"]["redis"] = {"kind": "cache", "description": "Redis", "port": 6379}
    minimal["infrastructure"]["nats"] = {"kind": "message-queue", "description": "NATS", "port": 4222}
    minimal["stages"][0]["infrastructure"] += ["redis", "nats"]
    minimal["services"]["auth"]["uses"] = ["postgres", "redis", "nats"]
    minimal["services"]["media"]["uses"] = ["postgres", "redis"]
    path = write_platform(tmp_path / "p", minimal)
    yield path
    cleanup(path)


def _run(catalog: Path) -> tuple[runstate.RunState, infra.Credentials]:
    state = runstate.read(catalog.parent)
    assert state is not None
    return state, infra.Credentials.load(infra.credentials_path(Path(state.run_dir)))


def _up(catalog: Path) -> subprocess.CompletedProcess[str]:
    done = nexus("up", "--detach", "-c", str(catalog), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


async def _pg(port: int, user: str, password: str, database: str) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=port, user=user, password=password, database=database)


def test_up_starts_the_servers_each_user_isolated_and_no_secret_is_printed_or_recorded(catalog):
    done = _up(catalog)
    state, creds = _run(catalog)
    assert sorted(state.infrastructure) == ["nats", "postgres", "redis"]
    assert all(r.state == "running" for r in state.infrastructure.values())
    every_password = [p for users in creds.passwords.values() for p in users.values()]
    recorded = runstate.state_path(catalog.parent).read_text()
    for password in every_password:
        assert password not in done.stdout + done.stderr and password not in recorded
    assert infra.credentials_path(Path(state.run_dir)).stat().st_mode & 0o077 == 0

    pg = state.infrastructure["postgres"].port

    async def postgres() -> None:
        auth = await _pg(pg, "auth", creds.passwords["postgres"]["auth"], "auth")
        await auth.execute("CREATE TABLE t (v text)")
        await auth.execute("INSERT INTO t VALUES ('mine')")
        assert await auth.fetchval("SELECT v FROM t") == "mine"
        await auth.close()
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
            await _pg(pg, "media", creds.passwords["postgres"]["media"], "auth")
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _pg(pg, "auth", "wrong", "auth")

    asyncio.run(postgres())

    rd = state.infrastructure["redis"].port
    auth = redis.Redis(port=rd, username="auth", password=creds.passwords["redis"]["auth"])
    media = redis.Redis(port=rd, username="media", password=creds.passwords["redis"]["media"])
    auth.set("auth:session:1", "alice")
    assert auth.get("auth:session:1") == b"alice"
    with pytest.raises(redis.exceptions.NoPermissionError):
        media.get("auth:session:1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        media.scan()  # key names are not listed across prefixes either
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=rd).ping()  # the default user is off

    status = nexus("status", "--json", "-c", str(catalog))
    servers = {s["name"]: s for s in json.loads(status.stdout)["infrastructure"]}
    assert {n: s["ready"] for n, s in servers.items()} == {"nats": "ok", "postgres": "ok", "redis": "ok"}
    assert servers["redis"]["users"] == ["auth", "media"] and servers["nats"]["users"] == ["auth"]

    down = nexus("down", "-c", str(catalog))
    assert down.returncode == 0 and "nats, postgres, redis" in down.stdout, down.stdout + down.stderr
    assert not any(procs_alive(r) for r in state.infrastructure.values())


def procs_alive(record: infra.InfraRecord) -> bool:
    from nexus.local import procs

    return record.process is not None and procs.is_running(record.process)


def test_data_survives_down_and_up_with_new_passwords_until_wipe(catalog):
    _up(catalog)
    state, first = _run(catalog)
    pg, rd = state.infrastructure["postgres"].port, state.infrastructure["redis"].port

    async def write() -> None:
        c = await _pg(pg, "auth", first.passwords["postgres"]["auth"], "auth")
        await c.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        await c.close()

    asyncio.run(write())
    redis.Redis(port=rd, username="auth", password=first.passwords["redis"]["auth"]).set("auth:k", "v")
    assert nexus("down", "-c", str(catalog)).returncode == 0

    _up(catalog)
    _, second = _run(catalog)
    assert second.passwords["postgres"]["auth"] != first.passwords["postgres"]["auth"]

    async def read(password: str) -> str:
        c = await _pg(pg, "auth", password, "auth")
        try:
            return str(await c.fetchval("SELECT v FROM kept"))
        finally:
            await c.close()

    assert asyncio.run(read(second.passwords["postgres"]["auth"])) == "still here"
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(read(first.passwords["postgres"]["auth"]))  # last run's password is dead
    assert redis.Redis(port=rd, username="auth", password=second.passwords["redis"]["auth"]).get("auth:k") == b"v"

    wiped = nexus("down", "--wipe", "-c", str(catalog))
    assert wiped.returncode == 0 and "deleted the infrastructure's data" in wiped.stdout
    assert not infra.data_root(catalog.parent).exists()


def test_a_server_that_fails_to_start_is_named_with_its_log_and_nothing_keeps_running(catalog):
    _up(catalog)
    assert nexus("down", "-c", str(catalog)).returncode == 0
    # a data folder PostgreSQL cannot use: it exits at once
    (infra.data_root(catalog.parent) / "postgres" / "pgdata" / "PG_VERSION").write_text("9\n")
    done = nexus("up", "--detach", "-c", str(catalog), timeout=120)
    assert done.returncode == 1
    assert "postgres: its server exited with code 1 while starting" in done.stderr, done.stderr
    assert "logs/postgres.log:" in done.stderr and "incompatible with server" in done.stderr
    assert "Traceback" not in done.stderr
    assert runstate.read(catalog.parent) is None  # nothing recorded: everything it started was stopped


def test_the_broker_config_defaults_to_nothing_but_the_own_inbox_and_the_server_accepts_it(tmp_path):
    listen = broker.Listen("127.0.0.1", 4222, 8222, str(tmp_path / "js"))
    users = {
        "billing": Permissions(publish=("events.payment.completed",), subscribe=()),
        "ledger-mgr": Permissions(publish=(), subscribe=()),
    }
    text = broker.nats_config(users, listen)
    assert text == broker.nats_config(dict(reversed(users.items())), listen)  # same users, same bytes
    ledger = next(line for line in text.splitlines() if '"ledger-mgr"' in line)
    assert 'publish: {deny: [">"]}' in ledger and 'subscribe: {allow: ["_INBOX_LEDGER_MGR.>"]}' in ledger
    assert "$NEXUS_NATS_PW_LEDGER_MGR" in ledger  # a reference, never a password
    conf = tmp_path / "nats.conf"
    conf.write_text(text)
    env = {broker.ADMIN_PASSWORD_VARIABLE: "a", "NEXUS_NATS_PW_BILLING": "b", "NEXUS_NATS_PW_LEDGER_MGR": "c"}
    server = infra._program("nats-server", "")
    assert subprocess.run([server, "-c", str(conf), "-t"], env=env, capture_output=True).returncode == 0
    missing = subprocess.run([server, "-c", str(conf), "-t"], env={}, capture_output=True, text=True)
    assert missing.returncode != 0 and "NEXUS_NATS_ADMIN_PASSWORD" in missing.stdout + missing.stderr


def test_stopping_postgres_makes_only_its_users_unready_and_a_restart_recovers_them_in_place(catalog):
    _up(catalog)
    state, _ = _run(catalog)
    ports = {n: s.port for n, s in state.services.items()}
    host = state.host

    def ready() -> dict[str, int]:
        with httpx.Client(trust_env=False, timeout=5) as http:
            return {n: http.get(f"http://127.0.0.1:{p}/health/ready").status_code for n, p in sorted(ports.items())}

    assert ready() == {"auth": 200, "gateway": 200, "media": 200}
    stopped = nexus("down", "postgres", "-c", str(catalog))
    assert stopped.returncode == 0, stopped.stderr
    # its two users, and only they (the gateway's hard dependency auth is still alive)
    until(lambda: ready() == {"auth": 503, "gateway": 200, "media": 503}, what="postgres's users to go unready")
    with httpx.Client(trust_env=False, timeout=5) as http:
        body = http.get(f"http://127.0.0.1:{ports['auth']}/health/ready").json()
    assert body["dependencies"]["postgres"].startswith("unreachable") and body["dependencies"]["redis"] == "ok"

    restarted = nexus("restart", "postgres", "-c", str(catalog))
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    until(lambda: ready() == {"auth": 200, "gateway": 200, "media": 200}, what="recovery without restarts")
    after = runstate.read(catalog.parent)
    assert after is not None and after.host == host  # the same process serves them: nothing was restarted
    flow = httpx.get(f"http://127.0.0.1:{ports['gateway']}/platform/flows/login", trust_env=False, timeout=10).json()
    assert flow["ok"] and [d["resource"] for d in flow["hops"][1]["data"]] == ["postgres", "redis"], flow

    # restarted under a service that holds pooled connections: the first request after it meets
    # a dropped connection, and the data step's one retry on a fresh connection serves it
    assert nexus("restart", "postgres", "-c", str(catalog)).returncode == 0
    flow = httpx.get(f"http://127.0.0.1:{ports['gateway']}/platform/flows/login", trust_env=False, timeout=10).json()
    assert flow["ok"], flow


def test_a_killed_server_not_yet_reaped_is_waited_for_before_postgres_starts(tmp_path):
    """The crashed-run flake: PostgreSQL refused to start while the killed postmaster named in
    postmaster.pid was a zombie its parent had not reaped yet."""
    import os
    import signal
    import threading
    import time

    from nexus.local import procs

    child = subprocess.Popen(["sleep", "30"])
    os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while procs.identity(child.pid) is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert procs.lingering(child.pid)  # dead, unreaped: what kill(pid, 0) still finds
    (tmp_path / "postmaster.pid").write_text(f"{child.pid}\n/data\n")
    threading.Timer(0.5, child.wait).start()  # its parent reaps it half a second later
    start = time.monotonic()
    infra._await_crashed_server(tmp_path, timeout=10)
    assert 0.4 < time.monotonic() - start < 5 and not procs.lingering(child.pid)


@pytest.mark.parametrize("text", ["[]", '{"postgres": "pw"}', '{"postgres": {"auth": 5}}', "{"])
def test_credentials_of_another_shape_are_one_clear_error(tmp_path: Path, text: str) -> None:
    """The run's credentials.json is Nexus's own; torn, or of another shape, it is a RunError
    saying how to recover, never a TypeError where a password is looked up."""
    path = infra.credentials_path(tmp_path)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RunError, match=r"the run's credentials cannot be read \(.*\); restart with `nexus down"):
        infra.Credentials.load(path)
