"""Render area: the platform's events as files. The broker's per-service permissions and the
objects (streams, durable consumers, buckets) it must hold, as JSON the broker's configuration
and provisioning read; and the AsyncAPI 3.0 documents, one per service and one for the platform.

All of it is derived from `nexus.catalog.events`; checks/events.py reads it back.
"""

from __future__ import annotations

from typing import Any

from ..catalog import events, messages
from ..catalog.models import Catalog
from .context import RenderContext
from .text import json_document

PERMISSIONS = "events/broker-permissions.json"
OBJECTS = "events/broker-objects.json"
ASYNCAPI = "docs/asyncapi"  # <service>.json and platform.json
ASYNCAPI_VERSION = "3.0.0"

# Headers every message carries (nexus_runtime.events): JSON Schema of the message's headers
HEADERS = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "The message id: the broker keeps one copy per id."},
        "traceparent": {"type": "string", "description": "W3C trace context of the publishing request."},
        "tracestate": {"type": "string"},
        "x-request-id": {"type": "string", "description": "The request id of the publishing request."},
    },
    "required": ["Nats-Msg-Id"],
}


def render(ctx: RenderContext) -> dict[str, str]:
    cat = ctx.catalog
    if not cat.events:
        return {}
    users = {name: perms.to_nats() for name, perms in events.permissions(cat).items()}
    return {
        PERMISSIONS: json_document({"broker": events.broker(cat), "users": users}),
        OBJECTS: json_document(events.broker_objects(cat)),
    }


def render_docs(ctx: RenderContext) -> dict[str, str]:
    """The AsyncAPI documents, part of the docs (the docs area adds them, so its link checks see
    them): one for the platform, one per service that publishes or consumes."""
    cat = ctx.catalog
    if not cat.events:
        return {}
    out = {f"{ASYNCAPI}/platform.json": json_document(asyncapi(cat, events.edges(cat)))}
    for service, edges in sorted(ctx.event_edges_of.items()):
        out[f"{ASYNCAPI}/{service}.json"] = json_document(asyncapi(cat, edges, service))
    return out


def asyncapi(cat: Catalog, edges: list[dict[str, str]], service: str | None = None) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of one service's events (what it sends and receives: its
    ``edges``, RenderContext.event_edges_of), or of the whole platform's (every channel, one
    operation per publish/subscribe edge: every edge, catalog.events.edges)."""
    used = sorted({e["channel"] for e in edges})
    broker = events.broker(cat) or "broker"
    title = f"{service} events" if service else f"{cat.platform.name} events"
    summary = (
        f"What {service} publishes and consumes on the platform's broker."
        if service
        else "Every event channel of the platform: who publishes and who consumes."
    )
    doc: dict[str, Any] = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": title, "version": cat.platform.version, "description": summary},
        "defaultContentType": "application/json",
        "servers": {
            broker: {
                "host": f"{broker}.{cat.platform.namespace}:{cat.infrastructure[broker].port}"
                if broker in cat.infrastructure
                else broker,
                "protocol": "nats",
                "description": "NATS with JetStream; each service connects as its own user (docs/events.md).",
            }
        },
        "channels": {},
        "operations": {},
        "components": {"messages": {}, "schemas": {}},
    }
    for name in used:
        ch = cat.events[name]
        model = messages.model_class(name, ch.message.version)
        doc["channels"][name] = {
            "address": messages.subject(name, ch.message.version),
            "title": name,
            "description": f"{ch.kind}: {ch.description}",
            "messages": {model: {"$ref": f"#/components/messages/{model}"}},
            "x-nexus-kind": ch.kind,
        }
        doc["components"]["messages"][model] = {
            "name": model,
            "title": f"{name} v{ch.message.version}",
            "contentType": "application/json",
            "headers": HEADERS,
            "payload": {"$ref": f"#/components/schemas/{model}"},
        }
        doc["components"]["schemas"][model] = _schema(cat, name)
    for e in edges:
        ch = cat.events[e["channel"]]
        model = messages.model_class(e["channel"], ch.message.version)
        action = "send" if e["role"] == "publishes" else "receive"
        key = f"{e['service']}_{action}_{e['channel']}" if service is None else f"{action}_{e['channel']}"
        operation: dict[str, Any] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{e['channel']}"},
            "messages": [{"$ref": f"#/channels/{e['channel']}/messages/{model}"}],
            "summary": f"{e['service']} {e['role']} {e['channel']} ({e['kind']})",
        }
        if action == "receive":
            # the instances of a service share one durable consumer: a queue group, in NATS terms
            operation["bindings"] = {"nats": {"queue": messages.durable(e["service"]), "bindingVersion": "0.1.0"}}
        doc["operations"][key] = operation
    return doc


def _schema(cat: Catalog, channel: str) -> dict[str, Any]:
    fields = cat.events[channel].message.fields
    parsed = {name: messages.field_type(text) for name, text in fields.items()}
    return {
        "type": "object",
        "properties": {name: t.json_schema for name, t in parsed.items()},
        "required": [name for name, t in parsed.items() if not t.optional],
        "additionalProperties": False,
    }
