"""Render area: the platform's events as files. The broker's per-service permissions and the
objects (streams, durable consumers, buckets) it must hold, as JSON the broker's configuration
and provisioning read; and the AsyncAPI 3.0 documents, one per service and one for the platform.

All of it is derived from `nexus.catalog.events`; checks/events.py reads it back.
"""

from __future__ import annotations

import json
from typing import Any

from ..catalog import events
from .context import RenderContext

PERMISSIONS = "events/broker-permissions.json"
OBJECTS = "events/broker-objects.json"


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render(ctx: RenderContext) -> dict[str, str]:
    cat = ctx.catalog
    if not cat.events:
        return {}
    users = {name: perms.to_nats() for name, perms in events.permissions(cat).items()}
    return {
        PERMISSIONS: _json({"broker": events.broker(cat), "users": users}),
        OBJECTS: _json(events.broker_objects(cat)),
    }
