"""Acting on the platform `nexus up` started: watch it (attached mode), show its status,
restart some of its services, stop it. Each acts only on the processes the run recorded
(runstate), and only while they are still those processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..catalog import Loaded, load_catalog
from ..errors import NotRunning, RunError, ServiceFailed
from . import infra, runstate
from .launch import Launch, tail
from .run import (
    Event,
    OnEvent,
    await_ready,
    did_you_mean,
    launcher_for,
    parse_overrides,
    quiet,
    stop_infrastructure,
    told,
)

# -- attached mode -----------------------------------------------------------------------------


def supervise(catalog: str | Path = "catalog.yaml", on_event: OnEvent = quiet, poll: float = 0.5) -> None:
    """Block while the run lives, reporting services that exit on their own. Returns when
    `nexus down` ran elsewhere; raises KeyboardInterrupt on Ctrl-C, SIGTERM or SIGHUP."""
    root = load_catalog(catalog).root

    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM, and SIGHUP when the terminal closes, stop the run as Ctrl-C does
    signals = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.signal(s, interrupt) for s in signals}
    reported: set[str] = set()
    try:
        while True:
            time.sleep(poll)
            state = runstate.read(root)
            if state is None:
                return
            running = [n for n, s in state.services.items() if s.state == "running"]
            for name, why in launcher_for(state).failures(running).items():
                if name not in reported:
                    reported.add(name)
                    on_event(
                        Event(
                            "failed", name, state.services[name].wave, f"exited: {why}; see {state.services[name].log}"
                        )
                    )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def attend(
    catalog: str | Path = "catalog.yaml", on_event: OnEvent = quiet, on_stopping: Callable[[], None] = lambda: None
) -> Stopped:
    """The attached `nexus up`: watch the run until Ctrl-C (or SIGTERM, SIGHUP) or until `nexus
    down` ran elsewhere, then make sure everything it started is stopped."""
    try:
        supervise(catalog, on_event=on_event)
    except KeyboardInterrupt:
        on_stopping()
    finally:
        stopped = down(catalog)
    return stopped


# -- down, restart, status ---------------------------------------------------------------------


@dataclass
class Stopped:
    run_id: str | None
    services: list[str]
    stale: bool = False  # the recorded processes were already gone
    infrastructure: list[str] = field(default_factory=list)
    wiped: bool = False  # the servers' data was deleted (--wipe)


def down(
    catalog: str | Path = "catalog.yaml", services: Iterable[str] = (), on_event: OnEvent = quiet, *, wipe: bool = False
) -> Stopped:
    """Stop what `up` started: ``services`` only (the run stays), or everything (the state
    file goes). A process is signalled only while it is still the one `up` recorded.
    ``wipe`` then deletes the servers' data (.nexus/data), which otherwise survives."""
    root = load_catalog(catalog).root
    with runstate.changing(root, waiting=told(on_event)):
        return _down(root, list(services), on_event, wipe=wipe)


def _down(root: Path, names: list[str], on_event: OnEvent, *, wipe: bool) -> Stopped:
    state = runstate.read(root)
    if names and wipe:
        raise RunError("--wipe deletes the data of the whole platform: use it without naming services")
    if state is None:
        if names:
            raise NotRunning("nothing is running here (no run recorded in .nexus/run); start it with `nexus up`")
        runstate.remove(root)
        return Stopped(None, [], wiped=wipe and infra.wipe(root))
    launcher = launcher_for(state)
    if names:
        members = {**state.services, **state.infrastructure}
        unknown = [n for n in names if n not in members]
        if unknown:
            raise RunError(
                "\n".join(f"{n}: not part of run {state.run_id}" + did_you_mean(n, members) for n in unknown)
            )
        launcher.stop([n for n in names if n in state.services])
        for n in names:
            if n in state.infrastructure:  # a server alone: its users go unready, and recover on `restart`
                infra.stop(state.infrastructure[n])
            else:
                state.services[n].state = "stopped"
            on_event(Event("stopped", n))
        runstate.write(root, state)
        return Stopped(state.run_id, names)
    alive = state.alive()
    running = (
        sorted(
            n
            for n, s in state.services.items()
            if state.host is not None or (s.process is not None and s.process in alive)
        )
        if alive
        else []
    )
    servers = sorted(n for n, r in state.infrastructure.items() if r.process is not None and r.process in alive)
    launcher.stop_all()
    stop_infrastructure(state)
    left = state.alive()
    if left:
        raise RunError(
            f"could not stop: {', '.join(f'pid {p.pid}' for p in left)}; the record stays in "
            f"{runstate.state_path(root)}"
        )
    runstate.remove(root)
    infra.credentials_path(Path(state.run_dir)).unlink(missing_ok=True)  # the passwords die with the run
    return Stopped(state.run_id, running, stale=not alive, infrastructure=servers, wiped=wipe and infra.wipe(root))


def restart(
    catalog: str | Path = "catalog.yaml",
    services: Iterable[str] = (),
    *,
    overrides: Iterable[str] = (),
    timeout: float = 30.0,
    on_event: OnEvent = quiet,
) -> None:
    """Stop and start ``services`` of the running platform, nothing else: their dependents
    keep running and recover on their own (readiness re-checks its dependencies)."""
    loaded = load_catalog(catalog)
    with runstate.changing(loaded.root, waiting=told(on_event)):
        _restart(loaded, list(services), list(overrides), timeout, on_event)


def _restart(loaded: Loaded, names: list[str], overrides: list[str], timeout: float, on_event: OnEvent) -> None:
    root = loaded.root
    state = runstate.read(root)
    if state is None or not state.alive():
        raise NotRunning("nothing is running here; start the platform with `nexus up`")
    members = {**state.services, **state.infrastructure}
    unknown = [n for n in names if n not in members]
    if unknown:
        raise RunError("\n".join(f"{n}: not part of run {state.run_id}" + did_you_mean(n, members) for n in unknown))
    servers = [n for n in names if n in state.infrastructure]
    if servers:
        # the same data and this run's passwords: the services using it reconnect on their own
        creds = infra.Credentials.load(infra.credentials_path(Path(state.run_dir)))
        for name in servers:
            infra.stop(state.infrastructure[name])
            try:
                infra.start(state.infrastructure[name], creds)
            finally:
                runstate.write(root, state)
            on_event(Event("ready", name, loaded.plan.wave_of.get(name, 1)))
        names = [n for n in names if n not in servers]
        if not names:
            return
    values = parse_overrides(overrides, loaded.catalog, Path(state.generated))
    launcher = launcher_for(state)
    launcher.stop(names)
    launches = []
    run_creds = infra.Credentials.load(infra.credentials_path(Path(state.run_dir))) if state.infrastructure else None
    for name in names:
        rec = state.services[name]
        rec.settings = {**rec.settings, **values.get("*", {}), **values.get(name, {})}
        secrets = infra.service_secrets(loaded.catalog, name, state.infrastructure, run_creds) if run_creds else {}
        launches.append(Launch(name, rec.package, rec.port, rec.wave, rec.settings, Path(rec.log), secrets))
    for name, who in launcher.start(launches).items():
        state.services[name].process, state.services[name].state = who, "starting"
    runstate.write(root, state)
    results = await_ready(launcher, launches, loaded.catalog.platform.health.ready, timeout, on_event, fail_fast=False)
    gone = launcher.failures(names)
    for name in results:
        state.services[name].state = "failed" if name in gone else "running"
    runstate.write(root, state)
    for name, reason in results.items():
        if reason is not None:
            rec = state.services[name]
            raise ServiceFailed(
                name,
                reason,
                rec.log,
                tail(Path(rec.log)),
                after="" if name in gone else f"{name} keeps running; `nexus status` shows when it becomes ready",
            )


@dataclass
class ServiceStatus:
    name: str
    port: int
    wave: int
    state: str  # running, starting, stopped, failed, exited
    pid: int | None
    live: str  # "ok", or what answered instead; "-" when not probed
    ready: str
    log: str


@dataclass
class InfraStatus:
    name: str
    engine: str
    port: int
    state: str  # running, failed, stopped, exited
    pid: int | None
    ready: str  # "ok" after a real round trip as its administrator, else what happened
    users: list[str]
    log: str
    data: str


@dataclass
class RunStatus:
    run_id: str
    mode: str
    run_dir: str
    alive: bool
    services: list[ServiceStatus]
    infrastructure: list[InfraStatus] = field(default_factory=list)


def status(catalog: str | Path = "catalog.yaml") -> RunStatus | None:
    """The recorded run with each service's process state and live/ready answers, or None."""
    loaded = load_catalog(catalog)
    state = runstate.read(loaded.root)
    if state is None:
        return None
    launcher = launcher_for(state)
    recorded = [n for n, s in state.services.items() if s.state in ("running", "starting")]
    gone = launcher.failures(recorded)
    health = loaded.catalog.platform.health
    probed = asyncio.run(
        _probe_all({n: state.services[n].port for n in recorded if n not in gone}, [health.live, health.ready])
    )
    rows = []
    for name, rec in sorted(state.services.items(), key=lambda kv: (kv[1].wave, kv[0])):
        st = "exited" if name in gone else rec.state
        live, ready = probed.get(name, ("-", "-"))
        pid = (
            (state.host.pid if state.host else rec.process.pid if rec.process else None)
            if st in ("running", "starting")
            else None
        )
        rows.append(ServiceStatus(name, rec.port, rec.wave, st, pid, live, ready, rec.log))
    creds_file = infra.credentials_path(Path(state.run_dir))
    creds = infra.Credentials.load(creds_file) if state.infrastructure and creds_file.exists() else None
    servers = []
    for name, r in state.infrastructure.items():
        answer = infra.round_trip(r, creds) if r.state == "running" else "-"
        st = "exited" if r.state == "running" and answer == "not running" else r.state
        pid = r.process.pid if r.process and st == "running" else None
        servers.append(InfraStatus(name, r.engine, r.port, st, pid, answer, r.users, r.log, r.data))
    return RunStatus(state.run_id, state.mode, state.run_dir, bool(state.alive()), rows, servers)


async def _probe_all(ports: dict[str, int], paths: list[str]) -> dict[str, tuple[str, ...]]:
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as http:  # loopback: never through a proxy

        async def one(port: int, path: str) -> str:
            try:
                r = await http.get(f"http://127.0.0.1:{port}{path}")
            except httpx.HTTPError as exc:
                return f"no answer ({type(exc).__name__})"
            return "ok" if r.status_code == 200 else f"HTTP {r.status_code}"

        async def row(name: str, port: int) -> tuple[str, tuple[str, ...]]:
            return name, tuple(await asyncio.gather(*(one(port, p) for p in paths)))

        return dict(await asyncio.gather(*(row(n, p) for n, p in ports.items())))
