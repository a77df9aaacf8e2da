"""Shared fixtures. Tests import the code of the checkout they live in, never an installed copy."""

from __future__ import annotations

import copy
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CATALOG = ROOT / "catalog.yaml"


def _shared() -> Path:
    """The team's shared folder (the spec, the testbed): beside the checkout, or, in a clone of a
    local checkout (CI's fresh clone in /tmp), beside that checkout; scripts/testbed.sh does the same."""
    beside = ROOT.parent / "shared"
    origin = subprocess.run(
        ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if not beside.is_dir() and origin and (Path(origin).parent / "shared").is_dir():
        return (Path(origin).parent / "shared").resolve()
    return beside


SHARED = _shared()
SPEC = SHARED / "spec" / "services-index.md"

# The smallest catalog that passes every rule: a gateway, one hard and one soft edge, one flow.
MINIMAL: dict[str, Any] = {
    "version": 1,
    "platform": {
        "name": "demo",
        "namespace": "demo",
        "version": "0.1.0",
        "image_registry": "registry.example.com/demo",
        "gateway": "gateway",
    },
    "teams": {"core": {"title": "Core", "contact": "core@example.com", "oncall": "oncall@example.com"}},
    "categories": {"platform": {"title": "Platform Services", "summary": "Platform:"}},
    "stages": [
        {
            "name": "infrastructure",
            "title": "Infrastructure",
            "description": "Databases",
            "infrastructure": ["postgres"],
        },
        {"name": "core", "title": "Core", "description": "Core services", "services": ["auth"]},
        {"name": "apps", "title": "Apps", "description": "Everything else", "default": True},
    ],
    "infrastructure": {"postgres": {"kind": "database", "description": "PostgreSQL", "port": 5432}},
    "externals": {"cdn": {"description": "CDN", "url": "https://cdn.example.com"}},
    "services": {
        "gateway": {
            "port": 4000,
            "category": "platform",
            "team": "core",
            "description": "Gateway",
            "depends_on": {"auth": "hard", "media": "soft"},
        },
        "auth": {"port": 4001, "category": "platform", "team": "core", "description": "Auth", "uses": ["postgres"]},
        "media": {
            "port": 4002,
            "category": "platform",
            "team": "core",
            "description": "Media",
            "depends_on": {"auth": "hard"},
            "externals": ["cdn"],
        },
    },
    "flows": {
        "login": {"title": "Login", "hops": ["gateway", "auth"]},
        "watch": {"title": "Watch", "hops": ["gateway", "media", {"external": "cdn"}]},
    },
}


@pytest.fixture(scope="session")
def kubectl() -> str:
    """The kubectl the tests build overlays with (`kubectl kustomize`): tools.find's rules."""
    from tools import find

    return find("kubectl")


@pytest.fixture(autouse=True, scope="session")
def _own_cache_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nexus keeps its caches in the user's cache folder ($XDG_CACHE_HOME/nexus): the tests (and
    the nexus processes they start) get one of their own, never the developer's. The testbed's
    state stays where scripts/testbed.sh built it: it is pinned before $XDG_CACHE_HOME moves."""
    from testbed import STATE

    os.environ.setdefault("NEXUS_TESTBED", str(STATE))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


@pytest.fixture
def redis_port(tmp_path: Path) -> Iterator[int]:
    """A real redis-server on a free loopback port, answering PING, with nothing persisted."""
    import redis
    from running import free_ports

    server_bin = shutil.which("redis-server")
    if server_bin is None:
        pytest.fail("redis-server is not installed: run scripts/install-tools.sh")
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [server_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(250):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield port
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def minimal() -> dict[str, Any]:
    """A fresh deep copy of MINIMAL for a test to break in one place."""
    return copy.deepcopy(MINIMAL)


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def tree(root: Path, leave_out: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path, with its bytes; not those inside a folder
    named in ``leave_out``."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part in leave_out for part in p.relative_to(root).parts)
    }


def whole_lines(path: Path) -> list[str]:
    """The lines of a log a process is writing, the whole ones: it may be writing the last one
    while it is read (a half line failed to parse in a CI run)."""
    return path.read_text(encoding="utf-8").split("\n")[:-1] if path.exists() else []


def synthetic(services: int, channels: int = 0) -> str:
    """The benchmark's synthetic catalog of ``services`` services (benchmarks/synth.py), as text;
    with ``channels`` event channels among them."""
    synth = ROOT / "benchmarks" / "synth.py"
    args = [str(services), "0", str(channels)]
    return subprocess.run([sys.executable, synth, *args], capture_output=True, text=True, check=True).stdout


def nexus(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 60,
    input: str | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real `nexus` CLI of this checkout in a subprocess (``preexec_fn``: run in the
    child before it starts, as a shell's `ulimit` would be)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        preexec_fn=preexec_fn,
    )


@pytest.fixture(scope="session")
def testbed():
    """The Kubernetes cluster the cluster tests use: found running, or the testbed started for
    this run and stopped after the last worker is done (tests/testbed.py). Skips without one,
    fails so under CI."""
    from testbed import find_or_start, using

    with using(find_or_start()) as bed:
        yield bed


def can_mount() -> bool:
    """Whether this process may mount a small tmpfs (root, and a mount that works): a real full disk."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(tempfile.mkdtemp(prefix="nexus-mount-"))
    try:
        ok = (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)], capture_output=True
            ).returncode
            == 0
        )
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` to its last byte (a file ``filler`` in it)."""
    # unbuffered: every write reaches the disk now, so closing has nothing left to flush (and fail on)
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def killed_at_rename(code: str, *args: str, stdin: bytes = b"") -> None:
    """Run ``code`` (Python, given ``args`` and ``stdin``) in a process killed (SIGKILL) at its
    first ``os.replace``: what a writer killed between writing its temporary file and renaming
    it leaves, for real."""
    killed = "import os, signal\nos.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n" + code
    proc = subprocess.run([sys.executable, "-c", killed, *args], input=stdin, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def age_past_stale(*paths: Path) -> None:
    """Make ``paths`` older than a killed writer's files are kept (usercache.STALE_AFTER)."""
    from nexus import usercache

    old = time.time() - usercache.STALE_AFTER - 60
    for path in paths:
        os.utime(path, (old, old))
