"""Helpers for the tests that run real services on loopback (test_run, test_verify, test_faults).

Every platform gets free ports below the kernel's ephemeral range (so no outgoing connection
can be holding one), its own folder, and is stopped at the end of the test even when the test
fails: first `nexus down`, then, should that fail, every process its state file records.
"""

from __future__ import annotations

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


def free_ports(n: int) -> list[int]:
    chosen: list[int] = []
    while len(chosen) < n:
        port = random.choice(PORTS)
        if port not in chosen and procs.port_free(port):
            chosen.append(port)
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
