"""Create the broker's streams, durable consumers and buckets in a cluster, then stay.

In Kubernetes this runs as the `provision` container of the NATS server's pod (every service
image carries this runtime), as the broker's administrator, over the pod's own loopback (no
mesh in the way)::

    python -m nexus_runtime.provision /etc/nexus/broker-objects.json

It reads BROKER_SERVERS, BROKER_USER and the administrator's password from the file
BROKER_PASSWORD_FILE names, retries until the server answers, runs ``events.provision`` (what
`nexus up` runs locally), writes READY_FILE (the container's readiness: the pod is Ready, and
`nexus deploy` goes on to the services, only once the streams exist), then waits for SIGTERM.
A restart of the pod (a changed configuration) provisions again; provisioning is idempotent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import nats

from .events import provision

RETRY_SECONDS = 0.5
GIVE_UP_SECONDS = 300.0  # then exit non-zero: the kubelet restarts the container and says so


def _setting(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"provision: {name} is not set")
    return value


async def _run(objects: dict[str, object]) -> None:
    servers, user = _setting("BROKER_SERVERS"), _setting("BROKER_USER")
    password = Path(_setting("BROKER_PASSWORD_FILE")).read_text(encoding="utf-8").strip()
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while True:
        try:
            nc = await nats.connect(servers, user=user, password=password, allow_reconnect=False, connect_timeout=2)
            break
        except Exception as exc:  # nats-py raises several unrelated types while the server starts
            if time.monotonic() > deadline:
                raise SystemExit(f"provision: the broker at {servers} did not answer: {exc}") from exc
            await asyncio.sleep(RETRY_SECONDS)
    try:
        await provision(nc.jetstream(), objects)
    finally:
        await nc.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m nexus_runtime.provision OBJECTS.json", file=sys.stderr)
        return 2
    objects = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    asyncio.run(_run(objects))
    channels = len(objects.get("channels", []))
    print(f"provision: {channels} channels' streams, their consumers and buckets are in place", flush=True)
    ready = os.environ.get("READY_FILE")
    if ready:
        Path(ready).write_text("ok\n", encoding="utf-8")
    # stay, as a container of the server's pod must; SIGTERM (the pod stopping) ends it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
