"""Render area part: stage 1 in Kubernetes, the PostgreSQL, Redis and NATS servers the platform runs.

An internal component (no ``external:`` in the catalog) is one file ``k8s/base/infrastructure/
<name>.yaml``: a ServiceAccount, a ConfigMap with its configuration and start-up scripts, a
headless Service, a StatefulSet of one replica with its PersistentVolumeClaim, a
PodDisruptionBudget and the NetworkPolicy that admits exactly its users. An external component
(a managed instance) runs no server here: its users' ConfigMaps point at its host and port, and
where Nexus can make its users (MANAGED_PROVISIONING: PostgreSQL), the same file holds a Job that
does, as the instance's administrator, with the SQL an internal server's init runs.

No credential is in any manifest. The administrator's password and each user's live in Secrets
named by ``naming.secret`` that `nexus deploy` creates once with random values, mounted as files:
the server's start-up script turns them into what the server reads (PostgreSQL roles, Redis ACL
hashes, NATS password variables), and each service reads its own through the runtime's settings.

The configuration texts are the ones `nexus up` runs locally (redis_config, broker.nats_config,
the provisioning SQL), so a local run and a cluster have the same users with the same rights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..catalog import events, naming
from ..catalog.models import Catalog
from ..paths import TEMPLATES
from . import broker
from .context import RenderContext
from .text import json_document

FOLDER = "k8s/base/infrastructure"
SCRIPTS = TEMPLATES / "k8s" / "infrastructure"  # the scripts and SQL, also run by `nexus up` and the tests
CONFIG_DIR = "/etc/nexus"  # the ConfigMap, in the server's pod
RUN_DIR = "/run/nexus"  # a memory volume for what the start-up script writes (Redis's hashed ACLs)
BROKER_OBJECTS = "broker-objects.json"  # the streams, consumers and buckets (catalog.events.broker_objects)
REDIS_ADMIN = "_nexus_admin"  # a user name no service can take: service names are DNS labels, without '_'


@dataclass(frozen=True)
class Engine:
    """How one kind of server runs in a pod. Images are pinned to a release; each is the
    project's official image, whose binaries run as any uid."""

    image: str
    data: str  # where the PersistentVolume is mounted
    start: tuple[str, ...]  # the container's command
    files: tuple[str, ...]  # scripts/ files in the ConfigMap, besides the configuration rendered here
    admin_file: str  # the administrator's password file under the secrets folder
    user_file: Callable[[str], str]  # a user's, by service name
    ready: dict[str, Any]  # the readiness and startup probe's handler
    live: dict[str, Any]  # the liveness probe's handler
    init: tuple[str, ...] = ()  # an init container's command (PostgreSQL: initdb and the roles)
    # NATS: a second container creates the catalog's streams (nexus_runtime.provision) and is
    # ready only once they exist; it runs the runtime from a service's image (each has it)
    provisioner: bool = False
    env: tuple[tuple[str, str], ...] = ()
    monitor_port: int | None = None
    requests: tuple[str, str] = ("100m", "128Mi")  # cpu, memory
    limits: tuple[str, str] = ("500m", "256Mi")


def _exec(*command: str) -> dict[str, Any]:
    return {"exec": {"command": list(command)}}


PGDATA = "/var/lib/postgresql/data/pgdata"  # a folder inside the volume: initdb wants it empty, a volume has lost+found
ENGINES: dict[str, Engine] = {
    "postgres": Engine(
        image="docker.io/library/postgres:18.1-bookworm",
        data="/var/lib/postgresql/data",
        start=("postgres", "-D", PGDATA, "-c", f"hba_file={CONFIG_DIR}/postgres-hba.conf", "-c", "listen_addresses=*"),
        files=("postgres-init.sh", "postgres-provision.sql", "postgres-hba.conf"),
        init=("sh", f"{CONFIG_DIR}/postgres-init.sh"),
        env=(("PGDATA", PGDATA),),
        admin_file="admin",
        user_file=lambda service: f"users/{naming.pkg(service)}",
        ready=_exec("pg_isready", "-q", "-h", "127.0.0.1"),
        live=_exec("pg_isready", "-q", "-h", "127.0.0.1"),
        requests=("250m", "512Mi"),
        limits=("1", "1Gi"),
    ),
    "redis": Engine(
        image="docker.io/library/redis:8.2.3-bookworm",
        data="/data",
        start=("sh", f"{CONFIG_DIR}/redis-start.sh"),
        files=("redis-start.sh",),
        admin_file=REDIS_ADMIN,
        user_file=lambda service: service,
        # PING needs a user: `user default off` refuses anonymous clients
        ready=_exec(
            "sh",
            "-c",
            f'REDISCLI_AUTH="$(cat $SECRETS/{REDIS_ADMIN})" redis-cli --user {REDIS_ADMIN} ping | grep -q PONG',
        ),
        live={"tcpSocket": {"port": "server"}},
    ),
    "nats": Engine(
        image="docker.io/library/nats:2.12.1-alpine",
        data="/data",
        start=("sh", f"{CONFIG_DIR}/nats-start.sh"),
        files=("nats-start.sh",),
        admin_file=broker.ADMIN_PASSWORD_VARIABLE,
        user_file=broker.password_variable,
        monitor_port=8222,
        provisioner=True,
        ready={"httpGet": {"path": "/healthz?js-enabled-only=true", "port": "monitor"}},
        live={"httpGet": {"path": "/healthz", "port": "monitor"}},
        limits=("500m", "512Mi"),
    ),
}


# Engines whose users Nexus makes on a managed instance: the Job's ConfigMap, its script first.
# Redis and NATS are not here: a managed Redis takes its users from its cloud's API (ElastiCache
# refuses ACL SETUSER), a managed NATS from its operator; their users' Secrets are their owners'.
MANAGED_PROVISIONING = {"postgres": ("postgres-provision-managed.sh", "postgres-provision.sql")}


def redis_config(bind: str, port: int, data: str, hashes: Mapping[str, str]) -> str:
    """Redis's configuration: each service an ACL user confined to keys and channels under
    ``<service>:``; ``hashes`` is each user's password SHA-256 (REDIS_ADMIN's included), or a
    placeholder the cluster's start-up script fills in."""
    lines = [
        f"bind {bind}",
        f"port {port}",
        f'dir "{data}"',
        "daemonize no",
        "protected-mode yes",
        "appendonly yes",  # the data survives a restart
        'save ""',
        "user default off",
        f"user {REDIS_ADMIN} on #{hashes[REDIS_ADMIN]} ~* &* +@all",
    ]
    for user, digest in sorted(hashes.items()):
        if user != REDIS_ADMIN:
            # SCAN is not key-checked: without -scan a service could list another's key names
            lines.append(
                f"user {user} on #{digest} resetkeys ~{user}:* resetchannels &{user}:* +@all -@admin -@dangerous -scan"
            )
    return "\n".join(lines) + "\n"


def sha256_placeholder(user: str) -> str:
    """What redis-start.sh replaces with ``user``'s password hash."""
    return f"@sha256:{user}@"


def psql_provisioning(passwords: Mapping[str, str]) -> str:
    """psql's input that provisions each service (role -> password) with postgres-provision.sql:
    what postgres-init.sh pipes in the cluster, for `nexus up` (roles and passwords are words)."""
    sql = str(SCRIPTS / "postgres-provision.sql").replace("\\", "\\\\").replace("'", "\\'")
    return "".join(f"\\set role {r}\n\\set password {p}\n\\i '{sql}'\n" for r, p in sorted(passwords.items()))


def _config(cat: Catalog, name: str, users: list[str]) -> dict[str, str]:
    """The ConfigMap's files: the engine's scripts plus its configuration for these users."""
    comp = cat.infrastructure[name]
    engine = ENGINES[comp.engine]
    files = {f: (SCRIPTS / f).read_text(encoding="utf-8") for f in engine.files}
    if comp.engine == "redis":
        hashes = {u: sha256_placeholder(u) for u in [REDIS_ADMIN, *users]}
        files["redis.conf"] = redis_config("0.0.0.0", comp.port, engine.data, hashes)
    elif comp.engine == "nats":
        granted = events.permissions(cat)
        listen = broker.Listen("0.0.0.0", comp.port, engine.monitor_port or 8222, f"{engine.data}/jetstream")
        files["nats.conf"] = broker.nats_config({u: granted.get(u, events.Permissions((), ())) for u in users}, listen)
        files[BROKER_OBJECTS] = json_document(events.broker_objects(cat))
    return dict(sorted(files.items()))


def _component(ctx: RenderContext, name: str, users: list[str]) -> dict[str, Any]:
    cat = ctx.catalog
    comp = cat.infrastructure[name]
    engine = ENGINES[comp.engine]
    config = _config(cat, name, users)
    secrets = [(naming.secret(name), engine.admin_file)] + [
        (naming.secret(name, u), engine.user_file(u)) for u in users
    ]
    return {
        "name": name,
        "engine": comp.engine,
        "description": comp.description,
        "port": comp.port,
        "wave": ctx.plan.wave_of[name],
        "image": comp.image or engine.image,
        "storage": comp.storage,
        "e": engine,
        "config": sorted(config.items()),
        # a changed configuration (a new user) restarts the server, which reads it at start
        "config_hash": hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:16],
        "secrets": secrets,
        "users": users,
        # the runtime is the same in every service's image: the first user's will do
        "runtime_image": f"{cat.platform.image_registry}/{users[0]}:{cat.platform.version}",
        "broker_objects": f"{CONFIG_DIR}/{BROKER_OBJECTS}",
        "admin_password_file": f"{naming.SECRETS_DIR}/{engine.admin_file}",
        "ready_file": f"{RUN_DIR}/provisioned",
    }


def _managed(ctx: RenderContext, name: str, users: list[str]) -> dict[str, Any]:
    cat = ctx.catalog
    comp = cat.infrastructure[name]
    assert comp.external is not None
    engine = ENGINES[comp.engine]
    files = MANAGED_PROVISIONING[comp.engine]
    config = {f: (SCRIPTS / f).read_text(encoding="utf-8") for f in files}
    secrets = [(naming.secret(name, u), engine.user_file(u)) for u in users]
    image = comp.image or engine.image
    what = repr((sorted(config.items()), secrets, comp.external.host, comp.external.port, image))
    return {
        "name": name,
        "engine": comp.engine,
        "description": comp.description,
        "host": comp.external.host,
        "port": comp.external.port,
        "admin_secret": comp.external.secret,
        "wave": ctx.plan.wave_of[name],
        "image": image,
        "job_name": naming.provisioner(name),
        "script": f"{CONFIG_DIR}/{files[0]}",
        "config": sorted(config.items()),
        "config_hash": hashlib.sha256(what.encode()).hexdigest()[:10],
        "secrets": secrets,
    }


def render(ctx: RenderContext, common: dict[str, Any]) -> dict[str, str]:
    """One file per component that has users (an unused one is a catalog error): an internal
    one's server, or a managed one's provisioning Job where its engine allows it."""
    cat = ctx.catalog
    out: dict[str, str] = {}
    for name in sorted(cat.infrastructure):
        users = cat.users_of(name)
        if not users:
            continue
        if cat.infrastructure[name].external is not None:
            if cat.infrastructure[name].engine in MANAGED_PROVISIONING:
                out[f"{FOLDER}/{name}.yaml"] = ctx.template(
                    "k8s/infrastructure/managed.yaml.j2",
                    c=_managed(ctx, name, users),
                    config_dir=CONFIG_DIR,
                    secrets_dir=naming.SECRETS_DIR,
                    **common,
                )
            continue
        out[f"{FOLDER}/{name}.yaml"] = ctx.template(
            "k8s/infrastructure/component.yaml.j2",
            c=_component(ctx, name, users),
            config_dir=CONFIG_DIR,
            run_dir=RUN_DIR,
            secrets_dir=naming.SECRETS_DIR,
            broker_admin=broker.ADMIN_USER,
            **common,
        )
    return out
