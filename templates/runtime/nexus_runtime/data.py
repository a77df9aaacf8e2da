"""A flow's data step: what each hop writes into its own database and cache and reads back, so
`nexus verify` proves a critical path reaches the service's data, not only its process.

By default the runtime writes a row into the team's ``flow_records`` table (from the first
migration) and a key under the service's own Redis prefix. A team whose data has a shape of its
own (a ledger's entries, a session store's sessions) writes that instead: its routes.py makes
its router a ``ServiceRouter`` and gives the component a step::

    router = ServiceRouter(prefix="/api", tags=["ledger-mgr"])

    @router.data_step("postgres")
    async def ledger_entry(db: Postgres, flow: str, request_id: str) -> Written:
        ...
        return Written(f"ledger_entries {entry_id}", read_back)

A step writes something that carries ``request_id``, reads it back from the server, and
returns what it wrote (shown by verify) and the ``request_id`` it read; the runtime checks the
two ids match and times it. The steps of a hop's components run at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .resources import Broker, Cache, Postgres, Resources

FLOW_KEY_MS = 60_000  # a flow's cache key lives a minute: proof, not data
INSERT_FLOW = text("INSERT INTO flow_records (flow, request_id) VALUES (:flow, :rid) RETURNING id")
READ_FLOW = text("SELECT request_id FROM flow_records WHERE id = :id")


@dataclass(frozen=True)
class Written:
    """What a data step wrote (``what``, e.g. ``flow_records 17``) and the request id it read back."""

    what: str
    read: str | None


DataStep = Callable[[Any, str, str], Awaitable[Written]]  # (client, flow, request_id) -> Written
Step = TypeVar("Step", bound=DataStep)


class ServiceRouter(APIRouter):
    """The team's router, which may also carry its own data steps (by component name)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_steps: dict[str, DataStep] = {}

    def data_step(self, component: str) -> Callable[[Step], Step]:
        """Register ``step`` as what a flow's hop writes and reads back in ``component``
        (a name from the service's ``uses``) instead of the runtime's flow record."""

        def register(step: Step) -> Step:
            if component in self.data_steps:
                raise ValueError(
                    f"two data steps for {component}: {self.data_steps[component].__name__}, {step.__name__}"
                )
            self.data_steps[component] = step
            return step

        return register


def steps_of(routes: APIRouter | None, service: str, resources: Resources) -> dict[str, DataStep]:
    """The team's data steps, each for a data component the service uses; a step for anything
    else stops the start with the names it could have used."""
    steps = dict(routes.data_steps) if isinstance(routes, ServiceRouter) else {}
    data = sorted(n for n, e in resources.engines.items() if e in DEFAULT_STEPS)
    for name in steps:
        if name not in data:
            raise ValueError(
                f"{service}: routes.py has a data step for {name!r}, which is not a database or cache it uses;"
                f" it uses: {', '.join(data) or 'none'}"
            )
    return steps


async def record_flow(
    resources: Resources, flow: str, request_id: str, steps: Mapping[str, DataStep] | None = None
) -> list[dict[str, Any]]:
    """A flow's data step at this hop: each of its databases and caches (not the broker, whose
    flows are events) at once, so a hop waits for its slowest one, not for their sum. Raises
    DataHopError naming the component that failed (the first by name, when several did)."""
    own = steps or {}
    work = [
        (name, own.get(name) or DEFAULT_STEPS[resources.engines[name]], client)
        for name, client in sorted(resources.by_name.items())
        if not isinstance(client, Broker)
    ]
    done = await asyncio.gather(*(_timed(name, step, client, flow, request_id) for name, step, client in work))
    for result in done:
        if isinstance(result, DataHopError):
            raise result
    return [result for result in done if not isinstance(result, DataHopError)]


async def _timed(name: str, step: DataStep, client: Any, flow: str, request_id: str) -> dict[str, Any] | DataHopError:
    start = time.perf_counter()
    try:
        written = await step(client, flow, request_id)
    except Exception as exc:  # each client (and each team's step) raises its own errors: name the component
        error = DataHopError(name, f"{name}: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
        return error
    if written.read != request_id:
        return DataHopError(name, f"{name}: wrote {written.what} but read back {written.read!r}")
    return {"resource": name, "wrote": written.what, "ms": round((time.perf_counter() - start) * 1000, 3)}


async def flow_record(db: Postgres, flow: str, request_id: str) -> Written:
    """The runtime's step for PostgreSQL: a row in the team's flow_records table."""
    return await db.run(lambda conn: _write_and_read(conn, flow, request_id))


async def _write_and_read(conn: AsyncConnection, flow: str, request_id: str) -> Written:
    """The insert is committed when it returns (autocommit); the read is a statement of its own."""
    written = (await conn.execute(INSERT_FLOW, {"flow": flow, "rid": request_id})).scalar_one()
    read = (await conn.execute(READ_FLOW, {"id": written})).scalar_one_or_none()
    return Written(f"flow_records {written}", read)


async def flow_key(cache: Cache, flow: str, request_id: str) -> Written:
    """The runtime's step for Redis: a key under the service's own prefix, gone after a minute."""
    key = cache.key("flow", flow, request_id)
    await cache.client.set(key, request_id, px=FLOW_KEY_MS)
    value = await cache.client.get(key)
    return Written(key, value.decode() if isinstance(value, bytes) else value)


# the runtime's step per engine that holds data (the broker's flows are events: events.py)
DEFAULT_STEPS: dict[str, DataStep] = {"postgres": flow_record, "redis": flow_key}


class DataHopError(Exception):
    def __init__(self, resource: str, message: str) -> None:
        super().__init__(message)
        self.resource = resource
