"""`nexus up`, `status`, `restart` and `down` with real services on loopback, in both modes."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, nexus
from running import (
    PORTS,
    cleanup,
    free_ports,
    listening,
    platform,
    ports,
    status_code,
    until,
    worker_ports,
    write_platform,
)

from nexus import write
from nexus.local import procs, runstate

MODES = ["embedded", "process"]


@pytest.fixture
def catalog(tmp_path, minimal):
    return write_platform(tmp_path / "demo", minimal)


def _open_files(pid: int) -> int:
    """The soft limit on open files of process ``pid`` (Linux's /proc)."""
    limits = (procs.PROC / str(pid) / "limits").read_text().splitlines()
    return int(next(x for x in limits if x.startswith("Max open files")).split()[3])


def _nexus_limited(soft: int, hard: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI started as from a shell whose `ulimit -n` is ``soft`` (and ``-Hn`` ``hard``)."""
    return nexus(*args, timeout=120, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))


@pytest.mark.skipif(not procs.PROC.is_dir(), reason="reads the limits of processes in /proc")
@pytest.mark.parametrize("mode", MODES)
def test_everything_a_run_starts_may_open_as_many_files_as_the_hard_limit_allows(catalog, mode):
    """A shell starts at 256 open files on macOS, 1,024 on Linux; the shipped catalog's embedded
    host ran out at 256 while it started, and held 807 at once under its load test. The run
    raises its limit before it starts anything, so every server and service inherits it; where
    the hard limit is low, it says so and runs."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = procs.OPEN_FILES if hard == resource.RLIM_INFINITY else min(procs.OPEN_FILES, hard)
    try:
        up = _nexus_limited(256, hard, "up", "--detach", "--mode", mode, "-c", str(catalog))
        assert up.returncode == 0, up.stdout + up.stderr
        assert "open files are limited" not in up.stdout
        state = runstate.read(catalog.parent)
        assert state is not None
        started = state.processes()
        assert len(started) >= (2 if mode == "embedded" else 4)  # postgres, and the host or each service
        assert {_open_files(p.pid) for p in started} == {wanted}
    finally:
        cleanup(catalog)
    low = min(hard, 2048)
    try:
        up = _nexus_limited(low, low, "up", "--detach", "--mode", mode, "-c", str(catalog))
        assert up.returncode == 0, up.stdout + up.stderr
        said = " ".join(up.stdout.split())
        assert f"open files are limited to {low} here and cannot be raised (ulimit -Hn)" in said, said
    finally:
        cleanup(catalog)


def _status(catalog):
    result = nexus("status", "--json", "-c", str(catalog))
    assert result.returncode == 0, result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)["services"]}


@pytest.mark.parametrize("mode", MODES)
def test_up_detach_status_down(catalog, mode):
    with platform(catalog, "--mode", mode):
        found = _status(catalog)
        assert set(found) == {"gateway", "auth", "media"}
        assert {(s["state"], s["live"], s["ready"]) for s in found.values()} == {("running", "ok", "ok")}
        assert {s["port"] for s in found.values()} == set(ports(catalog).values())
        logs = {
            name: catalog.parent / ".nexus" / "run" / runstate.read(catalog.parent).run_id / "logs" / f"{name}.log"
            for name in found
        }
        until(lambda: all(p.exists() and p.stat().st_size > 0 for p in logs.values()), what="a log per service")
        stopped = nexus("down", "-c", str(catalog))
        assert stopped.returncode == 0 and "stopped 3 services" in stopped.stdout
    assert not any(listening(p) for p in ports(catalog).values())
    assert runstate.read(catalog.parent) is None
    assert "nothing is running" in nexus("status", "-c", str(catalog)).stdout


def test_waves_start_in_plan_order(catalog):
    try:
        result = nexus("up", "--detach", "-c", str(catalog))
        assert result.returncode == 0, result.stderr
        lines = [
            line.split()
            for line in result.stdout.splitlines()
            if " ready " in f" {line} " and line.strip().startswith("wave")
        ]
        order = [(int(words[1]), words[3]) for words in lines]
        # stage 1's PostgreSQL (auth uses it) first, then auth (core stage) before the two services that need it
        assert order[0] == (1, "postgres") and order[1] == (2, "auth")
        assert {name for _, name in order[2:]} == {"gateway", "media"}
    finally:
        cleanup(catalog)


def test_taken_port_is_reported_before_anything_starts(catalog):
    gateway_port = ports(catalog)["gateway"]
    with socket_listening(gateway_port):
        result = nexus("up", "--detach", "-c", str(catalog))
    assert result.returncode == 1
    assert f"port {gateway_port} (gateway) is in use by pid {os.getpid()}" in result.stderr
    assert "nothing was started" in result.stderr
    assert not (catalog.parent / ".nexus" / "run").exists()
    assert not listening(ports(catalog)["auth"])


def _waiting(*args: str) -> tuple[subprocess.Popen[str], str]:
    """The CLI run with ``args``, and the first line it wrote to standard error (wide enough
    for the line not to wrap), which must come while it waits: whom a command waits for is a
    diagnostic, as generate's own waiting line, never in its output."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None and proc.stdout is not None
    if not select.select([proc.stderr], [], [], 60)[0]:  # said nowhere, or on the wrong stream
        proc.kill()
        raise AssertionError(f"nothing on stderr while it waits; stdout: {proc.communicate()[0]!r}")
    return proc, proc.stderr.readline()


def test_up_down_and_restart_here_go_one_at_a_time(catalog):
    """Each reads the run's record, acts on processes, and writes the record: two `up` at once
    both found no run and started the same servers, and the one that failed (on PostgreSQL's
    lock) removed the record, by then perhaps the other's, whose processes ran on with nothing
    to stop them by. Here this process holds the lock they take; each waits, naming it, and
    does nothing meanwhile."""
    root = catalog.parent
    held = runstate.run_root(root)
    try:
        with write.locked(held):
            up, line = _waiting("up", "--detach", "-c", str(catalog))
            assert "waiting for nexus " in line and f"(pid {os.getpid()}) to finish with {held}" in line, line
            assert runstate.read(root) is None and not any(listening(p) for p in ports(catalog).values())
        out, _ = up.communicate(timeout=120)
        assert up.returncode == 0, out
        assert "waiting for" not in out  # the output is the run's, the wait was said on stderr
        assert runstate.read(root) is not None
        with write.locked(held):
            for command in (("restart", "auth"), ("down",)):
                waiting, line = _waiting(*command, "-c", str(catalog))
                assert f"(pid {os.getpid()}) to finish with {held}" in line, line
                assert runstate.read(root) is not None and listening(ports(catalog)["auth"])
                waiting.kill()  # it only waited: nothing to undo
                waiting.wait()
        down = nexus("down", "-c", str(catalog))
        assert down.returncode == 0 and runstate.read(root) is None, down.stderr
    finally:
        cleanup(catalog)


def test_a_port_holders_command_line_is_shown_with_its_control_characters_escaped(catalog):
    """Another user's process may hold the port, with anything in its command line: a newline
    broke the message's line, and an escape sequence went to the terminal as it was (here one
    that clears the screen)."""
    gateway_port = ports(catalog)["gateway"]
    holder = (
        "# \x1b[2J\nimport socket, sys\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up', flush=True); input()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(gateway_port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "up\n"
        result = nexus("up", "--detach", "-c", str(catalog))
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 1
    line = next(x for x in result.stderr.splitlines() if f"port {gateway_port} (gateway)" in x)
    assert f"is in use by pid {proc.pid} (" in line and " -c # \\x1b[2J\\nimport socket, sys\\ns = " in line, line
    assert "\x1b" not in result.stderr
    assert not (catalog.parent / ".nexus" / "run").exists()


@pytest.mark.parametrize("mode", MODES)
def test_failing_service_stops_the_run_and_shows_its_log(catalog, mode):
    _break(catalog, "media")
    try:
        result = nexus("up", "--detach", "--mode", mode, "-c", str(catalog))
        assert result.returncode == 1
        assert "media: failed to start" in result.stderr
        assert "RuntimeError: media is broken on purpose" in result.stderr  # from the log's last lines
        assert "stopped everything this run had started" in result.stderr
        assert not any(listening(p) for p in ports(catalog).values())
        assert runstate.read(catalog.parent) is None
    finally:
        cleanup(catalog)


def test_keep_going_starts_the_rest_and_skips_dependents(catalog):
    _break(catalog, "auth")
    try:
        result = nexus("up", "--detach", "--keep-going", "-c", str(catalog))
        assert result.returncode == 1  # detached with failures: say so in the exit code
        assert "auth: failed to start" in result.stdout
        assert "not started: its hard dependencies failed (auth)" in result.stdout
        found = _status(catalog)
        assert found["auth"]["state"] == "failed" and set(found) == {"auth"}
    finally:
        cleanup(catalog)


@pytest.mark.parametrize("mode", MODES)
def test_a_failure_is_printed_as_the_service_said_it_brackets_and_all(catalog, mode):
    """A service's words are not rich's markup: '[/etc/nexus]' in an exception stopped `up` with
    a MarkupError traceback, and '[bold]' (or pydantic's '[type=...]') vanished. Nor are its
    control characters sent to the terminal."""
    _break(catalog, "auth", "needs [/etc/nexus] and [bold]keys[/bold] \x1b[2J")
    try:
        result = nexus("up", "--detach", "--keep-going", "--mode", mode, "-c", str(catalog))
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
        line = next(x for x in result.stdout.splitlines() if "auth needs" in x)
        assert "auth needs [/etc/nexus] and [bold]keys[/bold] \\x1b[2J" in line, line
        assert "\x1b" not in result.stdout
    finally:
        cleanup(catalog)


def test_only_starts_the_service_and_its_hard_dependencies(catalog):
    with platform(catalog, "--only", "gateway"):
        assert set(_status(catalog)) == {"gateway", "auth"}  # media is only a soft dependency
        assert not listening(ports(catalog)["media"])
    assert (
        "no such service in the catalog (did you mean media?)"
        in nexus("up", "--only", "medai", "-c", str(catalog)).stderr
    )


def test_second_up_is_refused_while_one_runs(catalog):
    with platform(catalog):
        again = nexus("up", "--detach", "-c", str(catalog))
        assert again.returncode == 1 and "a platform is already running" in again.stderr


def test_unknown_setting_is_an_error_before_anything_starts(catalog):
    result = nexus("up", "--detach", "--set", "auth.inject_delay=5", "-c", str(catalog))
    assert result.returncode == 1
    assert "unknown setting 'inject_delay' (did you mean inject_delay_ms?)" in result.stderr
    assert not (catalog.parent / ".nexus" / "run").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("auth.inject_delay_ms=abc", "Input should be a valid integer"),
        ("retries=99", "Input should be less than or equal to 5"),
        ("request_timeout_seconds=nan", "Input should be a finite number"),
        ("connect_timeout_seconds=inf", "Input should be a finite number"),
        ("api_docs=maybe", "Input should be a valid boolean"),
        ("log_level=LOUD", "Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ],
)
def test_a_wrong_setting_value_is_an_error_before_anything_starts(catalog, setting, message):
    """The value is held to the runtime's own rule for that setting before stage 1 starts: the
    service would refuse it at start-up, after the servers before it had started."""
    result = nexus("up", "--detach", "--set", setting, "-c", str(catalog))
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith(f"error: --set {setting}: {message}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (catalog.parent / ".nexus" / "run").exists()


def test_a_setting_value_that_is_not_utf8_is_an_error_before_anything_starts(catalog):
    """A byte of the command line that is not UTF-8 (Python reads it as a lone surrogate) in a
    text setting: refused by name, not a traceback when the value is written out."""
    result = subprocess.run(
        [sys.executable, "-m", "cli", "up", "--detach", "--set", b"log_level=\xff", "-c", str(catalog)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout
    assert b"--set log_level=" in result.stderr and b"the value is not UTF-8 text" in result.stderr, result.stderr
    assert b"Traceback" not in result.stderr
    assert not (catalog.parent / ".nexus" / "run").exists()


@pytest.mark.parametrize(
    "text",
    ["[]", "null", '"x"', "7", '{"version": 1, "services": {"a": {"name": "a", "process": "x"}}}', '{"version": 1'],
)
def test_a_run_state_of_any_other_shape_is_no_run(catalog, text):
    """.nexus/run/state.json is Nexus's own; one of another shape (JSON, but not the object it
    writes; torn) names no process anything may act on: nothing runs, said plainly."""
    (catalog.parent / ".nexus" / "run").mkdir(parents=True)
    (catalog.parent / ".nexus" / "run" / "state.json").write_text(text, encoding="utf-8")
    assert runstate.read(catalog.parent) is None
    for command, said in (("status", "nothing is running here"), ("down", "nothing to stop"), ("restart", "nothing")):
        result = nexus(command, *(["auth"] if command == "restart" else []), "-c", str(catalog))
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert said in result.stdout + result.stderr, (command, result.stdout, result.stderr)


@pytest.mark.parametrize("mode", MODES)
def test_stale_state_from_a_crashed_run_is_cleared(catalog, mode):
    with platform(catalog, "--mode", mode):
        state = runstate.read(catalog.parent)
        for proc in state.processes():  # a crash: everything dies without `down`
            os.killpg(proc.pid, signal.SIGKILL)
        until(lambda: not runstate.read(catalog.parent).alive(), what="the processes to die")
        assert {s["state"] for s in _status(catalog).values()} == {"exited"}
        again = nexus("up", "--detach", "--mode", mode, "-c", str(catalog))
        assert again.returncode == 0, again.stderr
        assert f"cleared the state of run {state.run_id}" in again.stdout


def test_down_never_signals_a_reused_pid(catalog):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        who = procs.identity(stranger.pid)
        record = runstate.ServiceRecord(
            "auth",
            "auth",
            1,
            2,
            "auth.log",
            {},
            "running",
            procs.Identity(stranger.pid, ("python", "-m", "auth"), who.started),
        )
        runstate.write(
            catalog.parent, runstate.RunState("crashed", "process", str(catalog), "", "", services={"auth": record})
        )
        result = nexus("down", "-c", str(catalog))
        assert result.returncode == 0 and "had already stopped" in result.stdout
        assert stranger.poll() is None  # same pid, another command line: left alone
        assert runstate.read(catalog.parent) is None
    finally:
        stranger.kill()
        stranger.wait()


def test_ctrl_c_stops_an_attached_run(catalog):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    attached = subprocess.Popen(
        [sys.executable, "-m", "cli", "up", "-c", str(catalog)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = []
        for line in attached.stdout:
            seen.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert all(status_code(f"http://127.0.0.1:{p}/health/ready") == 200 for p in ports(catalog).values()), "".join(
            seen
        )
        attached.send_signal(signal.SIGINT)
        out, _ = attached.communicate(timeout=60)
        assert attached.returncode == 0, out
        assert "stopped 3 services" in out
        assert not any(listening(p) for p in ports(catalog).values())
        assert runstate.read(catalog.parent) is None
    finally:
        if attached.poll() is None:
            attached.kill()
        cleanup(catalog)


def _break(catalog, service, why="is broken on purpose"):
    """Make a service fail at start-up, in the file its team owns, saying ``why``."""
    routes = catalog.parent / "generated" / "services" / service / service.replace("-", "_") / "routes.py"
    routes.write_text(f"raise RuntimeError({f'{service} {why}'!r})\n", encoding="utf-8")


class socket_listening:
    """A plain listening socket on ``port`` for the duration of a with block."""

    def __init__(self, port):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen()

    def __enter__(self):
        return self.sock

    def __exit__(self, *exc):
        self.sock.close()


def test_each_worker_hands_out_ports_of_its_own_and_none_twice() -> None:
    """Ports are chosen free and bound seconds later: the xdist workers draw from disjoint
    shares of PORTS, and one process never hands out a port again while it may not be bound yet."""
    shares = [worker_ports(f"gw{i}", "3") for i in range(3)]
    assert all(s.start >= PORTS.start and s.stop <= PORTS.stop and len(s) == len(PORTS) // 3 for s in shares)
    assert all(set(a).isdisjoint(b) for i, a in enumerate(shares) for b in shares[i + 1 :])
    assert worker_ports("", "") == range(PORTS.start, PORTS.stop)  # no xdist: all of them
    handed = [port for _ in range(50) for port in free_ports(4)]
    assert len(handed) == len(set(handed)) == 200
    assert set(handed) <= set(worker_ports())
