"""The two ways `nexus up` runs services, behind one small interface.

- ``process``: one OS process per service, ``python -m <package>``, exactly as its Dockerfile
  runs it; configured through environment variables.
- ``embedded``: every service in one host process (nexus.local.host), each its own uvicorn
  server on its own port; configured through the same settings, passed as values.

Both run the generated tree as it is (``generated/runtime`` and ``generated/services/<name>``
on the import path), so nothing needs installing. Every process is started in a new session:
Ctrl-C in the terminal reaches only `nexus up`, which then stops them and clears the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from ..errors import RunError, printable
from . import loopback, procs
from .procs import Identity

GENERATOR_ROOT = Path(__file__).resolve().parent.parent  # where `python -m nexus.local.host` is found
HOST_START_SECONDS = 30.0


def local_env(**extra: str) -> dict[str, str]:
    """The environment of a local service process: ours, minus our import path, with calls to
    loopback kept off any proxy the environment names."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bypass = ",".join(filter(None, [env.get("NO_PROXY") or env.get("no_proxy"), "127.0.0.1,localhost"]))
    env.update({"NO_PROXY": bypass, "no_proxy": bypass, "PYTHONUNBUFFERED": "1", **extra})
    return env


@dataclass(frozen=True)
class Launch:
    """One service to start: where it listens and how it is configured."""

    name: str
    package: str
    port: int
    wave: int
    settings: dict[str, str]  # Settings field -> value; env var = field upper-cased
    log: Path
    # settings with credentials in them (infrastructure URLs): passed like the others, never recorded
    secrets: dict[str, str] = field(default_factory=dict, repr=False)


class Launcher(Protocol):
    mode: str

    def begin(self) -> Identity | None:
        """Prepare (embedded: start the host); the host's identity, if there is one."""

    def start(self, launches: list[Launch]) -> dict[str, Identity | None]:
        """Start serving; each service's process (None where the host is the process)."""

    def failures(self, names: list[str]) -> dict[str, str]:
        """Why each of ``names`` that is not running is not (absent while it runs)."""

    def stop(self, names: list[str]) -> None: ...

    def stop_all(self) -> None: ...


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last lines of a log, as a message shows them: a server logs what its clients sent
    (a user name tried), so control characters are escaped (errors.printable)."""
    try:
        return [printable(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]]
    except OSError:
        return []


class Processes:
    mode = "process"

    def __init__(self, generated: Path, run_dir: Path, known: dict[str, Identity] | None = None) -> None:
        self.generated, self.run_dir = generated, run_dir
        self.known: dict[str, Identity] = dict(known or {})
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def begin(self) -> Identity | None:
        return None

    def start(self, launches: list[Launch]) -> dict[str, Identity | None]:
        started: dict[str, Identity | None] = {}
        for launch in launches:
            env = local_env(
                PYTHONPATH=os.pathsep.join(
                    [str(self.generated / "runtime"), str(self.generated / "services" / launch.name)]
                )
            )
            env.update({key.upper(): value for key, value in {**launch.settings, **launch.secrets}.items()})
            args = [sys.executable, "-m", launch.package]
            child = procs.start_logged(args, launch.log, self.run_dir, env)
            self.children[launch.name] = child
            self.logs[launch.name] = launch.log
            self.known[launch.name] = started[launch.name] = procs.spawned(child.pid, args)
        return started

    def failures(self, names: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in names:
            child = self.children.get(name)
            if child is not None and child.poll() is not None:
                # the log's last line, as the embedded host gives the exception: most often what went wrong
                said = next((line for line in reversed(tail(self.logs[name], 5)) if line.strip()), None)
                out[name] = f"its process exited with code {child.returncode}" + (
                    f"; its log ends: {said}" if said else ""
                )
            elif child is None and (name not in self.known or not procs.is_running(self.known[name])):
                out[name] = "its process is not running"
        return out

    def stop(self, names: list[str]) -> None:
        procs.stop([self.known[n] for n in names if n in self.known])
        for name in names:
            child = self.children.pop(name, None)
            if child is not None:
                child.wait()  # reap it

    def stop_all(self) -> None:
        self.stop(list(self.known))


class Embedded:
    mode = "embedded"

    def __init__(
        self, generated: Path, run_dir: Path, host: Identity | None = None, control: dict[str, object] | None = None
    ) -> None:
        self.generated, self.run_dir = generated, run_dir
        self.host, self.control = host, control
        self.child: subprocess.Popen[bytes] | None = None

    def begin(self) -> Identity | None:
        control_file = self.run_dir / "control.json"
        log = self.run_dir / "logs" / "host.log"
        env = local_env(PYTHONPATH=str(GENERATOR_ROOT))
        args = [sys.executable, "-m", "nexus.local.host", str(self.run_dir), str(self.generated)]
        self.child = procs.start_logged(args, log, self.run_dir, env)
        self.host = procs.spawned(self.child.pid, args)
        deadline = time.monotonic() + HOST_START_SECONDS
        while not control_file.exists():
            if self.child.poll() is not None or time.monotonic() > deadline:
                procs.stop([self.host])
                raise RunError(
                    "the embedded host did not start; last lines of its log:\n"
                    + "\n".join(f"  {line}" for line in tail(log))
                )
            time.sleep(0.01)
        self.control = json.loads(control_file.read_text(encoding="utf-8"))
        return self.host

    def _call(self, method: str, path: str, timeout: float = 30.0, **kwargs: Any) -> httpx.Response:
        assert self.control is not None
        return loopback.client().request(
            method,
            f"http://127.0.0.1:{self.control['port']}{path}",
            headers={"x-nexus-token": str(self.control["token"])},
            timeout=timeout,
            **kwargs,
        )

    def _alive(self) -> bool:
        if self.child is not None:
            return self.child.poll() is None
        return self.host is not None and procs.is_running(self.host)

    def start(self, launches: list[Launch]) -> dict[str, Identity | None]:
        body = {
            "services": [
                {"name": s.name, "package": s.package, "settings": {**s.settings, **s.secrets}} for s in launches
            ]
        }
        self._call("POST", "/start", json=body).raise_for_status()
        return {s.name: None for s in launches}

    def failures(self, names: list[str]) -> dict[str, str]:
        if not self._alive():
            return dict.fromkeys(names, "the embedded host exited (see host.log)")
        try:
            view = self._call("GET", "/services", 5.0).json()
        except httpx.HTTPError as exc:
            return dict.fromkeys(names, f"the embedded host does not answer: {type(exc).__name__}")
        out = {}
        for name in names:
            entry = view.get(name)
            if entry is None or entry["state"] in ("stopped", "stopping"):
                out[name] = "not running in the embedded host"
            elif entry["state"] == "failed":
                out[name] = entry["error"] or "failed"
        return out

    def stop(self, names: list[str]) -> None:
        if self._alive():
            self._call("POST", "/stop", 60.0, json={"services": names}).raise_for_status()

    def stop_all(self) -> None:
        if self.host is None or not self._alive():
            return
        with contextlib.suppress(httpx.HTTPError):  # it may be gone already: then it is stopped below
            self._call("POST", "/shutdown", 5.0)
        deadline = time.monotonic() + 20.0
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        procs.stop([self.host])  # only acts if it is still there
        if self.child is not None:
            self.child.wait()
