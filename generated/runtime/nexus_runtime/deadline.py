"""One time budget per request chain, so the hop nearest a slow service times out first.

Without it every hop waits its own full timeout: the caller of a slow service and the caller's
caller give up at the same moment, and the wrong hop is blamed. The entry hop starts with
REQUEST_TIMEOUT_SECONDS; each hop passes on what is left, minus a margin to answer its own
caller, in the x-nexus-budget-ms header (relative, so clocks need not agree).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

BUDGET_HEADER = "x-nexus-budget-ms"
HOP_MARGIN_SECONDS = 0.1
MIN_TIMEOUT_SECONDS = 0.01


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which this hop must have answered
    connect_timeout: float

    @classmethod
    def of(cls, headers: Mapping[str, str], timeout: float, connect_timeout: float) -> Deadline:
        """The deadline of an incoming request: the caller's budget, never more than ``timeout``."""
        budget = timeout
        with contextlib.suppress(ValueError):  # no header, or not a number: the service's own timeout
            budget = min(timeout, max(0.0, int(headers.get(BUDGET_HEADER, "")) / 1000))
        return cls(time.monotonic() + budget, connect_timeout)

    def next_hop(self) -> tuple[httpx.Timeout, dict[str, str]]:
        """Timeout and headers for a call made now: the time left, less the margin this hop
        keeps to answer its own caller."""
        left = max(self.at - time.monotonic() - HOP_MARGIN_SECONDS, MIN_TIMEOUT_SECONDS)
        return httpx.Timeout(left, connect=min(left, self.connect_timeout)), {BUDGET_HEADER: str(int(left * 1000))}
