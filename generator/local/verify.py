"""`nexus verify`: prove the critical paths and every service's health, through the gateway.

Everything is asked of the gateway's platform routes (nexus_runtime/platform_routes.py), so the
same checks run against this machine and against a cluster through one port-forward:

- each flow: GET /platform/flows/<flow> answers 200, its hops come back in the catalog's order,
  each with a timing, external hops marked external and not called;
- each service: GET /platform/health/<service>/<health|ready|live|metrics> answers 200 from
  that very service (its name in the answer), and its metrics parse as Prometheus text with
  prometheus-client's own parser;
- each event channel, on the platform `nexus up` runs here: a probe published at the source is
  acknowledged by every consumer, and a stream replays from its first message (events.py);
- each live service the gateway relays: a WebSocket opened through the gateway gets that
  service's hello and closes cleanly (live.py).

The gateway relays probes along declared edges only (what the NetworkPolicies allow). A
service no such path reaches is checked directly on this machine, and reported as not
reachable through the gateway with --base-url. Failures name the broken hop or service.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..catalog import load_catalog
from ..catalog.graph import relays
from ..catalog.models import Catalog, ExternalHop
from ..errors import RunError
from ..render.broker import ADMIN_USER
from . import events, infra, live, runstate

BROKEN_HEADER = "x-nexus-broken"
VIA_HEADER = "x-nexus-via"
CONCURRENCY = 16


# What a flow's hop writes and reads back in its own infrastructure (nexus_runtime.data: the runtime steps per engine).
DATA_ENGINES = ("postgres", "redis")


@dataclass
class FlowResult:
    flow: str
    status: str  # ok, failed, skipped
    hops: list[dict[str, Any]] = field(default_factory=list)  # as the gateway returned them
    broken: str | None = None
    detail: str = ""


@dataclass
class EndpointResult:
    ok: bool
    status: int | None  # HTTP status; None when nothing answered
    detail: str = ""


@dataclass
class ServiceResult:
    service: str
    status: str  # ok, failed, skipped
    via: str = ""  # "gateway" (relayed along declared edges) or "direct"
    route: str = ""  # the services a relayed probe passed through
    endpoints: dict[str, EndpointResult] = field(default_factory=dict)
    detail: str = ""


@dataclass
class Report:
    base_url: str
    local: bool
    flows: list[FlowResult]
    services: list[ServiceResult]
    failures: list[str]
    seconds: float
    events: list[events.EventHop] = field(default_factory=list)
    live: list[live.LiveResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


@dataclass
class _Targets:
    base_url: str
    local: bool
    gateway_up: bool
    check: list[str]  # services to check
    direct: dict[str, str]  # service -> its own base URL, where the gateway cannot relay
    skipped: dict[str, str]  # service -> why not checked


def verify(catalog: str | Path = "catalog.yaml", base_url: str | None = None, *, timeout: float = 10.0) -> Report:
    """Check every flow and every service. Without ``base_url``, the platform `nexus up` runs
    here (the gateway at 127.0.0.1 and its catalog port); with it, a deployed gateway.
    Raises RunError when the gateway does not answer at all."""
    began = time.monotonic()
    if base_url is not None:
        base_url = _gateway_url(base_url)
    loaded = load_catalog(catalog)
    targets = _targets(loaded.catalog, loaded.root, base_url)
    flows, services = asyncio.run(_run(loaded.catalog, targets, timeout))
    failures = _failures(flows, services)
    hops = _events(loaded.catalog, loaded.root, timeout) if base_url is None else []
    failures += [f"event {h.channel}: {h.hop}: {h.detail}" for h in hops if not h.ok]
    streams = asyncio.run(_live(loaded.catalog, targets, timeout))
    failures += [f"live {r.service}: {r.detail}" for r in streams if not r.ok]
    seconds = time.monotonic() - began
    return Report(targets.base_url, targets.local, flows, services, failures, seconds, hops, streams)


async def _live(cat: Catalog, targets: _Targets, timeout: float) -> list[live.LiveResult]:
    """The gateway's WebSocket relays, one probe each: the live services the gateway depends on,
    of those this run started (all of them with --base-url)."""
    names = [n for n in cat.relayed_live() if n in targets.check and targets.gateway_up]
    return list(await asyncio.gather(*(live.probe(targets.base_url, n, timeout, local=targets.local) for n in names)))


def _events(cat: Catalog, root: Path, timeout: float) -> list[events.EventHop]:
    """The event flows on the broker this machine's run started, as its administrator (the
    run's owner-only credentials); none when the run has no broker or the catalog no events."""
    state = runstate.read(root)
    brokers = [r for r in (state.infrastructure.values() if state else []) if r.engine == "nats"]
    if not cat.events or state is None or not brokers or brokers[0].state != "running":
        return []
    record = brokers[0]
    creds = infra.Credentials.load(infra.credentials_path(Path(state.run_dir)))
    url = f"nats://{infra.LOOPBACK}:{record.port}"
    admin = creds.passwords[record.name]["admin"]
    try:
        report = asyncio.run(events.verify_events(cat, url, ADMIN_USER, admin, timeout=timeout))
    except Exception as exc:  # nats-py's errors: the broker does not answer, or refuses the administrator
        return [events.EventHop("*", "connect", False, f"the broker {record.name} at {url}: {exc}")]
    return report.hops


_URL_FIX = "pass the gateway's URL, such as http://127.0.0.1:8080"


def _gateway_url(given: str) -> str:
    """``given`` (--base-url) as the gateway's base URL, or RunError saying what is wrong with
    it: httpx reads it as a URL, and what httpx accepts but no gateway can be (another scheme,
    no host, a port out of range, a space) is refused here, not met as a failed connection."""
    # host:port alone is the commonest slip (httpx reads the host as a scheme): the fix is that URL
    fix = f"pass the gateway's URL, such as http://{given}" if given.strip() and "://" not in given else _URL_FIX
    try:
        url = httpx.URL(given)
    except httpx.InvalidURL as exc:
        raise RunError(f"--base-url {given!r} is not a URL ({exc}); {fix}") from exc
    wrong = next(
        (
            why
            for bad, why in (
                ("://" not in given, "it has no scheme, http:// or https://"),
                (url.scheme not in ("http", "https"), f"its scheme is {url.scheme}, not http or https"),
                (not url.host, "it names no host"),
                (url.port is not None and not 0 < url.port < 65536, f"port {url.port} is outside 1-65535"),
                (any(ch.isspace() or not ch.isprintable() for ch in given), "it holds a space or a control character"),
            )
            if bad
        ),
        None,
    )
    if wrong is not None:
        raise RunError(f"--base-url {given!r}: {wrong}; {fix}")
    return given.rstrip("/")


def _targets(cat: Catalog, root: Path, base_url: str | None) -> _Targets:
    gateway = cat.platform.gateway
    reachable = {gateway, *relays(cat, gateway)}
    if base_url is not None:
        unreachable = {
            n: "no path of declared dependencies leads to it from the gateway; port-forward to it to check it"
            for n in cat.services
            if n not in reachable
        }
        return _Targets(base_url, False, True, sorted(reachable), {}, unreachable)
    state = runstate.read(root)
    members = set(state.services) if state is not None else set(cat.services)
    skipped = {n: "not started by this run (nexus up --only)" for n in cat.services if n not in members}
    gateway_up = gateway in members
    direct = {n: f"http://127.0.0.1:{cat.services[n].port}" for n in members if n not in reachable or not gateway_up}
    return _Targets(
        f"http://127.0.0.1:{cat.services[gateway].port}", True, gateway_up, sorted(members), direct, skipped
    )


async def _run(cat: Catalog, targets: _Targets, timeout: float) -> tuple[list[FlowResult], list[ServiceResult]]:
    limit = asyncio.Semaphore(CONCURRENCY)
    # a deployed gateway may need the environment's proxy settings; loopback never does
    async with httpx.AsyncClient(timeout=timeout, trust_env=not targets.local) as http:
        if targets.gateway_up:
            await _gateway_answers(http, cat, targets)

        async def get_once(url: str) -> httpx.Response | str:
            async with limit:
                try:
                    return await http.get(url)
                except httpx.HTTPError as exc:
                    return f"no answer ({type(exc).__name__})"

        async def get(url: str) -> httpx.Response | str:
            # A timeout says little on a loaded machine (a hop waits behind others for the CPU):
            # ask once more, and blame the service only if it times out again.
            answer = await get_once(url)
            return await get_once(url) if _timed_out(answer) else answer

        flows, services = await asyncio.gather(
            asyncio.gather(*(_check_flow(cat, name, targets, get) for name in sorted(cat.flows))),
            asyncio.gather(*(_check_service(cat, name, targets, get) for name in targets.check)),
        )
    skipped = [ServiceResult(n, "skipped", detail=why) for n, why in sorted(targets.skipped.items())]
    return list(flows), sorted([*services, *skipped], key=lambda s: s.service)


async def _gateway_answers(http: httpx.AsyncClient, cat: Catalog, targets: _Targets) -> None:
    """One clear error when there is no gateway to ask, instead of a failure per check."""
    gateway = cat.platform.gateway
    hint = "is the platform up (`nexus status`)?" if targets.local else "is the port-forward to the gateway running?"
    try:
        r = await http.get(f"{targets.base_url}/platform")
    except httpx.HTTPError as exc:
        raise RunError(
            f"the gateway {gateway} does not answer at {targets.base_url} ({type(exc).__name__}); {hint}"
        ) from exc
    if r.status_code != 200 or _json(r).get("gateway") != gateway:
        raise RunError(
            f"{targets.base_url}/platform answered HTTP {r.status_code} without naming {gateway} as the gateway: "
            "is this the gateway, generated by this version of nexus?"
        )


async def _check_flow(cat: Catalog, name: str, targets: _Targets, get: Any) -> FlowResult:
    flow = cat.flows[name]
    expected = flow.names()
    missing = [h for h in expected if h in cat.services and (h in targets.skipped or not targets.gateway_up)]
    if missing:
        return FlowResult(name, "skipped", detail=f"not running here: {', '.join(missing)}")
    r = await get(f"{targets.base_url}/platform/flows/{name}")
    if isinstance(r, str):
        return FlowResult(
            name, "failed", broken=cat.platform.gateway, detail=f"the gateway {cat.platform.gateway}: {r}"
        )
    try:
        body = r.json()
        hops = list(body.get("hops", []))
    except (ValueError, AttributeError):
        return FlowResult(
            name,
            "failed",
            broken=cat.platform.gateway,
            detail=f"the gateway answered HTTP {r.status_code} without a flow report",
        )
    if r.status_code != 200 or not body.get("ok"):
        broken = body.get("broken") or cat.platform.gateway
        error = next(
            (h.get("error") for h in hops if h.get("service") == broken and h.get("error")), f"HTTP {r.status_code}"
        )
        return FlowResult(name, "failed", hops, broken, f"broken at {broken}: {error}")
    got = [h.get("service") for h in hops]
    if got != expected:
        at = next((e for i, e in enumerate(expected) if i >= len(got) or got[i] != e), expected[-1])
        return FlowResult(
            name,
            "failed",
            hops,
            at,
            f"hops came back as {' > '.join(map(str, got))}; the catalog says {' > '.join(expected)}",
        )
    for hop, spec in zip(hops, flow.hops, strict=True):
        if isinstance(spec, ExternalHop):
            if not hop.get("external") or "ms" in hop:
                return FlowResult(
                    name, "failed", hops, spec.external, f"external hop {spec.external} is not reported as external"
                )
        elif not isinstance(hop.get("ms"), (int, float)) or hop["ms"] < 0:
            return FlowResult(name, "failed", hops, hop.get("service"), f"hop {hop.get('service')} has no timing")
        else:
            # its own database and cache: written and read back at this hop (the broker's flows are events)
            want = sorted(c for c in cat.services[spec].uses if cat.infrastructure[c].engine in DATA_ENGINES)
            touched = sorted(str(d.get("resource")) for d in hop.get("data", []) if isinstance(d, dict))
            if touched != want:
                return FlowResult(
                    name, "failed", hops, spec,
                    f"hop {spec} touched {', '.join(touched) or 'no data'}; it uses {', '.join(want) or 'none'}",
                )  # fmt: skip
    return FlowResult(name, "ok", hops)


async def _check_service(cat: Catalog, name: str, targets: _Targets, get: Any) -> ServiceResult:
    paths = cat.platform.health.model_dump()
    own = targets.direct.get(name)
    urls = {
        ep: f"{own}{path}" if own else f"{targets.base_url}/platform/health/{name}/{ep}" for ep, path in paths.items()
    }
    answers = await asyncio.gather(*(get(url) for url in urls.values()))
    result = ServiceResult(name, "ok", "direct" if own else "gateway")
    for ep, r in zip(urls, answers, strict=True):
        result.endpoints[ep] = _judge(name, ep, r)
        if not isinstance(r, str) and VIA_HEADER in r.headers:
            result.route = r.headers[VIA_HEADER].replace(",", " > ")
    bad = {ep: e.detail for ep, e in result.endpoints.items() if not e.ok}
    if bad:
        result.status = "failed"
        if len(set(bad.values())) == 1:
            result.detail = f"{', '.join(bad)}: {next(iter(bad.values()))}"
        else:
            result.detail = "; ".join(f"{ep}: {d}" for ep, d in bad.items())
    return result


def _timed_out(r: httpx.Response | str) -> bool:
    """No answer in time: from httpx here (ReadTimeout...), or a hop's timeout the gateway reports (504)."""
    return "Timeout" in r if isinstance(r, str) else r.status_code == 504


def _judge(name: str, endpoint: str, r: httpx.Response | str) -> EndpointResult:
    if isinstance(r, str):
        return EndpointResult(False, None, r)
    if BROKEN_HEADER in r.headers:
        return EndpointResult(
            False, r.status_code, f"unreachable through the gateway: {_json(r).get('error', f'HTTP {r.status_code}')}"
        )
    if endpoint == "metrics":
        if r.status_code != 200:
            return EndpointResult(False, r.status_code, f"HTTP {r.status_code}")
        try:
            families = list(text_string_to_metric_families(r.text))
        except Exception as exc:
            return EndpointResult(False, 200, f"not Prometheus text: {exc}")
        owners = {s.labels.get("service") for f in families if f.name == "nexus_service_info" for s in f.samples}
        if name not in owners:
            return EndpointResult(
                False,
                200,
                f"metrics are not {name}'s (nexus_service_info says {sorted(filter(None, owners)) or 'nothing'})",
            )
        return EndpointResult(True, 200, f"{len(families)} metric families")
    body = _json(r)
    if r.status_code != 200:
        deps = body.get("dependencies") or {}
        waiting = ", ".join(f"{d}: {s}" for d, s in sorted(deps.items()) if s != "ok")
        return EndpointResult(
            False,
            r.status_code,
            f"HTTP {r.status_code} {body.get('status', '')}".rstrip() + (f" ({waiting})" if waiting else ""),
        )
    if body.get("service") != name:
        return EndpointResult(False, 200, f"answered by {body.get('service')!r}, not {name}")
    return EndpointResult(True, 200)


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _failures(flows: list[FlowResult], services: list[ServiceResult]) -> list[str]:
    """One line per failure: broken flows first, then services that do not answer at all (the
    likely causes), then the rest (usually waiting on those)."""
    lines = [f"flow {f.flow}: {f.detail}" for f in flows if f.status == "failed"]
    failed = [s for s in services if s.status == "failed"]
    down = [s for s in failed if not s.endpoints.get("live", EndpointResult(True, 200)).ok]
    lines += [f"service {s.service}: {s.detail}" for s in down]
    lines += [f"service {s.service}: {s.detail}" for s in failed if s not in down]
    return lines
