"""A flow's data step (nexus_runtime.data): the runtime's flow record by default, a team's own
step where its routes.py gives one. The shipped session-mgr opens a real session in Redis on the
authentication flow; ledger-mgr's ledger entry is proven on real PostgreSQL by the whole shipped
platform's test (test_verify.py). Real redis-server, the generated apps served on loopback."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import redis
from inprocess import app_of, on_path, serving
from running import free_ports


def _flow(port: int, flow: str, request_id: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/flows/{flow}", headers={"x-request-id": request_id}, timeout=10)


def test_session_mgr_opens_a_real_session_on_the_authentication_flow(monkeypatch, redis_port) -> None:
    """session-mgr's team step (its routes.py) stores a session hash with an expiry and reads it
    back; token-mgr, after it, has no step of its own and writes the runtime's flow key."""
    on_path(monkeypatch, "session-mgr", "token-mgr")
    url = f"redis://127.0.0.1:{redis_port}/0"
    tm_port, sm_port = free_ports(2)
    apps = [
        app_of("token-mgr", port=tm_port, redis_url=url),
        app_of("session-mgr", port=sm_port, redis_url=url, token_mgr_url=f"http://127.0.0.1:{tm_port}"),
    ]

    async def run() -> httpx.Response:
        async with serving(*apps):
            return await asyncio.to_thread(_flow, sm_port, "authentication", "req-42")

    answer = asyncio.run(run())
    assert answer.status_code == 200, answer.text
    session_hop, token_hop = answer.json()["hops"]
    (data,) = session_hop["data"]
    assert data["resource"] == "redis" and data["wrote"].startswith("session session-mgr:session:"), data
    key = data["wrote"].removeprefix("session ")
    store = redis.Redis(port=redis_port, decode_responses=True)
    assert store.hgetall(key) == {"request_id": "req-42", "flow": "authentication", "kind": "probe"}
    assert 0 < store.pttl(key) <= 60_000  # set in the same transaction: never a session without an expiry
    # the runtime's default step where the team wrote none
    assert token_hop["data"] == [
        {"resource": "redis", "wrote": "token-mgr:flow:authentication:req-42", "ms": token_hop["data"][0]["ms"]}
    ]
    assert store.get("token-mgr:flow:authentication:req-42") == "req-42"


def test_a_team_step_that_reads_back_another_id_or_fails_breaks_the_hop_naming_the_component(
    monkeypatch, redis_port
) -> None:
    on_path(monkeypatch, "token-mgr")
    from nexus_runtime import Cache, ServiceRouter, Written
    from nexus_runtime.data import DataHopError, record_flow

    app = app_of("token-mgr", port=free_ports(1)[0], redis_url=f"redis://127.0.0.1:{redis_port}/0")
    resources = app.state.resources

    async def wrong(cache: Cache, flow: str, request_id: str) -> Written:
        await cache.client.set(cache.key("x"), "someone-else")
        return Written(cache.key("x"), "someone-else")

    async def failing(cache: Cache, flow: str, request_id: str) -> Written:
        await cache.client.execute_command("NO-SUCH-COMMAND")
        raise AssertionError("unreachable")

    async def run(step) -> str:  # type: ignore[no-untyped-def]
        router = ServiceRouter()
        router.data_step("redis")(step)
        try:
            await record_flow(resources, "authentication", "req-1", router.data_steps)
        except DataHopError as exc:
            return f"{exc.resource}|{exc}"
        finally:
            await resources.close()
        return "no error"

    assert asyncio.run(run(wrong)) == "redis|redis: wrote token-mgr:x but read back 'someone-else'"
    failed = asyncio.run(run(failing))
    assert failed.startswith("redis|redis: ResponseError: unknown command 'NO-SUCH-COMMAND'"), failed


def test_a_step_for_a_component_the_service_does_not_use_stops_the_start_naming_what_it_uses(monkeypatch) -> None:
    on_path(monkeypatch, "session-mgr")
    import session_mgr.main as main

    from nexus_runtime import ServiceRouter, create_app

    router = ServiceRouter()

    @router.data_step("postgres")
    async def elsewhere(*_: object) -> None: ...

    with pytest.raises(ValueError) as err:
        create_app(main.SPEC, main.Settings, router, settings=main.Settings(port=free_ports(1)[0]))
    assert str(err.value) == (
        "session-mgr: routes.py has a data step for 'postgres', which is not a database or cache it uses;"
        " it uses: redis"
    )
    with pytest.raises(ValueError, match="two data steps for postgres: elsewhere, again"):

        @router.data_step("postgres")
        async def again(*_: object) -> None: ...
