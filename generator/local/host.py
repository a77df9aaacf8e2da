"""The embedded host: the services of a run in ONE process, on one asyncio loop, each its own
uvicorn server on its own port, calling each other over loopback HTTP exactly as separate
processes would.

`nexus up --mode embedded` starts it as ``python -m nexus.local.host RUN_DIR GENERATED`` and
drives it over a small HTTP control API on 127.0.0.1 (port and token in RUN_DIR/control.json,
readable by the owner only):

    GET  /services     every hosted service: state (starting, running, stopping, stopped, failed), error
    POST /start        {"services": [{"name", "package", "settings"}]}: build each app, start serving
    POST /stop         {"services": [names]}: graceful stop; returns when they are down
    POST /shutdown     stop everything, then exit

Each service logs to RUN_DIR/logs/<name>.log; the host's own lines (uvicorn) go to its stdout,
which the launcher points at host.log. Only the generated tree's modules are imported here;
a service's code is loaded once per host, so a code change needs `down` and `up`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CONTROL_FILE = "control.json"
TOKEN_HEADER = "x-nexus-token"


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals alone: uvicorn's own handler would stop only the
    server that installed it last; the host stops them all."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # the same, for uvicorn before 0.29
        pass


@dataclass
class Hosted:
    name: str
    state: str = "starting"
    error: str | None = None
    server: Server | None = None
    task: asyncio.Task[None] | None = None


class Host:
    def __init__(self, generated: Path, logs: Path) -> None:
        self.generated, self.logs = generated, logs
        self.services: dict[str, Hosted] = {}
        sys.path.insert(0, str(generated / "runtime"))

    def view(self) -> dict[str, dict[str, Any]]:
        for h in self.services.values():
            if h.state == "starting" and h.server is not None and h.server.started:
                h.state = "running"
        return {name: {"state": h.state, "error": h.error} for name, h in sorted(self.services.items())}

    def start(self, name: str, package: str, settings: dict[str, str]) -> None:
        current = self.services.get(name)
        if current is not None and current.state in ("starting", "running", "stopping"):
            return
        hosted = self.services[name] = Hosted(name)
        log = _service_logger(name, self.logs / f"{name}.log")
        try:
            app, values = self._build(name, package, settings)
            sock = _listen(settings.get("host", "127.0.0.1"), int(settings["port"]))
        except Exception as exc:  # any failure of a team's code is that service's failure, not the host's
            hosted.state, hosted.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("failed to start")
            return
        config = server_config(app, values, log_config=None, lifespan="on")
        hosted.server = Server(config)
        hosted.task = asyncio.create_task(self._serve(hosted, sock), name=f"serve {name}")

    def _build(self, name: str, package: str, settings: dict[str, str]) -> tuple[Any, Any]:
        """The service's app, and its validated settings (uvicorn's options come from them)."""
        # from generated/runtime, put on sys.path by __init__
        from nexus_runtime import create_app

        folder = str(self.generated / "services" / name)
        if folder not in sys.path:
            sys.path.append(folder)
        spec = importlib.import_module(f"{package}.spec").SPEC
        settings_class = importlib.import_module(f"{package}.settings").Settings
        routes = importlib.import_module(f"{package}.routes").router
        # only a service that publishes or consumes has events.py (its generated EVENTS)
        has_events = importlib.util.find_spec(f"{package}.events") is not None
        events = importlib.import_module(f"{package}.events").EVENTS if has_events else None
        values = settings_class(**settings)  # validated here, as the service would at start-up
        app = create_app(spec, settings_class, routes, settings=values, events=events)
        return _logging_errors(app, logging.getLogger(f"nexus.{name}")), values

    async def _serve(self, hosted: Hosted, sock: socket.socket) -> None:
        assert hosted.server is not None
        try:
            await hosted.server.serve(sockets=[sock])
        except SystemExit:  # uvicorn exits the process when it cannot start; here it fails one service
            hosted.error = "the server stopped at start-up (see host.log)"
        except Exception as exc:
            hosted.error = f"{type(exc).__name__}: {exc}"
        finally:
            sock.close()
        if hosted.state == "stopping":
            hosted.state = "stopped"
        else:
            hosted.state, hosted.error = "failed", hosted.error or "the server exited on its own (see its log)"

    async def stop(self, names: list[str]) -> None:
        tasks = []
        for name in names:
            hosted = self.services.get(name)
            if hosted is None or hosted.server is None or hosted.task is None or hosted.task.done():
                continue
            hosted.state = "stopping"
            hosted.server.should_exit = True
            tasks.append(hosted.task)
        await asyncio.gather(*tasks, return_exceptions=True)


def server_config(app: Any, settings: Any, **overrides: Any) -> uvicorn.Config:
    """The uvicorn settings a service runs with in its own process, as the runtime sets them
    (generated/runtime is on sys.path from Host.__init__): both run modes serve alike."""
    from nexus_runtime.serve import config

    return config(app, settings, **overrides)


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than inside uvicorn, so a taken port fails this service with a clear
    error instead of uvicorn calling sys.exit for the whole host. The runtime makes the socket
    (generated/runtime is on sys.path from Host.__init__): both run modes listen alike."""
    from nexus_runtime.serve import listen

    return listen(host, port)


def _service_logger(name: str, path: Path) -> logging.Logger:
    """The runtime logs through ``nexus.<name>``; giving that logger a file handler first makes
    the runtime keep it (it only adds a stdout handler to a logger that has none)."""
    from nexus_runtime.logs import JsonFormatter

    log = logging.getLogger(f"nexus.{name}")
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonFormatter(name))
    log.addHandler(handler)
    log.propagate = False
    return log


def _logging_errors(app: Any, log: logging.Logger) -> Any:
    """An unhandled error is logged in the service's own file (uvicorn logs it in host.log,
    where nothing says which service it came from)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            log.exception("unhandled error")
            raise

    return wrapped


def _freeze_heap() -> None:
    """Take what the services just built (their modules, apps, clients) out of the garbage
    collector's view: they live as long as the host, and each full collection under load
    would walk all of them again, for every service at once."""
    gc.collect()
    gc.freeze()


def control_app(host: Host, token: str, done: asyncio.Event) -> Starlette:
    async def guard(request: Request) -> JSONResponse | None:
        if not secrets.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
            return JSONResponse({"error": "bad token"}, status_code=403)
        return None

    async def services(request: Request) -> JSONResponse:
        return await guard(request) or JSONResponse(host.view())

    async def start(request: Request) -> JSONResponse:
        if denied := await guard(request):
            return denied
        for item in (await request.json())["services"]:
            host.start(item["name"], item["package"], {k: str(v) for k, v in item["settings"].items()})
        _freeze_heap()
        return JSONResponse(host.view(), status_code=202)

    async def stop(request: Request) -> JSONResponse:
        if denied := await guard(request):
            return denied
        await host.stop(list((await request.json())["services"]))
        return JSONResponse(host.view())

    async def shutdown(request: Request) -> JSONResponse:
        if denied := await guard(request):
            return denied
        done.set()
        return JSONResponse({"stopping": sorted(host.services)}, status_code=202)

    return Starlette(
        routes=[
            Route("/services", services),
            Route("/start", start, methods=["POST"]),
            Route("/stop", stop, methods=["POST"]),
            Route("/shutdown", shutdown, methods=["POST"]),
        ]
    )


async def main(run_dir: Path, generated: Path) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every call at INFO; a service in its own process never configures logging, so
    # it drops them: do the same (at 2,000 flows that was 8,000 lines, and their CPU)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    host = Host(generated, run_dir / "logs")
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    token = secrets.token_hex(16)
    sock = _listen("127.0.0.1", 0)
    control = Server(uvicorn.Config(control_app(host, token, done), log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.create_task(control.serve(sockets=[sock]))
    while not control.started and not serving.done():
        await asyncio.sleep(0.01)
    _write_private(run_dir / CONTROL_FILE, {"port": sock.getsockname()[1], "token": token, "pid": os.getpid()})
    await done.wait()
    await host.stop(list(host.services))
    control.should_exit = True
    await serving


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
