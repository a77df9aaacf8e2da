"""Helpers for the tests that run real services on loopback (test_run, test_verify, test_faults).

Every platform gets free ports below the kernel's ephemeral range (so no outgoing connection
can be holding one), its own folder, and is stopped at the end of the test even when the test
fails: first `nexus down`, then, should that fail, every process its state file records.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from conftest import dump, nexus

from nexus.local import procs, runstate
from nexus.pipeline import generate

PORTS = range(20000, 32000)
# the ports this process handed out: a port is free until what it was chosen for binds it,
# seconds later (a catalog generated, `nexus up`), and is not handed out again meanwhile
_HANDED: set[int] = set()


def worker_ports(worker: str | None = None, workers: str | None = None) -> range:
    """This pytest-xdist worker's share of PORTS (``gw0``, ``gw1``, ... of ``workers``; all of
    them without xdist): a port is chosen free and bound seconds later, and two workers choosing
    from one range bound each other's (CI of 2026-12-05: two platforms failed to start on the
    same run with "Address already in use")."""
    worker = worker if worker is not None else os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int((workers if workers is not None else os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")) or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    share = len(PORTS) // max(count, 1)
    start = PORTS.start + (index % max(count, 1)) * share
    return range(start, start + share)


def free_ports(n: int) -> list[int]:
    """``n`` ports free now, from this worker's share, none handed out before by this process."""
    pool = worker_ports()
    if len(_HANDED) + n > len(pool) // 2:  # a long session: the earliest are long bound or gone
        _HANDED.clear()
    chosen: list[int] = []
    while len(chosen) < n:
        port = random.choice(pool)
        if port not in chosen and port not in _HANDED and procs.port_free(port):
            chosen.append(port)
    _HANDED.update(chosen)
    return chosen


def write_platform(folder: Path, data: dict[str, Any], tree: Path | None = None) -> Path:
    """Give every service a free port, write the catalog into ``folder`` and generate beside it;
    over a copy of ``tree`` (a generated/ folder), as a clone of the repository has it: its
    teams' own code, which generating keeps, goes along."""
    # the infrastructure too: `nexus up` starts real servers on them
    owners = [*data["services"].values(), *data.get("infrastructure", {}).values()]
    for owner, port in zip(owners, free_ports(len(owners)), strict=True):
        owner["port"] = port
    folder.mkdir(parents=True, exist_ok=True)
    catalog = folder / "catalog.yaml"
    catalog.write_text(dump(data), encoding="utf-8")
    if tree is not None:
        shutil.copytree(tree, folder / "generated")
    generate(catalog)
    return catalog


def ports(catalog: Path) -> dict[str, int]:
    data = yaml.safe_load(catalog.read_text(encoding="utf-8"))
    return {name: svc["port"] for name, svc in data["services"].items()}


def cleanup(catalog: Path) -> None:
    """Stop whatever the run in ``catalog``'s folder started, by any means."""
    if runstate.read(catalog.parent) is not None:
        nexus("down", "-c", str(catalog), timeout=60)
    state = runstate.read(catalog.parent)
    if state is not None:
        procs.stop(state.processes(), grace=2.0)
        runstate.remove(catalog.parent)


@contextmanager
def platform(catalog: Path, *args: str) -> Iterator[dict[str, int]]:
    """`nexus up --detach` (asserting it succeeds), yield the ports, always clean up."""
    try:
        started = nexus("up", "--detach", "-c", str(catalog), *args, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        yield ports(catalog)
    finally:
        cleanup(catalog)


def until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Wait (bounded) until ``check()`` is true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def status_code(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def listening(port: int) -> bool:
    return not procs.port_free(port)
