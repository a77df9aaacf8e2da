"""Settings read from the environment and validated at start-up (a bad value stops the start)."""

from __future__ import annotations

import os
from typing import Annotated, Literal, NoReturn, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

# The rules of the settings a service's generated ``Settings`` gives a default of its own: a
# subclass field written `retries: int = 3` would replace the rule along with the default.
Port = Annotated[int, Field(ge=1, le=65535)]
Retries = Annotated[int, Field(ge=0, le=5)]
Seconds = Annotated[float, Field(gt=0)]


class ServiceSettings(BaseSettings):
    """What every service can be told through its environment. Each service's generated
    ``Settings`` subclass adds its name, port and one URL per dependency."""

    # allow_inf_nan: no number here means anything as 'inf' or 'nan' (a timeout of inf never ends)
    model_config = SettingsConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    service_name: str
    # Loopback unless told otherwise: a service started by hand or by `nexus up` is not open to
    # the network. The image sets HOST=0.0.0.0, as a pod must listen on its own address.
    host: str = "127.0.0.1"
    port: Port
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_logs: bool = True

    # Outgoing calls. Mesh deployments set RETRIES=0 so only one layer retries.
    request_timeout_seconds: Seconds = 2.0
    connect_timeout_seconds: Seconds = 0.5
    retries: Retries = 2
    retry_backoff_seconds: float = Field(0.05, ge=0)

    # Pools of the infrastructure clients (resources.py). Connections open only as calls need
    # them; ``db_pool_size`` of them stay open, the overflow ones close as each call returns, so
    # a load above the pool size opens and closes a connection per call (measured: with 2 kept,
    # the flow step spent more on connecting than on its statements). Bounded: `nexus up` runs
    # ~20 services on one PostgreSQL, and each open connection is a server process (~1.4 MB).
    db_pool_size: int = Field(5, ge=1)
    db_pool_overflow: int = Field(5, ge=0)
    cache_pool_size: int = Field(20, ge=1)

    # Readiness probes hard dependencies at most this often, so probes do not fan out.
    readiness_cache_seconds: float = Field(1.0, ge=0)
    readiness_timeout_seconds: float = Field(0.5, gt=0)
    # A round trip to the service's own database or cache may open a connection first (a new
    # PostgreSQL backend process, SCRAM authentication): on a loaded machine that took over 0.5 s.
    resource_probe_timeout_seconds: float = Field(2.0, gt=0)

    # Fault injection for tests and game days: delays this service's flow endpoints.
    inject_delay_ms: int = Field(0, ge=0)

    # At SIGTERM the service first drains: readiness answers 503 and it goes on serving for
    # ``shutdown_drain_seconds``, so that Kubernetes takes it out of its Service's endpoints
    # (kube-proxy, an ingress, a mesh learn of it a moment after the pod is told to stop) before
    # its listener closes; then requests in flight get ``shutdown_grace_seconds`` to finish.
    # Both, and a margin, fit in the pod's terminationGracePeriodSeconds (30). `nexus up`, where
    # nothing but the run routes to a service, sets no drain.
    shutdown_drain_seconds: float = Field(5.0, ge=0)
    shutdown_grace_seconds: float = Field(10.0, ge=0)

    # What a service shows: the prod overlay turns both off (docs/running.md, "Exposure").
    api_docs: bool = True  # /docs, /redoc and /openapi.json
    platform_routes: bool = True  # /platform/... on the gateway and on the services it relays through
    access_log: bool = True  # one JSON line per request, at INFO

    # A request body larger than this is answered 413 (Content Too Large) as it is read, whether
    # its Content-Length says so or it arrives in chunks: without a limit a team's POST route
    # reads any body whole into memory. A route that takes uploads sets its own, larger one
    # (FastAPI's ``max_body_size=`` on the route or its router).
    max_request_body_bytes: int = Field(1_048_576, ge=0)
    # A request line and headers larger than this are answered 431 (serve.BoundedHead): 64 KiB,
    # about Envoy's default (60 KiB), four times Node's and h11's; a JWT is a few KiB.
    max_request_head_bytes: int = Field(65_536, ge=1024)
    # A request line and headers not complete this long after the connection opened, or after
    # their first byte, are answered 408 (serve.BoundedHead): what Apache's RequestReadTimeout
    # gives a head at least; a client that sends nothing is not kept for ever (slowloris).
    request_head_timeout_seconds: Seconds = 30.0
    # A WebSocket message larger than this closes the connection with 1009 (message too big).
    ws_max_message_bytes: int = Field(1_048_576, ge=1)

    # Events (docs/events.md). Without BROKER_SERVERS a service that has events runs without them:
    # it consumes nothing and its publishes fail, saying so.
    broker_servers: str | None = None  # nats://host:4222
    broker_user: str | None = None  # the service's own broker user
    broker_password: SecretStr | None = None
    event_max_attempts: int = Field(5, ge=1, le=100)  # then the message is dead-lettered
    # before attempt 2, 3...; the last repeats
    event_backoff_seconds: tuple[Annotated[float, Field(ge=0)], ...] = (1.0, 5.0, 30.0, 120.0)
    event_batch: int = Field(64, ge=1, le=1000)  # messages fetched at once per consumed channel


S = TypeVar("S", bound=ServiceSettings)


def load(settings_class: type[S], service: str) -> S:
    """The settings from the environment (and SECRETS_DIR). A value that breaks a rule stops the
    start with one line per setting, named as it is set, and no traceback; the value itself is
    not repeated, as it may be a password."""
    try:
        return settings_class(_secrets_dir=secrets_dir())
    except ValidationError as exc:
        _refuse(service, exc)
    except SettingsError as exc:  # a list setting that is not JSON: its rules were not reached
        raise SystemExit(f"{service}: {exc}; a list is given as JSON, such as [1, 5, 30]") from None


def _refuse(service: str, exc: ValidationError) -> NoReturn:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name, *inner = error["loc"] or ("settings",)
        where = str(name).upper() + "".join(f"[{part}]" for part in inner)
        lines.append(f"{service}: setting {where}: {error['msg']}")
    raise SystemExit("\n".join(lines))


def secrets_dir() -> str | None:
    """Where settings are also read from files, one per setting (a Kubernetes pod mounts its
    Secrets there, and the ConfigMap says where: SECRETS_DIR); None when unset or absent."""
    folder = os.environ.get("SECRETS_DIR")
    return folder if folder and os.path.isdir(folder) else None
