"""Event messages and their names on the broker: one source for each.

The field-type grammar of a channel's message (what the catalog may say, and what it becomes
in Python and in JSON Schema), and every name an event channel has on NATS JetStream: its
subject, its stream, each subscriber's durable consumer, the dead-letter subjects, a service's
inbox prefix and its bucket of handled message ids. The runtime receives these names in each
service's generated spec; it never derives them itself.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any

# name -> (Python annotation, JSON Schema)
SCALARS: dict[str, tuple[str, dict[str, Any]]] = {
    "string": ("str", {"type": "string"}),
    "integer": ("int", {"type": "integer"}),
    "number": ("float", {"type": "number"}),
    "boolean": ("bool", {"type": "boolean"}),
    "datetime": ("datetime.datetime", {"type": "string", "format": "date-time"}),
    "uuid": ("uuid.UUID", {"type": "string", "format": "uuid"}),
}
_LIST = re.compile(r"^list\[(.*)\]$")
GRAMMAR = f"{', '.join(SCALARS)}; list[T] of one of those; a trailing '?' makes a field optional (e.g. 'string?')"


@dataclass(frozen=True)
class FieldType:
    """A parsed field type: the scalar, whether it is a list, whether it may be absent."""

    scalar: str
    many: bool = False
    optional: bool = False

    @property
    def python(self) -> str:
        inner = SCALARS[self.scalar][0]
        annotation = f"list[{inner}]" if self.many else inner
        return f"{annotation} | None" if self.optional else annotation

    @property
    def json_schema(self) -> dict[str, Any]:
        inner = dict(SCALARS[self.scalar][1])
        return {"type": "array", "items": inner} if self.many else inner


def field_type(text: str) -> FieldType:
    """Parse a catalog field type; ValueError names the grammar when it does not parse."""
    body = text.strip()
    optional = body.endswith("?")
    body = body.removesuffix("?").strip()
    match = _LIST.match(body)
    inner = match.group(1).strip() if match else body
    if inner not in SCALARS:
        raise ValueError(f"field type '{text}' does not parse; write {GRAMMAR}")
    return FieldType(inner, many=bool(match), optional=optional)


# attributes pydantic's BaseModel already has: a field with one of these names would shadow it
_MODEL_ATTRIBUTES = frozenset({"copy", "dict", "json", "schema", "construct", "validate", "fields"})


def field_problem(name: str) -> str | None:
    """Why ``name`` cannot be a field of a generated message model; None when it can."""
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"field '{name}' is a Python keyword, and fields become attributes; rename it, e.g. '{name}_'"
    if name.startswith("model_") or name in _MODEL_ATTRIBUTES:
        return (
            f"field '{name}' would shadow an attribute of the generated pydantic model; rename it, e.g. '{name}_value'"
        )
    return None


# -- names on the broker ----------------------------------------------------------------------

SUBJECT_PREFIX = "events"
DEAD_PREFIX = "deadletter"
DEAD_STREAM = "DEADLETTER"


def _upper(name: str) -> str:
    return name.upper().replace("-", "_")


def subject(channel: str, version: int) -> str:
    """The subject a channel's messages of one schema version are published on."""
    return f"{SUBJECT_PREFIX}.{channel}.v{version}"


def stream(channel: str) -> str:
    """The JetStream stream holding a channel (every version of its message)."""
    return f"EVENTS_{_upper(channel)}"


def stream_subjects(channel: str) -> str:
    return f"{SUBJECT_PREFIX}.{channel}.>"


def durable(service: str) -> str:
    """The durable consumer of ``service`` on a channel's stream: shared by all its instances, so
    they compete for messages (a queue inside the service), while each service has its own."""
    return _upper(service)


def dead_subject(channel: str, service: str) -> str:
    """Where ``service`` puts a message of ``channel`` that it failed to handle after every retry."""
    return f"{DEAD_PREFIX}.{channel}.{service}"


def inbox(service: str) -> str:
    """The inbox prefix of a service's connection: replies to its requests (publish acks,
    fetches) arrive only there, and only it may subscribe to it."""
    return f"_INBOX_{_upper(service)}"


def handled_bucket(service: str) -> str:
    """The key-value bucket of message ids a service has handled (consumer-side idempotency)."""
    return f"HANDLED_{_upper(service)}"


def model_class(channel: str, version: int) -> str:
    """The generated pydantic class of a channel's message, e.g. PaymentCompletedV1."""
    return "".join(part.capitalize() for part in channel.split("-")) + f"V{version}"


def snake(channel: str) -> str:
    """A channel's name in Python (after a prefix: `publish_<snake>`, `on_<snake>`)."""
    return channel.replace("-", "_")
