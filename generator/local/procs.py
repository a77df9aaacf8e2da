"""Operating-system facts the runner needs: which process a pid really is, who holds a port,
how much memory a set of processes uses, and how to stop a process without touching a stranger.

A pid alone names nothing durable: after a crash the number can be reused by an unrelated
process. Nexus therefore records each process's start time and command line, and acts on a
pid only while both still match (Linux /proc; elsewhere `ps`, command line only).
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import printable

PROC = Path("/proc")


@dataclass(frozen=True)
class Identity:
    pid: int
    cmdline: tuple[str, ...]
    started: int  # clock ticks since boot (/proc/<pid>/stat field 22); 0 where unknown

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "cmdline": list(self.cmdline), "started": self.started}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Identity:
        return cls(int(data["pid"]), tuple(str(a) for a in data["cmdline"]), int(data.get("started", 0)))


def identity(pid: int) -> Identity | None:
    """What runs as ``pid`` now, or None when nothing (or only a zombie) does."""
    if (PROC / "self").exists():
        try:
            stat = (PROC / str(pid) / "stat").read_text()
            raw = (PROC / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
        if fields[0] in ("Z", "X"):
            return None
        return Identity(pid, tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a), int(fields[19]))
    try:
        out = subprocess.run(
            ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return None
    return Identity(pid, tuple(out.split()), 0) if out else None


# Open files a run may need. In embedded mode every service, its connections, its clients' pools
# and its database and cache pools are in one process: 807 descriptors at once under the shipped
# catalog's load test (concurrency 50). A shell starts at 256 on macOS and 1,024 on Linux; at 256
# the embedded host ran out while it started ("Too many open files", said as a readiness timeout).
OPEN_FILES = 65_536
ENOUGH_OPEN_FILES = 4_096  # below this a run says so (run.up)
MACOS_OPEN_MAX = 10_240  # the most macOS takes when the hard limit is unlimited (its OPEN_MAX)


@cache
def open_files() -> int:
    """This process's limit on open files, raised first toward OPEN_FILES as far as its hard
    limit allows (no privilege needed); what it starts inherits the limit. Once per process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return OPEN_FILES
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    for value in (wanted, MACOS_OPEN_MAX):
        if value <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
        except (ValueError, OSError):  # macOS refuses more than OPEN_MAX under an unlimited hard limit
            continue
        return value
    return soft


def start_logged(args: list[str], log: Path, cwd: Path, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    """Start ``args`` detached from this terminal (its own session: Ctrl-C here does not reach it),
    with no stdin and its output appended to ``log``: how every server and service is started,
    each with as many open files as this process may have (``open_files``)."""
    open_files()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def spawned(pid: int, args: list[str]) -> Identity:
    """The identity of a process we just started with ``args``. Its command line is taken
    from ``args``: /proc can still show it empty for a moment after exec returns."""
    now = identity(pid)
    return Identity(pid, tuple(args), now.started if now else 0)


def lingering(pid: int) -> bool:
    """Whether ``pid`` is a process that has died but is not yet reaped (a zombie): gone for
    ``identity``, yet still there for kill(pid, 0), which is how PostgreSQL tests its lock file."""
    if identity(pid) is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(recorded: Identity) -> bool:
    """True only while the recorded process itself runs: same pid, start time and command."""
    now = identity(recorded.pid)
    if now is None:
        return False
    same_command = now.cmdline == recorded.cmdline or not now.cmdline  # empty: mid-exec, go by start time
    if recorded.started and now.started:
        return now.started == recorded.started and same_command
    return now.cmdline == recorded.cmdline


def stop(recorded: list[Identity], grace: float = 5.0) -> None:
    """SIGTERM each recorded process that is still itself (its process group, so anything it
    started goes too), wait up to ``grace`` seconds, then SIGKILL what is left."""
    targets = [r for r in recorded if is_running(r)]
    for r in targets:
        _signal(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        targets = [r for r in targets if is_running(r)]
        if not targets:
            return
        time.sleep(0.05)
    for r in targets:
        if is_running(r):
            _signal(r.pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # a leader of its own group: we started it with a new session
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind ``host:port`` now (as uvicorn does, with SO_REUSEADDR, so a
    port merely in TIME_WAIT counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str | None:
    """Best effort, Linux only: 'pid 123 (python -m x)' for the process listening on ``port``."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    if not inodes:
        return None
    for proc in PROC.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                who = identity(int(proc.name))
                return f"pid {proc.name} ({printable(' '.join(who.cmdline))[:80]})" if who else f"pid {proc.name}"
        except OSError:
            continue
    return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc; just ``pid`` elsewhere)."""
    children: dict[int, list[int]] = {}
    if (PROC / "self").exists():
        for proc in PROC.iterdir():
            if proc.name.isdigit():
                try:
                    stat = (proc / "stat").read_text()
                except OSError:
                    continue
                children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def memory(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over ``pids`` and their descendants. RSS counts pages shared
    between processes once per process; PSS splits them, so it is the fairer total."""
    rss = pss = 0
    seen: set[int] = set()
    for root in pids:
        for pid in descendants(root):
            if pid in seen:
                continue
            seen.add(pid)
            try:
                for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
                    key, _, value = line.partition(":")
                    if key == "Rss":
                        rss += int(value.split()[0]) * 1024
                    elif key == "Pss":
                        pss += int(value.split()[0]) * 1024
            except OSError:
                continue
    return rss, pss
