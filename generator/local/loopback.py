"""One HTTP client for the calls a command makes on this machine (readiness polls, the embedded
host's control port). Building an ``httpx.Client`` loads the CA bundle, tens of milliseconds
each; `nexus up` built one per wave and one per poll of the host. Loopback calls never go
through a proxy (``trust_env=False``); each call passes its own timeout."""

from __future__ import annotations

import atexit
import threading

import httpx

_lock = threading.Lock()
_client: httpx.Client | None = None


def client() -> httpx.Client:
    """The process's loopback client, built on first use and closed when the process exits."""
    global _client
    with _lock:
        if _client is None or _client.is_closed:
            _client = httpx.Client(timeout=2.0, trust_env=False)
            atexit.register(_client.close)
        return _client
