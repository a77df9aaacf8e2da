"""The baseline for bench_load.py: a critical path built from bare FastAPI + httpx apps.

Each hop serves GET /flows/{flow}, calls the next hop with one shared httpx.AsyncClient (httpx's
defaults), and returns the hops so far; the last hop answers alone. Where the Nexus service at
the same place on the flow uses a database or a cache, the hop does the same data step beside
the call, with the raw drivers (asyncpg, redis-py) on that service's own database and ACL user:
write a row into flow_records (or a key) and read it back. No trace ids, metrics, logs, retries,
time budget or ORM: what the generated runtime adds is what the comparison measures.

Both ways of running mirror `nexus up`'s. A hop is a JSON object {"port", "next", "postgres",
"redis", "prefix"} (next, postgres and redis may be null):

    BARE_HOPS=HOP_JSON python benchmarks/bare_chain.py process     # one hop, its own process
    BARE_HOPS=HOPS_JSON python benchmarks/bare_chain.py embedded   # a list of hops in one process,
                                                                   # one loop, a uvicorn server per hop
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from typing import Any

import asyncpg
import httpx
import uvicorn
from fastapi import FastAPI
from redis.asyncio import BlockingConnectionPool, Redis

POOL = 10  # as the runtime's: db_pool_size 5 + db_pool_overflow 5


def hop(name: str, spec: dict[str, Any]) -> FastAPI:
    app = FastAPI()
    nxt = spec.get("next")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{nxt}") if nxt else None
    pools: dict[str, Any] = {}

    async def data(flow: str, rid: str) -> None:
        if spec.get("postgres"):
            if "pg" not in pools:
                # idle connections close within a second, as SQLAlchemy closes its overflow ones: the
                # platform's services and these hops share one server's max_connections
                pools["pg"] = await asyncpg.create_pool(
                    spec["postgres"], min_size=1, max_size=POOL, max_inactive_connection_lifetime=1.0
                )
            async with pools["pg"].acquire() as conn:
                row = await conn.fetchval(
                    "INSERT INTO flow_records (flow, request_id) VALUES ($1, $2) RETURNING id", flow, rid
                )
                assert await conn.fetchval("SELECT request_id FROM flow_records WHERE id = $1", row) == rid
        if spec.get("redis"):
            if "redis" not in pools:  # a blocking pool: wait for a connection rather than fail
                pool = BlockingConnectionPool.from_url(spec["redis"], max_connections=20, timeout=10)
                pools["redis"] = Redis(connection_pool=pool)
            cache = pools["redis"]
            key = f"{spec['prefix']}:flow:{flow}:{rid}"
            await cache.set(key, rid, px=60_000)
            assert (await cache.get(key)) == rid.encode()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/flows/{flow}")
    async def flow(flow: str) -> dict[str, Any]:
        me = {"service": name}
        rid = uuid.uuid4().hex
        if client is None:
            await data(flow, rid)
            return {"flow": flow, "ok": True, "hops": [me]}
        _, r = await asyncio.gather(data(flow, rid), client.get(f"/flows/{flow}"))
        return {"flow": flow, "ok": True, "hops": [me, *r.json()["hops"]]}

    return app


def config(app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False)


def listen(port: int) -> socket.socket:
    # as the runtime's listen(): protocol TCP, so asyncio sets TCP_NODELAY on each connection
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def chain(hops: list[dict[str, Any]]) -> None:
    servers = [uvicorn.Server(config(hop(f"hop@{h['port']}", h))).serve(sockets=[listen(h["port"])]) for h in hops]
    await asyncio.gather(*servers)


def main() -> None:
    # from the environment, not argv: the URLs carry the services' passwords
    mode, spec = sys.argv[1], json.loads(os.environ["BARE_HOPS"])
    if mode == "process":
        uvicorn.Server(config(hop(f"hop@{spec['port']}", spec))).run(sockets=[listen(spec["port"])])
    else:
        asyncio.run(chain(spec))


if __name__ == "__main__":
    main()
