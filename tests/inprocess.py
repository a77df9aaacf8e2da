"""Helpers for the tests that run generated services inside the test's own process (the
committed generated/ tree, on uvicorn, on the test's event loop), so that what happens on the
server's side of a connection can be looked at directly."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from conftest import ROOT

GENERATED = ROOT / "generated"


def on_path(monkeypatch: pytest.MonkeyPatch, *services: str) -> None:
    """Put generated/runtime and these services' folders on the import path, for this test."""
    for folder in (GENERATED / "runtime", *(GENERATED / "services" / s for s in services)):
        monkeypatch.syspath_prepend(str(folder))


def app_of(service: str, **settings: Any) -> Any:
    """A generated service's app, built as its main.py builds it, with these settings."""
    package = service.replace("-", "_")
    main = importlib.import_module(f"{package}.main")
    settings_class = importlib.import_module(f"{package}.settings").Settings
    return main.create_app(
        main.SPEC, settings_class, main.router, settings=settings_class(host="127.0.0.1", **settings)
    )


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def serving(*apps: Any) -> AsyncIterator[None]:
    """Serve each app as `python -m <package>` would (the runtime's ``server``), on this loop."""
    from nexus_runtime.serve import server

    servers = [server(app) for app in apps]
    tasks = [asyncio.create_task(srv.serve(sockets=[sock])) for srv, sock in servers]
    try:
        await until(
            lambda: all(srv.started for srv, _ in servers) or any(t.done() for t in tasks), "the servers to start"
        )
        yield
    finally:
        for srv, _ in servers:
            srv.should_exit = True
        await asyncio.gather(*tasks)


async def get(
    port: int, path: str, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
) -> tuple[int, bytes]:
    """One GET over a plain socket (no HTTP library of ours in the way): status and body."""
    reader, writer = connection or await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    body = await reader.readexactly(length)
    if connection is None:
        writer.close()
        await writer.wait_closed()
    return int(head.split()[1]), body
