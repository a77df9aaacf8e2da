"""The baseline for bench_load.py: a critical path built from bare FastAPI + httpx apps.

Each hop serves GET /flows/{flow}, calls the next hop with one shared httpx.AsyncClient (httpx's
defaults), and returns the hops so far; the last hop answers alone. No trace ids, metrics,
logs, retries or time budget: what the generated runtime adds is what the comparison measures.
Both ways of running mirror `nexus up`'s:

    python benchmarks/bare_chain.py process PORT [NEXT_PORT]   # one hop, its own process
    python benchmarks/bare_chain.py embedded PORT PORT ...     # the whole chain in one process,
                                                               # one loop, a uvicorn server per hop
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI


def hop(name: str, next_port: int | None) -> FastAPI:
    app = FastAPI()
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{next_port}") if next_port else None

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/flows/{flow}")
    async def flow(flow: str) -> dict[str, Any]:
        me = {"service": name}
        if client is None:
            return {"flow": flow, "ok": True, "hops": [me]}
        r = await client.get(f"/flows/{flow}")
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


async def chain(ports: list[int]) -> None:
    servers = []
    for i, port in enumerate(ports):
        nxt = ports[i + 1] if i + 1 < len(ports) else None
        server = uvicorn.Server(config(hop(f"hop{i + 1}", nxt)))
        servers.append(server.serve(sockets=[listen(port)]))
    await asyncio.gather(*servers)


def main() -> None:
    mode, *ports = sys.argv[1:]
    numbers = [int(p) for p in ports]
    if mode == "process":
        app = hop(f"hop@{numbers[0]}", numbers[1] if len(numbers) > 1 else None)
        uvicorn.Server(config(app)).run(sockets=[listen(numbers[0])])
    else:
        asyncio.run(chain(numbers))


if __name__ == "__main__":
    main()
