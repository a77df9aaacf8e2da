"""The generated services against clients that do not play nice, on loopback, in both run modes:
WebSocket frames of every kind, made-up methods and paths, malformed trace headers, internal
headers sent from outside, and what the settings let an operator switch off.

One small platform per mode (gateway -> auth, gateway -> media with a WebSocket), shared by the
tests of this module; the real `websockets` and httpx clients talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import importlib.util
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import MINIMAL, ROOT, whole_lines
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from running import free_ports, platform, until, write_platform
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from nexus.local import runstate

MODES = ["embedded", "process"]
WS_LIMIT = 4096  # the media service's WS_MAX_MESSAGE_BYTES here, so a test message can pass it cheaply
AUTH_DELAY_MS = 50  # auth's flow endpoint takes this long: a hop given a 10 ms budget would time out
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
REQUEST_ID = re.compile(r"[!-~]{1,128}")


@dataclass
class Live:
    catalog: Path
    url: dict[str, str]

    def log(self, service: str) -> list[dict[str, Any]]:
        """The JSON lines of a service's log so far (whole_lines: it may be writing one)."""
        run = runstate.read(self.catalog.parent)
        assert run is not None
        path = self.catalog.parent / ".nexus" / "run" / run.run_id / "logs" / f"{service}.log"
        return [json.loads(line) for line in whole_lines(path) if line.startswith("{")]


BODY_LIMIT = 4096  # auth's MAX_REQUEST_BODY_BYTES here
UPLOAD_LIMIT = 3 * BODY_LIMIT  # what auth's upload route allows itself (max_body_size=)

# auth's own routes here, as a team writes them in its routes.py: two that read the whole body
TEAM_ROUTES = f"""
from fastapi import APIRouter, Request

router = APIRouter(prefix="/api")


@router.post("/echo")
async def echo(request: Request) -> dict[str, int]:
    return {{"bytes": len(await request.body())}}


@router.post("/upload", max_body_size={UPLOAD_LIMIT})
async def upload(request: Request) -> dict[str, int]:
    return {{"bytes": len(await request.body())}}
"""


def _catalog(folder: Path) -> Path:
    data = copy.deepcopy(MINIMAL)
    data["services"]["media"]["websocket"] = True
    catalog = write_platform(folder, data)
    (folder / "generated" / "services" / "auth" / "auth" / "routes.py").write_text(TEAM_ROUTES, encoding="utf-8")
    return catalog


@pytest.fixture(scope="module", params=MODES)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    catalog = _catalog(tmp_path_factory.mktemp(request.param) / "demo")
    options = ["--set", f"media.ws_max_message_bytes={WS_LIMIT}", "--set", f"auth.inject_delay_ms={AUTH_DELAY_MS}"]
    options += ["--set", f"auth.max_request_body_bytes={BODY_LIMIT}"]
    options += ["--set", f"auth.request_head_timeout_seconds={HEAD_SECONDS}"]
    with platform(catalog, "--mode", request.param, *options) as ports:
        yield Live(catalog, {name: f"http://127.0.0.1:{port}" for name, port in ports.items()})


def _ws(live: Live, via: str = "media") -> str:
    """media's WebSocket endpoint: its own, or through the gateway's relay (``via`` gateway)."""
    if via == "gateway":
        return live.url["gateway"].replace("http://", "ws://") + "/live/media"
    return live.url["media"].replace("http://", "ws://") + "/ws"


VIA = pytest.mark.parametrize("via", ["media", "gateway"])  # direct, and as a client outside reaches it


# -- 1. WebSocket ------------------------------------------------------------------------------


def test_the_project_and_the_runtime_install_a_websocket_library() -> None:
    """uvicorn serves WebSocket only with `websockets` (or wsproto) installed: `nexus up` runs the
    services in Nexus's own environment (its `run` extra), an image installs the runtime's
    dependencies."""
    nexus = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = tomllib.loads((ROOT / "generated" / "runtime" / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for where, dependencies in (
        ("nexus[run]", nexus["optional-dependencies"]["run"]),
        ("nexus-runtime", runtime["dependencies"]),
    ):
        assert any(re.match(r"websockets\b", d) for d in dependencies), where


@VIA
def test_websocket_echoes_text_and_binary_answers_pings_and_closes_cleanly(live: Live, via: str) -> None:
    with connect(_ws(live, via), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"service": "media", "event": "connected"}
        ws.send("héllo ✓")
        assert json.loads(ws.recv(timeout=10)) == {"service": "media", "event": "message", "data": "héllo ✓"}
        ws.send(b"\x00\xffbinary")
        assert ws.recv(timeout=10) == b"\x00\xffbinary"
        assert ws.ping().wait(10), "no pong"
        ws.close()
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000  # the server's close frame


def test_the_gateway_relay_carries_the_client_key_and_refuses_what_it_does_not_relay(live: Live) -> None:
    """The relay opens media's endpoint with the handshake's client key (a mesh keeps the client
    on one of media's pods by it), and answers a service that serves no WebSocket with a 404."""
    forwarded = {"x-forwarded-for": f"203.0.113.{len(live.catalog.parent.parent.name)}"}
    key = _client_key(forwarded["x-forwarded-for"])
    with connect(_ws(live, "gateway"), open_timeout=10, additional_headers=forwarded) as ws:
        ws.recv(timeout=10)
    closed = lambda: [e for e in live.log("media") if e.get("msg") == "websocket closed" and e.get("client") == key]  # noqa: E731
    until(closed, what="media's line for the relayed connection")
    assert closed()[0]["code"] == 1000
    with pytest.raises(InvalidStatus) as refused:
        connect(live.url["gateway"].replace("http://", "ws://") + "/live/auth", open_timeout=10)
    assert refused.value.response.status_code == 404
    assert b"auth is not a live service" in refused.value.response.body


def test_clients_that_drop_their_connections_leave_no_relay_behind(live: Live) -> None:
    """Twenty clients reset their TCP connections (no close frame): each relayed connection to
    media is closed too, and logged once on each side with the client's code."""
    key = _client_key(f"198.51.100.{len(live.catalog.parent.parent.name)}")
    forwarded = {"x-forwarded-for": f"198.51.100.{len(live.catalog.parent.parent.name)}"}
    for _ in range(20):
        with connect(_ws(live, "gateway"), open_timeout=10, additional_headers=forwarded) as ws:
            ws.recv(timeout=10)
            ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            ws.socket.close()

    def closed(service: str) -> list[dict[str, Any]]:
        return [e for e in live.log(service) if e.get("client") == key and "closed" in e.get("msg", "")]

    until(lambda: len(closed("media")) == 20 and len(closed("gateway")) == 20, what="every relay to close")
    assert {e["msg"] for e in closed("gateway")} == {"websocket relay closed"}
    # the client's own code (no status, or abnormal), not a 1011 of the relay's making
    assert {e["code"] for e in closed("gateway")} <= {1005, 1006}
    assert not [e for e in live.log("gateway") if e.get("level") == "error"]


def test_the_gateway_relay_answers_502_when_the_live_service_is_down(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path / "demo")
    # media, a soft dependency, is not started
    with platform(catalog, "--only", "gateway") as ports, pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{ports['gateway']}/live/media", open_timeout=10)
    assert refused.value.response.status_code == 502
    assert json.loads(refused.value.response.body) == {
        "service": "media",
        "error": "unreachable: ConnectionRefusedError",
    }


@pytest.mark.parametrize(
    ("send", "code"),
    [
        pytest.param(lambda ws: ws.send("x" * (WS_LIMIT + 1)), 1009, id="text-too-big"),
        pytest.param(lambda ws: ws.send(b"x" * (WS_LIMIT + 1)), 1009, id="binary-too-big"),
        pytest.param(lambda ws: ws.send(b"\xff\xfe not utf-8", text=True), 1007, id="text-not-utf8"),
    ],
)
@VIA
def test_bad_websocket_input_gets_a_close_frame_with_its_code(live: Live, send: Any, code: int, via: str) -> None:
    with connect(_ws(live, via), open_timeout=10, max_size=None) as ws:
        ws.recv(timeout=10)
        send(ws)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None, "the connection was dropped without a close frame"
    assert closed.value.rcvd.code == code
    # the service lives on, and its handler did not crash
    with connect(_ws(live, via), open_timeout=10) as ws:
        ws.recv(timeout=10)
        ws.send("still there")
        assert json.loads(ws.recv(timeout=10))["data"] == "still there"
    assert not [e for e in live.log("media") if "exc" in e]


# -- 4. metrics labels -------------------------------------------------------------------------


def _series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text) for s in f.samples}


UNUSUAL = ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "PURGE", "REPORT", "SEARCH", "COPY", "MOVE")


def test_made_up_methods_and_paths_do_not_add_metric_series(live: Live) -> None:
    url = live.url["auth"]

    async def flood(count: int, start: int) -> list[int]:
        limit = asyncio.Semaphore(20)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def one(i: int) -> int:
                async with limit:
                    # a made-up method on a made-up path (uvicorn's parser, httptools, answers 400
                    # itself), a method HTTP parsers know but the service does not (WebDAV's) and a
                    # plain GET, each on a made-up path; every tenth, on a real route too (405)
                    status = (await client.request(f"M{i}X", f"/made-up/{i}?q={i}")).status_code
                    status = max(status, (await client.request(UNUSUAL[i % len(UNUSUAL)], f"/made-up/{i}")).status_code)
                    status = max(status, (await client.get(f"/made-up/{i}")).status_code)
                    if i % 10 == 0:
                        status = max(status, (await client.request(UNUSUAL[i % len(UNUSUAL)], "/health")).status_code)
                    return status

            return await asyncio.gather(*(one(i) for i in range(start, start + count)))

    asyncio.run(flood(2, 0))  # one series of each kind exists from here on
    httpx.get(f"{url}/metrics")
    before = _series(httpx.get(f"{url}/metrics").text)
    statuses = asyncio.run(flood(1000, 2))
    after = httpx.get(f"{url}/metrics").text
    assert max(statuses) < 500
    assert _series(after) == before
    assert 'route="unmatched"' in after and 'method="other"' in after


# -- 4b. request bodies ------------------------------------------------------------------------


def _chunks(size: int, chunk: int = 1000) -> Iterator[bytes]:
    """A body sent in chunks with no Content-Length (httpx sends a generator chunked)."""
    for start in range(0, size, chunk):
        yield b"x" * min(chunk, size - start)


def test_a_request_body_over_the_limit_is_answered_413_declared_or_chunked(live: Live) -> None:
    url = live.url["auth"] + "/api"
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.post("/echo", content=b"x" * BODY_LIMIT).json() == {"bytes": BODY_LIMIT}
        assert client.post("/echo", content=_chunks(BODY_LIMIT)).json() == {"bytes": BODY_LIMIT}
        # a Content-Length over the limit, and a chunked body (no length) that crosses it
        assert client.post("/echo", content=b"x" * (BODY_LIMIT + 1)).status_code == 413
        assert client.post("/echo", content=_chunks(BODY_LIMIT + 1)).status_code == 413
        # a route that allows itself more takes what the service's limit refuses, up to its own
        assert client.post("/upload", content=b"x" * (BODY_LIMIT + 1)).json() == {"bytes": BODY_LIMIT + 1}
        assert client.post("/upload", content=_chunks(UPLOAD_LIMIT + 1)).status_code == 413
        assert client.post("/echo", content=b"ok").json() == {"bytes": 2}
    refused = {
        (s.labels["route"], s.labels["method"])
        for f in text_string_to_metric_families(httpx.get(live.url["auth"] + "/metrics").text)
        for s in f.samples
        if s.name == "http_requests_total" and s.labels.get("status") == "413"
    }
    assert refused == {("/api/echo", "POST"), ("/api/upload", "POST")}


def test_a_body_announced_over_the_limit_is_refused_before_a_byte_of_it_is_sent(live: Live) -> None:
    """1 GiB announced, nothing sent: the answer comes at once, so the service never waited to
    read (or hold) the body."""
    port = int(live.url["auth"].rsplit(":", 1)[1])
    head = f"POST /api/echo HTTP/1.1\r\nHost: auth\r\nContent-Length: {1 << 30}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 413 "), answer


HEAD_LIMIT = 65_536  # MAX_REQUEST_HEAD_BYTES's default
HEAD_SECONDS = 2.0  # auth's REQUEST_HEAD_TIMEOUT_SECONDS here


def _exchange(port: int, *parts: bytes) -> bytes:
    """Send ``parts`` on one connection (each its own write), then read until the server closes
    it or stops answering: everything it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            for part in parts:
                sock.sendall(part)
        except ConnectionError:  # closed on us mid-send: what it answered is still there to read
            pass
        answer = b""
        sock.settimeout(2)
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def test_a_request_head_over_the_limit_is_answered_431_on_either_run_mode(live: Live) -> None:
    """uvicorn's httptools parser reads a head of any size (a 200 MB header was read whole);
    the runtime's protocol answers 431 past MAX_REQUEST_HEAD_BYTES and closes, a large header
    or many small ones, and a head within it, a body of any size after it, and requests sent
    back to back on one connection are served as before."""
    port = int(live.url["auth"].rsplit(":", 1)[1])
    start = b"GET /health/live HTTP/1.1\r\nHost: auth\r\n"
    big = [start, *([b"X-Big: " + b"a" * 65_000 + b"\r\n"] * 16)]  # 1 MB, in 16 writes
    many = [
        start,
        *([b"".join(b"X-%d: %s\r\n" % (i, b"b" * 90) for i in range(j, j + 100)) for j in range(0, 3000, 100)]),
    ]
    for head in (big, many):
        answer = _exchange(port, *head, b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    within = start + b"X-Big: " + b"a" * (HEAD_LIMIT // 2) + b"\r\nConnection: close\r\n\r\n"
    assert _exchange(port, within).startswith(b"HTTP/1.1 200 ")
    body = b"x" * (UPLOAD_LIMIT - 10)
    post = b"POST /api/upload HTTP/1.1\r\nHost: auth\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    both = _exchange(port, post + start + b"Connection: close\r\n\r\n")  # back to back, one write
    assert both.count(b"HTTP/1.1 200 ") == 2 and b'{"bytes":%d}' % len(body) in both, both[:400]
    assert httpx.get(live.url["auth"] + "/health/live").status_code == 200


AMBIGUOUS = {
    # a body length said two ways: a front proxy and the service could split the stream apart
    "length and chunked": b"POST /health/live HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /docs HTTP/1.1\r\nHost: a\r\n\r\n",
    "two lengths": b"GET /health/live HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "unknown coding": b"GET /health/live HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
    "NUL in a value": b"GET /health/live HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "folded header": b"GET /health/live HTTP/1.1\r\nHost: a\r\n X-Folded: y\r\n\r\n",
}


@pytest.mark.parametrize("raw", AMBIGUOUS.values(), ids=AMBIGUOUS.keys())
def test_a_request_a_proxy_could_read_otherwise_is_refused_whole(live: Live, raw: bytes) -> None:
    """Request smuggling's inputs get one 400 and a closed connection, never an answer to a
    request hidden inside: the parser's strictness, kept under the runtime's protocol."""
    answer = _exchange(int(live.url["auth"].rsplit(":", 1)[1]), raw)
    assert answer.startswith(b"HTTP/1.1 400 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:300]


def test_a_head_not_complete_in_time_is_answered_408_and_an_idle_connection_closed(live: Live) -> None:
    """A connection that sends nothing, or a head a byte at a time (slowloris), was kept open for
    ever; each is answered 408 and closed once REQUEST_HEAD_TIMEOUT_SECONDS have passed. A head
    that arrives in time after a pause is served."""
    port = int(live.url["auth"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECONDS + 5) as idle:
        started = time.monotonic()
        assert idle.recv(4096).startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert HEAD_SECONDS - 0.5 < time.monotonic() - started < HEAD_SECONDS + 3
        assert idle.recv(4096) == b""  # closed
    with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECONDS + 5) as slow:
        slow.sendall(b"GET /health/live HTTP/1.1\r\n")
        answer = b""
        with contextlib.suppress(ConnectionError):
            for _ in range(int(HEAD_SECONDS * 4)):  # a header byte every 0.5 s, for twice the limit
                slow.sendall(b"X")
                time.sleep(0.5)
        with contextlib.suppress(ConnectionError):
            answer = slow.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    with socket.create_connection(("127.0.0.1", port), timeout=10) as paused:
        time.sleep(HEAD_SECONDS / 2)
        paused.sendall(b"GET /health/live HTTP/1.1\r\nHost: auth\r\nConnection: close\r\n\r\n")
        assert paused.recv(4096).startswith(b"HTTP/1.1 200 ")


# -- 5. incoming headers -----------------------------------------------------------------------

HOSTILE = [
    ("x-request-id", "ü-non-ascii".encode()),
    ("x-request-id", b"\xff\xfe"),
    ("x-request-id", b"a" * 129),
    ("x-request-id", b"has space"),
    ("traceparent", "00-ü".encode()),
    ("traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"),
    ("traceparent", b"ff-" + TRACE_ID.encode() + b"-00f067aa0ba902b7-01"),
    ("traceparent", TRACEPARENT.encode() + b"-extra"),
    ("tracestate", "k=ü".encode()),
    ("tracestate", b",".join(b"k%d=v" % i for i in range(40))),
    ("tracestate", b"Upper=x"),
]


@pytest.mark.parametrize(("name", "value"), HOSTILE, ids=[f"{n}:{v[:12]!r}" for n, v in HOSTILE])
def test_malformed_trace_headers_are_replaced_and_never_cause_a_5xx(live: Live, name: str, value: bytes) -> None:
    gateway = live.url["gateway"]
    headers = (
        [(b"traceparent", TRACEPARENT.encode()), (name.encode(), value)]
        if name == "tracestate"
        else [(name.encode(), value)]
    )
    for path in (
        "/health/ready",
        "/flows/login",
        "/platform/flows/login",
        "/platform/health/auth/ready",
        "/platform/health/media/metrics",
    ):
        r = httpx.get(gateway + path, headers=headers, timeout=10)
        assert r.status_code == 200, (path, r.text)
        echoed = r.headers["x-request-id"]
        assert REQUEST_ID.fullmatch(echoed) and echoed.encode() != value, (path, echoed)
        if "flows" in path:
            assert r.json()["ok"] and "broken" not in r.json()


def test_a_valid_request_id_and_trace_follow_the_request_through_every_hop(live: Live) -> None:
    rid = f"trace-me-{live.catalog.parent.parent.name}"
    r = httpx.get(
        live.url["gateway"] + "/flows/login",
        headers={"x-request-id": rid, "traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == rid

    def logged(service: str) -> list[dict[str, Any]]:
        return [e for e in live.log(service) if e.get("msg") == "request" and e.get("request_id") == rid]

    until(lambda: logged("gateway") and logged("auth"), what="the access lines of both hops")
    for service in ("gateway", "auth"):
        (line,) = logged(service)
        assert line["trace_id"] == TRACE_ID


def _client_key(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:16]


@pytest.mark.parametrize(
    ("forwarded", "address"),
    [
        (None, "127.0.0.1"),  # no proxy in front: the connection's peer
        ("203.0.113.7", "203.0.113.7"),
        ("198.51.100.9, 203.0.113.7", "203.0.113.7"),  # the client's own entries come first
    ],
)
def test_the_gateway_sets_the_client_key_and_every_hop_carries_it(
    live: Live, forwarded: str | None, address: str
) -> None:
    """The key a mesh keeps a client on one pod by (session_affinity): set at the edge from the
    address the proxy in front saw (the last of X-Forwarded-For), never the client's own
    x-nexus-client, and the same at every hop of the flow."""
    rid = f"client-{live.catalog.parent.parent.name}-{(forwarded or address).replace(' ', '')}"
    headers = {"x-request-id": rid, "x-nexus-client": "0123456789abcdef"}
    if forwarded:
        headers["x-forwarded-for"] = forwarded
    assert httpx.get(live.url["gateway"] + "/flows/login", headers=headers).status_code == 200

    def logged(service: str) -> list[dict[str, Any]]:
        return [e for e in live.log(service) if e.get("msg") == "request" and e.get("request_id") == rid]

    until(lambda: logged("gateway") and logged("auth"), what="the access lines of both hops")
    assert [e["client"] for s in ("gateway", "auth") for e in logged(s)] == [_client_key(address)] * 2


# -- 8. the outside edge -----------------------------------------------------------------------


@pytest.mark.parametrize("budget", ["0", "-5", "1"])
def test_the_gateway_ignores_a_client_chain_budget(live: Live, budget: str) -> None:
    """A budget from outside would leave auth (50 ms) 10 ms: the flow would time out."""
    for path in ("/flows/login", "/platform/flows/login", "/platform/health/auth/ready"):
        r = httpx.get(
            live.url["gateway"] + path, headers={"x-nexus-budget-ms": budget, "x-nexus-via": "forged"}, timeout=10
        )
        assert r.status_code == 200, (path, r.text)


def _listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP port listens on, from the kernel's own table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


LOOPBACK, ANY = "0100007F", "00000000"


def test_nexus_up_listens_on_loopback_only(live: Live) -> None:
    for url in live.url.values():
        assert _listening_addresses(int(url.rsplit(":", 1)[1])) == {LOOPBACK}


def _dockerfile_env(path: Path) -> dict[str, str]:
    """The variables a Dockerfile's ENV instructions set (KEY=VALUE form, continued lines joined)."""
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    pairs = [p for line in text.splitlines() if line.startswith("ENV ") for p in line.split()[1:]]
    return dict(p.split("=", 1) for p in pairs)


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads the kernel's socket table (Linux)")
def test_python_m_listens_on_loopback_and_the_image_on_every_interface(tmp_path: Path) -> None:
    """The service README's `python -m <pkg>`, and the same with the environment its Dockerfile sets."""
    catalog = _catalog(tmp_path / "demo")
    service = catalog.parent / "generated" / "services" / "auth"
    base = {k: v for k, v in os.environ.items() if k != "HOST"} | {"SHUTDOWN_DRAIN_SECONDS": "0"}
    base["PYTHONPATH"] = os.pathsep.join([str(catalog.parent / "generated" / "runtime"), str(service)])
    for extra, address in (({}, LOOPBACK), (_dockerfile_env(service / "Dockerfile"), ANY)):
        (port,) = free_ports(1)
        env = {**base, **extra, "PORT": str(port)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "auth"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            until(lambda p=port: bool(_listening_addresses(p)), what=f"auth on {port}")
            assert _listening_addresses(port) == {address}
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def test_docs_platform_routes_and_access_log_can_be_switched_off(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path / "demo")
    off = ["--set", "api_docs=false", "--set", "platform_routes=false", "--set", "access_log=false"]
    with platform(catalog, *off) as ports:
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        for base in url.values():
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert httpx.get(base + path).status_code == 404, (base, path)
        for path in (
            "/platform",
            "/platform/flows/login",
            "/platform/health/auth/live",
            "/platform/health/gateway/metrics",
        ):
            assert httpx.get(url["gateway"] + path).status_code == 404, path
        r = httpx.get(url["gateway"] + "/flows/login")  # what the platform is for still works
        assert r.status_code == 200 and r.json()["ok"]
        run = Live(catalog, url)
        until(lambda: any(e.get("msg") == "started" for e in run.log("gateway")), what="the gateway's log")
        assert not [e for name in url for e in run.log(name) if e.get("msg") == "request"]


# -- 9. the access log -------------------------------------------------------------------------


def test_one_json_access_line_per_request(live: Live) -> None:
    rid = f"count-me-{live.catalog.parent.parent.name}"
    for path in ("/health", "/flows/login", "/no/such/path"):
        httpx.get(live.url["gateway"] + path, headers={"x-request-id": rid, "traceparent": TRACEPARENT})

    def lines() -> list[dict[str, Any]]:
        return [e for e in live.log("gateway") if e.get("msg") == "request" and e.get("request_id") == rid]

    until(lambda: len(lines()) >= 3, what="three access lines")
    got = lines()
    assert [(e["method"], e["route"], e["status"]) for e in got] == [
        ("GET", "/health", 200),
        ("GET", "/flows/{flow}", 200),
        ("GET", "unmatched", 404),
    ]
    for e in got:
        assert e["level"] == "info" and e["service"] == "gateway" and e["trace_id"] == TRACE_ID
        assert isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0


def _tracing() -> Any:
    """The runtime's tracing module, loaded from the template (it imports nothing of the runtime)."""
    path = ROOT / "templates" / "runtime" / "nexus_runtime" / "tracing.py"
    spec = importlib.util.spec_from_file_location("nexus_runtime_tracing_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


tracing = _tracing()


@settings(max_examples=300, deadline=None)
@given(rid=st.text(), parent=st.text(), states=st.lists(st.text(), max_size=3))
def test_any_incoming_header_text_becomes_headers_every_hop_can_send(rid: str, parent: str, states: list[str]) -> None:
    outgoing = tracing.from_headers(rid, parent, states).outgoing()
    httpx.Request("GET", "http://127.0.0.1/", headers=outgoing)  # what raised UnicodeEncodeError at the next hop
    assert all(v.isascii() and v.isprintable() and len(v) <= 512 for v in outgoing.values())
    assert (outgoing["x-request-id"] == rid) == bool(REQUEST_ID.fullmatch(rid))


def test_valid_w3c_trace_context_is_passed_on_unchanged() -> None:
    out = tracing.from_headers("req-1", TRACEPARENT, ["rojo=00f067aa0ba902b7", "congo=t61rcWkgMzE"]).outgoing()
    assert out["x-request-id"] == "req-1"
    assert out["traceparent"].startswith(f"00-{TRACE_ID}-") and out["traceparent"].endswith("-01")
    assert out["tracestate"] == "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    # a later version's extra fields are allowed; the state of a trace we do not continue is not kept
    assert tracing.from_headers(None, f"01-{TRACE_ID}-00f067aa0ba902b7-01-later", []).trace_id == TRACE_ID
    assert "tracestate" not in tracing.from_headers(None, "garbage", ["rojo=1"]).outgoing()
