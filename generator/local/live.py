"""`nexus verify`'s WebSocket probe: each live service, as a client outside reaches it.

The gateway relays ``/live/<service>`` to the ``/ws`` of each dependency that serves one
(nexus_runtime/live.py). A probe opens that relay, and passes when the service's own hello comes
back through it (``{"service": <name>, "event": "connected"}``: the runtime's, which a team's
handler of the messages that follow does not replace) and the connection closes with 1000.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ..catalog.naming import LIVE_RELAY


@dataclass
class LiveResult:
    service: str
    ok: bool
    ms: float | None = None  # handshake, hello and close, through the gateway
    detail: str = ""


async def probe(base_url: str, service: str, timeout: float, *, local: bool) -> LiveResult:
    """Open the gateway's relay of ``service`` at ``base_url`` (http or https), read the hello,
    close. ``local``: the gateway is on this machine, so no proxy of the environment is used."""
    url = "ws" + base_url.removeprefix("http") + LIVE_RELAY + service
    began = time.monotonic()
    try:
        async with connect(url, open_timeout=timeout, proxy=None if local else True, compression=None) as ws:
            hello = await asyncio.wait_for(ws.recv(), timeout)
        code = ws.close_code
    except InvalidStatus as refused:
        body = refused.response.body.decode("utf-8", "replace")[:200] if refused.response.body else ""
        return LiveResult(service, False, detail=f"the gateway answered HTTP {refused.response.status_code} {body}")
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ConnectionClosed) as exc:
        return LiveResult(service, False, detail=f"no WebSocket through the gateway ({type(exc).__name__})")
    ms = (time.monotonic() - began) * 1000
    try:
        said: object = json.loads(hello)
    except (TypeError, ValueError):
        said = None
    if said != {"service": service, "event": "connected"}:
        return LiveResult(service, False, ms, f"the first message was not {service}'s hello: {str(hello)[:120]!r}")
    if code != 1000:
        return LiveResult(service, False, ms, f"the connection closed with {code}, not 1000")
    return LiveResult(service, True, ms)
