"""What a hop costs under load, checked by behaviour rather than by timing: a call to the next
hop imports nothing, and the connections a burst of calls opened stay open for the next burst.
The services run in the test's own process (tests/inprocess.py); their speed is measured by
benchmarks/bench_load.py, never here."""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import time
from pathlib import Path

from inprocess import app_of, get, on_path, serving
from running import free_ports

FLOW = "content-delivery"  # ... -> content-management -> streamcore -> (the CDN, not called)


class ImportAttempts(importlib.abc.MetaPathFinder):
    """Records every module the import system is asked to find (a name already imported is
    answered from sys.modules and never gets here)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        self.names.append(name)


def test_a_flow_call_imports_nothing(monkeypatch) -> None:
    """httpcore imports sniffio on every pooled request; when sniffio is missing the failed
    import walks the whole import path each time (43 service folders in the embedded host:
    half the CPU of a flow). The runtime depends on sniffio, so nothing is imported per call."""
    on_path(monkeypatch, "content-management", "streamcore")
    cm_port, sc_port = free_ports(2)
    apps = (
        app_of("streamcore", port=sc_port),
        app_of("content-management", port=cm_port, streamcore_url=f"http://127.0.0.1:{sc_port}"),
    )
    attempts = ImportAttempts()

    async def run() -> list[int]:
        async with serving(*apps):
            connection = await asyncio.open_connection("127.0.0.1", cm_port)
            for _ in range(5):  # warm-up: first-call imports are fine
                await get(cm_port, f"/flows/{FLOW}", connection)
            sys.meta_path.insert(0, attempts)
            try:
                statuses = [(await get(cm_port, f"/flows/{FLOW}", connection))[0] for _ in range(20)]
            finally:
                sys.meta_path.remove(attempts)
                connection[1].close()
            return statuses

    assert asyncio.run(run()) == [200] * 20
    assert attempts.names == [], (
        f"20 flow calls tried to import {sorted(set(attempts.names))} ({len(attempts.names)} times)"
    )


def _established(port: int) -> int:
    """TCP connections to 127.0.0.1:``port``, server side, established now (Linux /proc)."""
    local = f"0100007F:{port:04X}"
    count = 0
    for table in ("/proc/net/tcp",):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1] == local and fields[3] == "01"
    return count


async def _settled(port: int, want: int, within: float = 5.0) -> int:
    """``_established(port)`` once it is ``want`` (and still is a moment later: a count on its
    way below it passes through it), or when ``within`` seconds have passed: the server sees a
    connection the client closed when its loop gets to it, which on a loaded machine (CI) took
    longer than a fixed 0.2 s."""
    deadline = time.monotonic() + within
    while _established(port) != want and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    return _established(port)


def test_a_burst_leaves_the_pools_idle_connections_open_and_no_more(monkeypatch) -> None:
    """Under 50 concurrent calls a client opens 50 connections; after the burst it keeps
    POOL's idle count open for the next one and closes the rest. Keeping all 50 was measured
    slower: httpcore checks every idle connection on every request (clients.py, POOL)."""
    on_path(monkeypatch, "content-management", "streamcore")
    from nexus_runtime.clients import POOL, build_clients, close_all

    (sc_port,) = free_ports(1)
    streamcore = app_of("streamcore", port=sc_port, inject_delay_ms=200)  # so 50 calls overlap
    caller = app_of("content-management", port=free_ports(1)[0], streamcore_url=f"http://127.0.0.1:{sc_port}")

    async def run() -> list[int]:
        clients = build_clients(caller.state.spec, caller.state.settings)
        kept = []
        try:
            async with serving(streamcore):
                for _ in range(2):
                    answers = await asyncio.gather(*(clients["streamcore"].get(f"/flows/{FLOW}") for _ in range(50)))
                    assert [r.status_code for r in answers] == [200] * 50
                    kept.append(await _settled(sc_port, POOL.max_keepalive_connections or 0))
        finally:
            await close_all(clients)
        return kept

    kept = POOL.max_keepalive_connections
    assert kept is not None and kept < 50
    assert asyncio.run(run()) == [kept, kept]


def test_pooled_connections_check_idleness_on_the_socket_they_looked_up_once(monkeypatch) -> None:
    """The runtime's clients give httpcore a network backend whose streams answer "is the idle
    connection readable" (the server closed it) with a poll of a socket looked up once, not
    anyio's per-call attribute table (clients.py, _Stream). httpx has no parameter for it, so
    it is set on the pool httpx made: this fails if an upgrade drops it, or if the check
    stops telling an open idle connection from one the server closed."""
    on_path(monkeypatch, "content-management", "streamcore")
    from nexus_runtime.clients import _Stream, build_clients, close_all

    (sc_port,) = free_ports(1)
    streamcore = app_of("streamcore", port=sc_port)
    caller = app_of("content-management", port=free_ports(1)[0], streamcore_url=f"http://127.0.0.1:{sc_port}")

    async def run() -> tuple[list[bool], bool, bool]:
        clients = build_clients(caller.state.spec, caller.state.settings)
        try:
            async with serving(streamcore):
                assert (await clients["streamcore"].get(f"/flows/{FLOW}")).status_code == 200
                # RetryTransport -> httpx's transport -> httpcore's pool -> connection -> stream
                pool = clients["streamcore"]._transport._inner._pool  # type: ignore[attr-defined]
                streams = [c._connection._network_stream for c in pool.connections]
                kinds = [isinstance(s, _Stream) for s in streams]
                open_idle = streams[0].get_extra_info("is_readable")
            await asyncio.sleep(0.2)  # the server has stopped and closed its side
            closed_idle = streams[0].get_extra_info("is_readable")
        finally:
            await close_all(clients)
        return kinds, open_idle, closed_idle

    kinds, open_idle, closed_idle = asyncio.run(run())
    assert kinds == [True]
    assert open_idle is False and closed_idle is True


def test_data_steps_beyond_the_cache_pool_wait_for_a_connection_instead_of_failing(monkeypatch, redis_port) -> None:
    """Under load more calls need Redis at once than the pool holds (cache_pool_size); they wait
    for a connection. redis-py's default pool failed them ("Too many connections"), a 503 at
    session-mgr in the benchmark."""
    on_path(monkeypatch, "session-mgr")
    url = f"redis://127.0.0.1:{redis_port}/0"
    app = app_of("session-mgr", port=free_ports(1)[0], redis_url=url, cache_pool_size=2)
    from nexus_runtime.data import record_flow

    async def run() -> list[list[str]]:
        resources = app.state.resources
        try:
            done = await asyncio.gather(*(record_flow(resources, FLOW, f"r{i}") for i in range(30)))
            return [[d["resource"] for d in hops] for hops in done]
        finally:
            await resources.close()

    assert asyncio.run(run()) == [["redis"]] * 30
