"""Typed, pooled clients for the infrastructure a service uses, built once from its settings.

- PostgreSQL: an SQLAlchemy 2 async engine (asyncpg) and a session factory, on the service's own
  database as its own role. A restarted server's dropped connections are handled the way
  SQLAlchemy calls optimistic: the first statement that meets one fails, and SQLAlchemy then
  replaces every connection of the pool, so the service recovers without restarting; the
  runtime's own statements (``Postgres.run``) try once more on a fresh connection. Not
  ``pool_pre_ping``: with asyncpg it costs three round trips (BEGIN, a ping, ROLLBACK) on every
  checkout, more than the flow step's own two.
- Redis: redis-py's asyncio client as the service's own ACL user; every key it may touch starts
  with ``key_prefix`` (``<service>:``), the only keys its user may read or write.
- NATS: the broker's connection arrives with the events issue; until then it is probed only.

Readiness asks each for a real round trip (``probe``): a query, a PING, a broker PING. What a
flow's hop writes with them is data.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from .settings import ServiceSettings
from .spec import Resource, ServiceSpec

T = TypeVar("T")


def sqlalchemy_url(url: str) -> Any:
    """postgresql://... (what Kubernetes Secrets and `nexus up` hand over) -> the asyncpg driver's URL."""
    return make_url(url).set(drivername="postgresql+asyncpg")


@dataclass
class Postgres:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    # the same pool, each statement its own transaction; made once: execution_options() copies
    # the engine, measured at a third of the flow step's time when called per request
    autocommit: AsyncEngine = field(init=False)

    def __post_init__(self) -> None:
        self.autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` on a connection in autocommit (each statement its own transaction: no BEGIN
        and COMMIT round trips), once more on a fresh one if the first was dropped by a server
        restart. Only a dropped connection is retried, and it dropped before the statement ran."""
        for attempt in (1, 2):
            try:
                async with self.autocommit.connect() as conn:
                    return await work(conn)
            except DBAPIError as exc:
                if not exc.connection_invalidated or attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def probe(self) -> None:
        await self.run(lambda conn: conn.execute(text("SELECT 1")))

    async def close(self) -> None:
        await self.engine.dispose()


@dataclass
class Cache:
    client: Redis
    key_prefix: str

    def key(self, *parts: str) -> str:
        """A key this service may use: ``<service>:<parts joined by ':'>``."""
        return self.key_prefix + ":".join(parts)

    async def probe(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


@dataclass
class Broker:
    host: str
    port: int

    async def probe(self) -> None:
        # the server speaks first (INFO): a TCP round trip that proves it accepts clients
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            line = await reader.readline()
            if not line.startswith(b"INFO "):
                raise ConnectionError("not a NATS server")
        finally:
            writer.close()

    async def close(self) -> None:
        return None


@dataclass
class Resources:
    """The clients by component name; ``postgres``/``redis`` give the typed ones."""

    by_name: dict[str, Postgres | Cache | Broker] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)

    def postgres(self, name: str = "postgres") -> Postgres:
        client = self.by_name[name]
        assert isinstance(client, Postgres), f"{name} is not a PostgreSQL component"
        return client

    def redis(self, name: str = "redis") -> Cache:
        client = self.by_name[name]
        assert isinstance(client, Cache), f"{name} is not a Redis component"
        return client

    def first(self, engine: str) -> Postgres | Cache | Broker | None:
        return next((self.by_name[n] for n, e in sorted(self.engines.items()) if e == engine), None)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.by_name.values()), return_exceptions=True)


def _plain(value: object) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value if isinstance(value, str) else None


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user part. In Kubernetes the URL (host, user, database)
    comes from the ConfigMap and the password from a Secret file, so neither holds both."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:{quote(password, safe='')}@{host}"))


def _url(settings: ServiceSettings, resource: Resource) -> str | None:
    url = _plain(getattr(settings, resource.setting, None))
    password = _plain(getattr(settings, resource.password, None)) if resource.password else None
    return with_password(url, password) if url and password else url


def build(spec: ServiceSpec, settings: ServiceSettings) -> Resources:
    """A client per resource whose URL is set (one left unset is reported by readiness)."""
    out = Resources(engines={r.name: r.engine for r in spec.resources})
    for resource in spec.resources:
        url = _url(settings, resource)
        if not url:
            continue
        if resource.engine == "postgres":
            engine = create_async_engine(
                sqlalchemy_url(url),
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_pool_overflow,
                pool_timeout=settings.request_timeout_seconds,
                connect_args={"timeout": settings.connect_timeout_seconds},
            )
            out.by_name[resource.name] = Postgres(engine, async_sessionmaker(engine, expire_on_commit=False))
        elif resource.engine == "redis":
            # a blocking pool: a call finding every connection busy waits for one (as long as a
            # request may take), where redis-py's default pool fails it at once (measured:
            # "MaxConnectionsError: Too many connections" under 50 concurrent flows)
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=settings.cache_pool_size,
                timeout=settings.request_timeout_seconds,
                socket_connect_timeout=settings.connect_timeout_seconds,
                socket_timeout=settings.request_timeout_seconds,
            )
            out.by_name[resource.name] = Cache(Redis.from_pool(pool), f"{spec.name}:")
        else:
            parsed = urlsplit(url)
            out.by_name[resource.name] = Broker(parsed.hostname or "127.0.0.1", parsed.port or 4222)
    return out


async def probe(resources: Resources, name: str, timeout: float) -> str:
    """'ok' after a real round trip to ``name``, else why not."""
    client = resources.by_name.get(name)
    if client is None:
        return "not configured"
    try:
        await asyncio.wait_for(client.probe(), timeout)
    except TimeoutError:
        return "unreachable: timeout"
    except Exception as exc:  # each client raises its own errors; readiness reports, never raises
        return f"unreachable: {type(exc).__name__}"
    return "ok"
