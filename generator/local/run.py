"""`nexus up`: run the generated platform on this machine (control.py acts on it afterwards).

`up` reads as its phases: load the catalog and check generated/ is current; refuse if a run is
alive (clear it if stale); choose the services; check every port before anything starts; then
start wave by wave in the deployment plan's order, each wave waiting for /health/ready of its
services before the next. Dependency URLs point at 127.0.0.1 and the catalog's ports.

Stage 1's infrastructure (PostgreSQL, Redis, NATS) is started for real before the services of
later waves (infra.py), each server only when a chosen service uses it; its credentials are
made for this run and reach each service through its environment.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import BaseModel, ValidationError

from ..catalog import Loaded, load_catalog
from ..catalog.models import Catalog
from ..catalog.naming import pkg
from ..errors import AlreadyRunning, PortsInUse, RunError, ServiceFailed, not_utf8
from . import infra, loopback, runstate
from .launch import Embedded, Launch, Launcher, Processes, tail
from .procs import ENOUGH_OPEN_FILES, open_files, port_free, port_holder
from .runstate import RunState, ServiceRecord

MODES = ("embedded", "process")
DEFAULT_MODE = "embedded"  # measured: see docs/running.md
LOCAL_SETTINGS = {"host": "127.0.0.1", "shutdown_drain_seconds": "0", "shutdown_grace_seconds": "2"}
POLL_SECONDS = 0.02  # between readiness polls; a service is usually ready after two or three


@dataclass(frozen=True)
class Event:
    """Progress, for the CLI to show: a wave begins, a service is ready, failed or skipped."""

    kind: str  # plan, wave, ready, failed, skipped, note, stopped, waiting (for another command)
    service: str = ""
    wave: int = 0
    detail: str = ""
    seconds: float = 0.0
    services: tuple[str, ...] = ()


OnEvent = Callable[[Event], None]


def quiet(_: Event) -> None:
    pass


@dataclass
class Started:
    state: RunState
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)  # with keep_going: service -> why


# -- choosing and configuring ------------------------------------------------------------------


def told(on_event: OnEvent) -> Callable[[str], None]:
    """A line (whom a command waits for) as the event that says it: diagnostics, which the CLI
    writes to standard error, as generate's own waiting line."""
    return lambda line: on_event(Event("waiting", detail=line))


def select(cat: Catalog, only: Iterable[str] = ()) -> set[str]:
    """The services to run: all, or those named plus everything they need to become ready.

    Only hard dependencies are followed: a service is ready without its soft ones, and
    following soft edges from the gateway would start nearly the whole platform."""
    wanted = list(only)
    if not wanted:
        return set(cat.services)
    unknown = [n for n in wanted if n not in cat.services]
    if unknown:
        raise RunError(
            "\n".join(f"--only {n}: no such service in the catalog" + did_you_mean(n, cat.services) for n in unknown)
        )
    chosen: set[str] = set()
    todo = list(wanted)
    while todo:
        name = todo.pop()
        if name not in chosen:
            chosen.add(name)
            todo.extend(d for d, e in cat.services[name].depends_on.items() if e.kind == "hard")
    return chosen


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_overrides(items: Iterable[str], cat: Catalog, generated: Path) -> dict[str, dict[str, str]]:
    """``--set`` values: ``KEY=VALUE`` for every service, ``SERVICE.KEY=VALUE`` for one.
    Keys are the runtime's settings (case-insensitive); a typo is an error, not ignored. Ports
    come from the catalog only: the run checks them before anything starts."""
    items = list(items)
    if not items:
        return {}
    model = _settings_model(generated)
    known = set(model.model_fields) - {"service_name", "port"}
    out: dict[str, dict[str, str]] = {}
    for item in items:
        target, sep, value = item.partition("=")
        if not sep:
            raise RunError(f"--set {item}: expected KEY=VALUE or SERVICE.KEY=VALUE")
        service, _, key = target.rpartition(".")
        key = key.strip().lower()
        if service and service not in cat.services:
            raise RunError(f"--set {item}: no service '{service}' in the catalog" + did_you_mean(service, cat.services))
        if key not in known and not (service and key in {f"{pkg(d)}_url" for d in cat.services[service].depends_on}):
            raise RunError(
                f"--set {item}: unknown setting '{key}'"
                + did_you_mean(key, known)
                + f"; settings: {', '.join(sorted(known))}"
            )
        wrong = _wrong_value(value, model, key if key in known else None)
        if wrong is not None:
            raise RunError(f"--set {item}: {wrong}")
        out.setdefault(service or "*", {})[key] = value
    return out


def _wrong_value(value: str, model: type[BaseModel], key: str | None) -> str | None:
    """What is wrong with ``value`` for the setting ``key`` of ``model`` (None: a dependency's
    URL, which only the service's own settings name), as the service would say at start-up,
    where it would fail with the servers before it already started; None when it holds."""
    bad = not_utf8(value)
    if bad is not None:
        return f"the value is not UTF-8 text ({bad})"
    if key is None:
        return None
    try:  # the model's own rules for that one field, the value as text (as from the environment)
        model.__pydantic_validator__.validate_assignment(model.model_construct(), key, value)
    except ValidationError as exc:
        return "; ".join(error["msg"] for error in exc.errors())
    return None


def _settings_model(generated: Path) -> type[BaseModel]:
    """The runtime's own settings, read from the generated copy that will run."""
    path = generated / "runtime" / "nexus_runtime" / "settings.py"
    spec = importlib.util.spec_from_file_location("_nexus_runtime_settings", path)
    if spec is None or spec.loader is None:
        raise RunError(f"{path}: cannot be read; run `nexus generate`")
    module = importlib.util.module_from_spec(spec)
    # registered while it runs: pydantic finds the names its postponed annotations use there
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    model: type[BaseModel] = module.ServiceSettings
    return model


def settings_for(cat: Catalog, name: str, overrides: dict[str, dict[str, str]]) -> dict[str, str]:
    """A service's local settings: its port, 127.0.0.1 URLs for its dependencies, overrides."""
    svc = cat.services[name]
    values = {**LOCAL_SETTINGS, "port": str(svc.port)}
    values.update({f"{pkg(dep)}_url": f"http://127.0.0.1:{cat.services[dep].port}" for dep in sorted(svc.depends_on)})
    values.update(overrides.get("*", {}))
    values.update(overrides.get(name, {}))
    return values


def launcher_for(state: RunState) -> Launcher:
    """The launcher that can act on a recorded run (from any later `nexus` command)."""
    generated, run_dir = Path(state.generated), Path(state.run_dir)
    if state.mode == "embedded":
        return Embedded(generated, run_dir, state.host, state.control)
    return Processes(generated, run_dir, {n: s.process for n, s in state.services.items() if s.process is not None})


def _new_launcher(mode: str, generated: Path, run_dir: Path) -> Launcher:
    return Embedded(generated, run_dir) if mode == "embedded" else Processes(generated, run_dir)


# -- up ----------------------------------------------------------------------------------------


def up(
    catalog: str | Path = "catalog.yaml",
    *,
    mode: str = DEFAULT_MODE,
    only: Iterable[str] = (),
    keep_going: bool = False,
    timeout: float = 30.0,
    overrides: Iterable[str] = (),
    on_event: OnEvent = quiet,
) -> Started:
    """Start the platform (or ``only`` some services and their hard dependencies), wave by wave.

    Raises AlreadyRunning, PortsInUse (before anything starts) or ServiceFailed (after
    stopping everything it started, unless ``keep_going``). On any error or interrupt, what
    was started is stopped."""
    began = time.monotonic()
    if mode not in MODES:
        raise RunError(f"--mode {mode}: use one of {', '.join(MODES)}")
    loaded = load_catalog(catalog)
    cat, root = loaded.catalog, loaded.root
    # one up, down or restart at a time here, from reading the record to writing it (runstate.changing)
    with runstate.changing(root, waiting=told(on_event)):
        generated = _current_generated(loaded, catalog)
        _clear_stale(root, on_event)
        chosen = select(cat, only)
        values = parse_overrides(overrides, cat, generated)
        run_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        run_dir = runstate.run_root(root) / run_id
        servers = infra.plan(cat, root, run_dir, sorted({c for n in chosen for c in cat.services[n].uses}), generated)
        creds = infra.Credentials.fresh(cat)
        launches = {
            name: Launch(
                name,
                pkg(name),
                cat.services[name].port,
                loaded.plan.wave_of[name],
                settings_for(cat, name, values),
                run_dir / "logs" / f"{name}.log",
                infra.service_secrets(cat, name, servers, creds),
            )
            for name in sorted(chosen)
        }
        ports = [(n, s.port) for n, s in launches.items()] + [(n, r.port) for n, r in servers.items()]
        taken = [(n, port, port_holder(port)) for n, port in ports if not port_free(port)]
        if taken:
            raise PortsInUse(sorted(taken, key=lambda t: t[1]))

        files = open_files()  # raised now: every process this run starts inherits it
        if files < ENOUGH_OPEN_FILES:
            on_event(
                Event(
                    "note",
                    detail=f"open files are limited to {files} here and cannot be raised (ulimit -Hn): "
                    "under load the services may run out; raise the hard limit",
                )
            )
        (run_dir / "logs").mkdir(parents=True)
        creds.save(infra.credentials_path(run_dir))
        runstate.prune(root)
        launcher = _new_launcher(mode, generated, run_dir)
        state = RunState(run_id, mode, str(Path(catalog).resolve()), str(generated), str(run_dir))
        state.infrastructure = servers
        try:
            state.host = launcher.begin()
            state.control = getattr(launcher, "control", None)
            runstate.write(root, state)
            failed = _start_waves(
                loaded, launches, launcher, state, creds, keep_going=keep_going, timeout=timeout, on_event=on_event
            )
        except BaseException:
            launcher.stop_all()
            stop_infrastructure(state)
            runstate.remove(root)
            raise
        return Started(state, time.monotonic() - began, failed)


def stop_infrastructure(state: RunState) -> None:
    """Stop stage 1's servers, last started first (after the services that use them)."""
    for record in reversed(list(state.infrastructure.values())):
        infra.stop(record)


def _current_generated(loaded: Loaded, catalog: str | Path) -> Path:
    """generated/ beside the catalog, checked to be what the catalog renders (a stale tree
    would start services with old ports or flows)."""
    from ..pipeline import generate

    generated = loaded.root / "generated"
    if not (generated / "runtime").is_dir():
        raise RunError(f"{generated}: no generated platform here; run `nexus generate` first")
    generate(catalog, generated, check_only=True)
    return generated


def _clear_stale(root: Path, on_event: OnEvent) -> None:
    previous = runstate.read(root)
    if previous is None:
        if runstate.state_path(root).exists():
            runstate.remove(root)  # unreadable: it can name no process we could safely act on
        return
    alive = previous.alive()
    if alive:
        raise AlreadyRunning(
            f"a platform is already running (run {previous.run_id}, {previous.mode} mode, "
            f"{len(alive)} process(es) alive); "
            "see `nexus status`, stop it with `nexus down`"
        )
    runstate.remove(root)
    on_event(
        Event(
            "note",
            detail=f"cleared the state of run {previous.run_id}: none of its processes is running (crashed or killed)",
        )
    )


def _start_waves(
    loaded: Loaded,
    launches: dict[str, Launch],
    launcher: Launcher,
    state: RunState,
    creds: infra.Credentials,
    *,
    keep_going: bool,
    timeout: float,
    on_event: OnEvent,
) -> dict[str, str]:
    cat, root = loaded.catalog, loaded.root
    stages = {s.name: s.title for s in cat.stages}
    failed: dict[str, str] = {}
    on_event(Event("plan", services=tuple(sorted(launches)), detail=state.mode))
    began = time.monotonic()
    for wave in loaded.plan.waves:
        servers = [state.infrastructure[c] for c in wave.infrastructure if c in state.infrastructure]
        if servers:
            on_event(
                Event("wave", wave=wave.number, detail=stages[wave.stage], services=tuple(r.name for r in servers))
            )
            for record in servers:  # a server failing is one error naming it and its log: nothing to keep going with
                try:
                    infra.start(record, creds, timeout=min(timeout, infra.START_SECONDS))
                finally:
                    runstate.write(root, state)
                on_event(Event("ready", record.name, wave.number, seconds=time.monotonic() - began))
            if any(r.engine == "postgres" for r in servers):
                # every chosen service's migrations, before any of them starts (its own database, as its own role)
                migrated = infra.migrate(
                    Path(state.generated), Path(state.run_dir) / "logs" / "migrations.log", cat, state.infrastructure,
                    creds, list(launches),
                )  # fmt: skip
                if migrated:
                    on_event(
                        Event("note", wave=wave.number, detail=f"migrated the databases of {len(migrated)} services")
                    )
        names = [n for n in wave.services if n in launches]
        if not names:
            continue
        on_event(Event("wave", wave=wave.number, detail=stages[wave.stage], services=tuple(names)))
        ready_to_start = []
        for name in names:
            missing = sorted(d for d, e in cat.services[name].depends_on.items() if e.kind == "hard" and d in failed)
            if missing:
                failed[name] = f"not started: its hard dependencies failed ({', '.join(missing)})"
                on_event(Event("skipped", name, wave.number, failed[name]))
            else:
                ready_to_start.append(launches[name])
        for name, who in launcher.start(ready_to_start).items():
            launch = launches[name]
            state.services[name] = ServiceRecord(
                name, launch.package, launch.port, launch.wave, str(launch.log), launch.settings, "starting", who
            )
        runstate.write(root, state)
        results = await_ready(
            launcher, ready_to_start, cat.platform.health.ready, timeout, on_event, fail_fast=not keep_going
        )
        for name, reason in results.items():
            state.services[name].state = "running" if reason is None else "failed"
            if reason is not None:
                failed[name] = reason
        runstate.write(root, state)
        for name, reason in results.items():
            if reason is not None and not keep_going:
                raise ServiceFailed(
                    name,
                    reason,
                    str(launches[name].log),
                    tail(launches[name].log),
                    after="stopped everything this run had started",
                )
    return failed


def await_ready(
    launcher: Launcher, launches: list[Launch], ready_path: str, timeout: float, on_event: OnEvent, *, fail_fast: bool
) -> dict[str, str | None]:
    """Poll each service's readiness until it answers 200, its process fails, or ``timeout``.
    Returns service -> None when ready, else why not."""
    results: dict[str, str | None] = {}
    pending = {launch.name: launch for launch in launches}
    last: dict[str, str] = {}
    began = time.monotonic()
    http = loopback.client()  # one for every poll of every wave (see loopback)
    while pending:
        for name, why in launcher.failures(list(pending)).items():
            results[name] = reason = f"failed to start: {why}"
            on_event(Event("failed", name, pending.pop(name).wave, reason))
        for name, launch in list(pending.items()):
            try:
                r = http.get(f"http://127.0.0.1:{launch.port}{ready_path}")
            except httpx.HTTPError as exc:
                last[name] = f"no answer ({type(exc).__name__})"
                continue
            if r.status_code == 200:
                results[name] = None
                on_event(Event("ready", name, pending.pop(name).wave, seconds=time.monotonic() - began))
            else:
                last[name] = f"HTTP {r.status_code} {r.text[:300]}"
        if fail_fast and any(v is not None for v in results.values()):
            break
        if pending and time.monotonic() - began > timeout:
            for name, launch in pending.items():
                results[name] = reason = (
                    f"not ready after {timeout:g} s; last answer to {ready_path}: {last.get(name, 'none')}"
                )
                on_event(Event("failed", name, launch.wave, reason))
            break
        if pending:
            time.sleep(POLL_SECONDS)
    return results
