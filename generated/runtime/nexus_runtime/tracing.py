"""Request id and W3C trace context, carried from an incoming request to every outgoing call."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar
from dataclasses import dataclass

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@dataclass(frozen=True)
class Trace:
    request_id: str
    trace_id: str
    span_id: str  # this service's span for the current request
    flags: str = "01"

    def outgoing(self) -> dict[str, str]:
        """Headers for a call made while handling this request: same trace, a new child span."""
        return {"x-request-id": self.request_id, "traceparent": f"00-{self.trace_id}-{secrets.token_hex(8)}-{self.flags}"}


current: ContextVar[Trace | None] = ContextVar("nexus_trace", default=None)


def from_headers(request_id: str | None, traceparent: str | None) -> Trace:
    """Continue the caller's trace when it sent a valid traceparent; start one otherwise."""
    match = _TRACEPARENT.match(traceparent or "")
    trace_id, flags = (match.group(1), match.group(3)) if match and match.group(1) != "0" * 32 else (secrets.token_hex(16), "01")
    return Trace(request_id=request_id or secrets.token_hex(16), trace_id=trace_id, span_id=secrets.token_hex(8), flags=flags)
