"""The state of a local run: what `nexus up` started, so `status`, `restart` and `down` act on
exactly that and nothing else.

Layout, beside the catalog::

    .nexus/run/state.json             the current run (absent when nothing runs)
    .nexus/.run.nexus-lock            held by the one up, restart or down acting on it (``changing``)
    .nexus/run/<run id>/logs/*.log    one log per service and server (and host.log in embedded mode)
    .nexus/run/<run id>/credentials.json  the run's passwords, owner-only (infra.Credentials)
    .nexus/data/<component>/          each server's data: survives runs (`nexus down --wipe` deletes it)

The file is rewritten atomically after every change, so a crash leaves the last good state,
which names every process by pid, start time and command line (procs.Identity). A state whose
processes are all gone is stale: `up` and `down` clear it, and never signal a reused pid.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..write import locked
from .infra import InfraRecord
from .procs import Identity, is_running

VERSION = 1
KEEP_RUNS = 5  # run folders (logs) kept after a new `up`


def run_root(root: Path) -> Path:
    return root / ".nexus" / "run"


def state_path(root: Path) -> Path:
    return run_root(root) / "state.json"


@contextmanager
def changing(root: Path, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """One `nexus up`, `down` or `restart` at a time beside a catalog, each from its reading of
    the record to its writing (the lock file .nexus/.run.nexus-lock, as generate's: the kernel
    drops it with its holder). Two `up` at once both found no run and started the same servers;
    the one that failed (on PostgreSQL's own lock) then removed the record, which by then could
    be the other run's, whose processes ran on with nothing to stop them by. ``waiting`` is
    told, once, whom this waits for."""
    with locked(run_root(root), waiting=waiting):
        yield


@dataclass
class ServiceRecord:
    name: str
    package: str
    port: int
    wave: int
    log: str
    settings: dict[str, str]
    state: str = "starting"  # starting, running, failed, stopped
    process: Identity | None = None  # process mode; in embedded mode the host is the process

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["process"] = self.process.as_dict() if self.process else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServiceRecord:
        proc = data.get("process")
        return cls(**{**data, "process": Identity.from_dict(proc) if proc else None})


@dataclass
class RunState:
    run_id: str
    mode: str  # "embedded" or "process"
    catalog: str
    generated: str
    run_dir: str
    host: Identity | None = None  # embedded mode: the one process every service runs in
    control: dict[str, Any] | None = None  # embedded mode: the host's control port and token
    services: dict[str, ServiceRecord] = field(default_factory=dict)
    infrastructure: dict[str, InfraRecord] = field(default_factory=dict)  # stage 1's servers

    def processes(self) -> list[Identity]:
        """Every process this run started."""
        servers = [r.process for r in self.infrastructure.values() if r.process is not None]
        if self.host is not None:
            return [self.host, *servers]
        return [s.process for s in self.services.values() if s.process is not None] + servers

    def alive(self) -> list[Identity]:
        return [p for p in self.processes() if is_running(p)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "run_id": self.run_id,
            "mode": self.mode,
            "catalog": self.catalog,
            "generated": self.generated,
            "run_dir": self.run_dir,
            "host": self.host.as_dict() if self.host else None,
            "control": self.control,
            "services": {name: rec.as_dict() for name, rec in self.services.items()},
            "infrastructure": {name: rec.as_dict() for name, rec in self.infrastructure.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        return cls(
            run_id=data["run_id"],
            mode=data["mode"],
            catalog=data["catalog"],
            generated=data["generated"],
            run_dir=data["run_dir"],
            host=Identity.from_dict(data["host"]) if data.get("host") else None,
            control=data.get("control"),
            services={name: ServiceRecord.from_dict(rec) for name, rec in data["services"].items()},
            infrastructure={name: InfraRecord.from_dict(rec) for name, rec in data.get("infrastructure", {}).items()},
        )


def read(root: Path) -> RunState | None:
    """The recorded run, or None. An unreadable file (an older format, a torn copy) reads as
    None too: it can name no process we could safely act on."""
    try:
        data = json.loads(state_path(root).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return None
        return RunState.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # any shape but the one written
        return None


def write(root: Path, state: RunState) -> None:
    path = state_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.as_dict(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def remove(root: Path) -> None:
    state_path(root).unlink(missing_ok=True)


def prune(root: Path, keep: int = KEEP_RUNS) -> None:
    """Delete the logs of all but the newest ``keep`` runs (run ids sort by start time)."""
    runs = sorted(p for p in run_root(root).iterdir() if p.is_dir()) if run_root(root).is_dir() else []
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
