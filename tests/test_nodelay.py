"""Every connection a service accepts has TCP_NODELAY set, in both run modes.

Without it a response written in two parts (head, then body) waits for the client's delayed
ACK: about 40 ms per request on a kept-alive connection, at every hop. The servers run here in
the test's own process (the embedded host's code, and the runtime's ``server`` that
``python -m <package>`` runs), so the option can be read on the server's side of a real
loopback connection."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from inprocess import GENERATED, app_of, on_path, until
from running import free_ports

SERVICE, PACKAGE = "pv-keys", "pv_keys"  # no dependencies: ready on its own


@pytest.fixture(autouse=True)
def service_on_path(monkeypatch):
    on_path(monkeypatch, SERVICE)


def _accepted_side(server_port: int, client: tuple[str, int]) -> socket.socket:
    """This process's socket at the server's end of the connection from ``client`` (a dup)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(fd)))
        except OSError:
            continue  # not a socket
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.getsockname()[1] == server_port
                and sock.getpeername() == client
            ):
                return sock
        except OSError:
            pass  # not connected
        sock.close()
    raise AssertionError(f"no accepted connection from {client} on port {server_port}")


async def _nodelay_of_a_kept_alive_connection(port: int) -> list[int]:
    """Two requests on one connection; TCP_NODELAY on the server's side of it, after each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen = []
    try:
        for _ in range(2):
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            with _accepted_side(port, writer.get_extra_info("sockname")) as accepted:
                seen.append(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    finally:
        writer.close()
        await writer.wait_closed()
    return seen


def test_embedded_host_sets_tcp_nodelay_on_accepted_connections(tmp_path: Path) -> None:
    from nexus.local.host import Host

    port = free_ports(1)[0]

    async def run() -> list[int]:
        host = Host(GENERATED, tmp_path)
        host.start(SERVICE, PACKAGE, {"host": "127.0.0.1", "port": str(port), "shutdown_grace_seconds": "1"})
        try:
            await until(lambda: host.view()[SERVICE]["state"] in ("running", "failed"), "the service to start")
            assert host.view()[SERVICE] == {"state": "running", "error": None}
            return await _nodelay_of_a_kept_alive_connection(port)
        finally:
            await host.stop([SERVICE])

    assert all(asyncio.run(run())), "the embedded host accepted a connection without TCP_NODELAY"


def test_service_process_server_sets_tcp_nodelay_on_accepted_connections() -> None:
    from nexus_runtime.serve import server

    port = free_ports(1)[0]
    app = app_of(SERVICE, port=port)

    async def run() -> list[int]:
        srv, sock = server(app)  # what `python -m pv_keys` runs, via serve()
        task = asyncio.create_task(srv.serve(sockets=[sock]))
        try:
            await until(lambda: srv.started or task.done(), "the server to start")
            return await _nodelay_of_a_kept_alive_connection(port)
        finally:
            srv.should_exit = True
            await task

    assert all(asyncio.run(run())), "a service process accepted a connection without TCP_NODELAY"
