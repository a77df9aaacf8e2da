"""Request id, W3C trace context and the client key, carried from an incoming request to every
outgoing call.

Incoming values are checked before they are adopted: a request id, ``traceparent`` or
``tracestate`` that does not fit its format is replaced (or, for ``tracestate``, dropped), never
copied into logs or outgoing calls. Anything a client sends thus comes out as a short printable
ASCII value, which every hop can log and send on.

The W3C grammar is a few regular expressions, written here rather than taken from the
OpenTelemetry propagator: that would add a dependency to every service, and it logs a warning
for each bad header, which any client could use to flood the logs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# visible ASCII, no spaces: safe in a header, a log line and a URL-less JSON field
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
# https://www.w3.org/TR/trace-context/#traceparent-header: version-traceid-parentid-flags; a later
# version may append fields, version 00 may not
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[!-~]*)?")
# https://www.w3.org/TR/trace-context/#tracestate-header: up to 32 key=value members
_TRACESTATE_MEMBER = re.compile(
    r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
    r"=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
TRACESTATE_MAX_MEMBERS = 32
TRACESTATE_MAX_CHARS = 512  # the length the W3C asks every vendor to propagate at least

# The client key: which client a request is for, the same at every hop, so that a mesh can keep a
# client on one pod of a service that asks for session affinity (Istio hashes on this header;
# the docs' mesh page). The gateway sets it (edge.py), from the client's address; inside, each
# hop passes on what it was given. A digest, so that no hop carries or logs the address itself.
CLIENT_HEADER = "x-nexus-client"
_CLIENT = re.compile(r"[0-9a-f]{16}")
_CLIENT_KEY = CLIENT_HEADER.encode("ascii")


def client_key(address: str) -> str:
    """The client key of a client address (16 hex digits)."""
    return hashlib.sha256(address.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True)
class Trace:
    request_id: str
    trace_id: str
    span_id: str  # this service's span for the current request
    flags: str = "01"
    state: str | None = None  # the caller's tracestate, passed on unchanged
    client: str | None = None  # the client key (CLIENT_HEADER), when the request came with one

    def outgoing(self) -> dict[str, str]:
        """Headers for a call made while handling this request: same trace, a new child span,
        the same client."""
        headers = {
            "x-request-id": self.request_id,
            "traceparent": f"00-{self.trace_id}-{secrets.token_hex(8)}-{self.flags}",
        }
        if self.state:
            headers["tracestate"] = self.state
        if self.client:
            headers[CLIENT_HEADER] = self.client
        return headers


current: ContextVar[Trace | None] = ContextVar("nexus_trace", default=None)


def request_id(value: str | None) -> str:
    """The caller's request id when it is 1 to 128 visible ASCII characters; a new one otherwise."""
    return value if value is not None and _REQUEST_ID.fullmatch(value) else secrets.token_hex(16)


def parent(traceparent: str | None) -> tuple[str, str] | None:
    """(trace id, flags) of a valid traceparent, else None."""
    match = _TRACEPARENT.fullmatch(traceparent or "")
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, flags


def tracestate(values: Iterable[str]) -> str | None:
    """The members of every tracestate header, joined, or None if any member is malformed."""
    members = [m.strip(" \t") for value in values for m in value.split(",")]
    members = [m for m in members if m]
    keys = [m.split("=", 1)[0] for m in members]
    if not members or len(members) > TRACESTATE_MAX_MEMBERS or len(set(keys)) != len(keys):
        return None
    joined = ",".join(members)
    if len(joined) > TRACESTATE_MAX_CHARS or not all(_TRACESTATE_MEMBER.fullmatch(m) for m in members):
        return None
    return joined


def from_headers(
    request_id_value: str | None,
    traceparent: str | None,
    tracestate_values: Iterable[str] = (),
    client: str | None = None,
) -> Trace:
    """Continue the caller's trace when it sent a valid traceparent; start one otherwise. The
    tracestate belongs to the caller's trace: it is kept only with its traceparent. A client key
    of another shape is dropped."""
    found = parent(traceparent)
    trace_id, flags = found if found else (secrets.token_hex(16), "01")
    state = tracestate(tracestate_values) if found else None
    return Trace(
        request_id=request_id(request_id_value),
        trace_id=trace_id,
        span_id=secrets.token_hex(8),
        flags=flags,
        state=state,
        client=client if client is not None and _CLIENT.fullmatch(client) else None,
    )


class TraceMiddleware:
    """Adopt or start the request id and trace for each request, and echo the id back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = tp = client = None
        states: list[str] = []
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value.decode("latin-1")
            elif key == b"traceparent":
                tp = value.decode("latin-1")
            elif key == b"tracestate":
                states.append(value.decode("latin-1"))
            elif key == _CLIENT_KEY:
                client = value.decode("latin-1")
        trace = from_headers(rid, tp, states, client)
        token = current.set(trace)
        echoed = (b"x-request-id", trace.request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(echoed)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current.reset(token)
