"""Events on NATS JetStream: typed publishing and at-least-once consuming, for every service.

A service's generated ``events.py`` declares what it publishes and consumes (an ``EventsSpec``:
subjects, streams and durable consumers named by the catalog); this module does the rest, on
``nats-py`` directly (a thin layer: FastStream's per-message path was measured at 1.2-40x
slower than the client it wraps). Delivery, as docs/events.md states it:

- at least once: a message is acknowledged only after its handler returned; a consumer killed
  mid-message gets it again once the broker's ack wait has passed;
- a message id per message (``Nats-Msg-Id``): the broker drops a second publish of the same id
  within its duplicate window, and the consumer records each id it handled in its bucket, so a
  redelivered message whose handler already returned is acknowledged without running it again;
- a failing handler is retried with growing delays; after the last attempt (or at once, for a
  message that does not fit the channel's schema) the message goes to the dead-letter subject
  with the error, and is acknowledged;
- the request id and the W3C trace context travel in the message headers.

The streams, consumers and buckets are created by ``provision``, as the broker's administrator:
by `nexus up`, and in a cluster by the NATS pod's provision container (nexus_runtime.provision);
a service only binds to what exists, with a broker user allowed nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as FetchTimeout
from nats.js import JetStreamContext, api
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, ValidationError

from . import tracing
from .settings import ServiceSettings

MSG_ID = "Nats-Msg-Id"  # JetStream's own header: the broker deduplicates publishes on it
REQUEST_ID = "x-request-id"
TRACE_HEADERS = ("traceparent", "tracestate")
DEAD_ERROR = "Nexus-Dead-Error"  # why a message was given up on
DEAD_ATTEMPTS = "Nexus-Dead-Attempts"
# `nexus verify` publishes probes: delivered, checked against the schema and acknowledged like
# any message, but never handed to the team's handler (verify must not fake a payment)
PROBE = "Nexus-Probe"
# a handler still running after this long tells the broker so (well inside its ack wait)
HEARTBEAT_SECONDS = 5.0

log = logging.getLogger("nexus.events")


class Message(BaseModel):
    """Base of every generated message model: strict about unknown fields, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Delivery:
    """What a handler knows about the message it handles besides its body."""

    channel: str
    message_id: str  # the same for every delivery of one message: key side effects on it
    attempt: int  # 1 for the first delivery
    request_id: str | None
    traceparent: str | None
    headers: Mapping[str, str]


Handler = Callable[[Any, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Publication(Generic[M]):
    channel: str
    subject: str
    model: type[M]


@dataclass(frozen=True)
class Subscription:
    channel: str
    stream: str
    durable: str
    dead_subject: str
    model: type[Message]
    handler: Handler


@dataclass(frozen=True)
class EventsSpec:
    """A service's events, as the catalog names them (generated into its events.py)."""

    inbox: str
    handled_bucket: str
    publishes: tuple[Publication[Any], ...] = ()
    subscribes: tuple[Subscription, ...] = ()


_SETTINGS = ServiceSettings.model_fields  # a Delivering's defaults are the settings' own


@dataclass(frozen=True)
class Delivering:
    """How hard a consumer tries (the service's settings)."""

    max_attempts: int = _SETTINGS["event_max_attempts"].default
    backoff_seconds: Sequence[float] = _SETTINGS["event_backoff_seconds"].default  # the last repeats
    batch: int = _SETTINGS["event_batch"].default
    fetch_wait_seconds: float = 1.0

    def delay(self, attempt: int) -> float:
        return self.backoff_seconds[min(attempt, len(self.backoff_seconds)) - 1] if self.backoff_seconds else 0.0


def _headers(message_id: str) -> dict[str, str]:
    headers = {MSG_ID: message_id}
    trace = tracing.current.get()
    if trace is not None:
        headers.update(trace.outgoing())
    return headers


class Broker:
    """One connection to the broker for one service: its publishers and its consumers."""

    def __init__(self, spec: EventsSpec, delivering: Delivering | None = None) -> None:
        self.spec = spec
        self.delivering = delivering or Delivering()
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._handled: KeyValue | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self, url: str, user: str | None = None, password: str | None = None) -> None:
        """Connect, bind every subscription to its durable consumer and start consuming."""
        self._nc = await nats.connect(
            url,
            user=user,
            password=password,
            inbox_prefix=self.spec.inbox,
            name=self.spec.inbox,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
        )
        self._js = self._nc.jetstream()
        if self.spec.subscribes:
            self._handled = await self._js.key_value(self.spec.handled_bucket)
        for sub in self.spec.subscribes:
            # the deliver subject is the prefix and a random token, with no dot of its own
            prefix = f"{self.spec.inbox}.".encode()
            pull = await self._js.pull_subscribe_bind(sub.durable, sub.stream, inbox_prefix=prefix)
            self._tasks.append(asyncio.create_task(self._consume(sub, pull), name=f"consume {sub.channel}"))

    async def stop(self) -> None:
        """Finish the messages in hand, then close (unacknowledged ones are redelivered later)."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._nc is not None and not self._nc.is_closed:
            # flush the acks and marks already written, then close; not drain(), which waits up
            # to its 30 s timeout for pull subscriptions whose fetch was cut short
            await self._nc.flush()
            await self._nc.close()

    async def publish(self, publication: Publication[M], message: M, *, message_id: str | None = None) -> str:
        """Publish ``message`` and wait for the broker to store it; returns its message id.

        Pass the id of what the message is about (a payment id) when retrying a publish, so the
        broker keeps one copy; without one, each call is a new message."""
        if self._js is None:
            raise RuntimeError("events are off: the broker is not connected (is BROKER_SERVERS set?)")
        if not isinstance(message, publication.model):
            raise TypeError(f"{publication.channel} carries {publication.model.__name__}, not {type(message).__name__}")
        message_id = message_id or secrets.token_hex(16)
        await self._js.publish(publication.subject, message.model_dump_json().encode(), headers=_headers(message_id))
        return message_id

    # -- consuming -------------------------------------------------------------------------------

    async def _consume(self, sub: Subscription, pull: JetStreamContext.PullSubscription) -> None:
        while not self._stopping.is_set():
            try:
                batch = await pull.fetch(self.delivering.batch, timeout=self.delivering.fetch_wait_seconds)
            except FetchTimeout:
                continue
            except Exception as exc:  # the broker restarting: nats-py reconnects, we wait and ask again
                log.warning("fetch failed", extra={"channel": sub.channel, "error": repr(exc)})
                await asyncio.sleep(self.delivering.fetch_wait_seconds)
                continue
            for msg in batch:
                await self._deliver(sub, msg)

    async def _deliver(self, sub: Subscription, msg: Msg) -> None:
        headers = dict(msg.headers or {})
        meta = msg.metadata
        message_id = headers.get(MSG_ID) or f"{meta.stream}:{meta.sequence.stream}"
        attempt = meta.num_delivered
        # a redelivery may be of a message whose handler already returned (its ack was lost, or
        # the consumer died just after): the bucket says so
        if attempt > 1 and await self._was_handled(message_id):
            await msg.ack()
            return
        try:
            body = sub.model.model_validate_json(msg.data)
        except ValidationError as exc:  # it will never fit: no retry
            await self._dead(sub, msg, f"does not fit {sub.model.__name__}: {exc.error_count()} error(s)", attempt)
            return
        if PROBE in headers:
            await msg.ack()
            return
        delivery = Delivery(
            sub.channel, message_id, attempt, headers.get(REQUEST_ID), headers.get("traceparent"), headers
        )
        token = tracing.current.set(_trace_of(headers))
        try:
            await self._run(sub, msg, body, delivery)
        except asyncio.CancelledError:
            raise  # stopping: the message stays unacknowledged and is redelivered
        except Exception as exc:
            if attempt >= self.delivering.max_attempts:
                await self._dead(sub, msg, repr(exc)[:512], attempt)
            else:
                log.warning("handler failed, retrying", extra={"channel": sub.channel, "attempt": attempt})
                await msg.nak(delay=self.delivering.delay(attempt))
            return
        finally:
            tracing.current.reset(token)
        # record before acknowledging: a crash in between redelivers it, and the record skips it
        await self._mark_handled(message_id)
        await msg.ack()

    async def _run(self, sub: Subscription, msg: Msg, body: Message, delivery: Delivery) -> None:
        """The handler, with "still working" sent to the broker while it runs, so a slow handler
        is not mistaken for a dead one and its message handed to another instance. A timer, not
        a task per message: most handlers finish long before the first beat."""
        loop = asyncio.get_running_loop()
        beats: set[asyncio.Task[None]] = set()
        timer: list[asyncio.TimerHandle] = []

        def beat() -> None:
            task = loop.create_task(msg.in_progress())
            beats.add(task)
            task.add_done_callback(beats.discard)
            timer[0] = loop.call_later(HEARTBEAT_SECONDS, beat)

        timer.append(loop.call_later(HEARTBEAT_SECONDS, beat))
        try:
            await sub.handler(body, delivery)
        finally:
            timer[0].cancel()

    async def _was_handled(self, message_id: str) -> bool:
        assert self._handled is not None
        try:
            await self._handled.get(_key(message_id))
        except (KeyNotFoundError, NotFoundError):
            return False
        return True

    async def _mark_handled(self, message_id: str) -> None:
        # a plain publish into the bucket's subject, not a KV put that waits for the broker's
        # answer: one round trip per message would halve a consumer's throughput. The ack that
        # follows travels behind it on the same connection, so the broker sees the mark first.
        assert self._nc is not None
        await self._nc.publish(f"$KV.{self.spec.handled_bucket}.{_key(message_id)}", b"")

    async def _dead(self, sub: Subscription, msg: Msg, error: str, attempt: int) -> None:
        assert self._js is not None
        headers = {**(msg.headers or {}), DEAD_ERROR: error, DEAD_ATTEMPTS: str(attempt)}
        await self._js.publish(sub.dead_subject, msg.data, headers=headers)
        log.error("dead-lettered", extra={"channel": sub.channel, "attempt": attempt, "error": error})
        await msg.ack()


_KEY = re.compile(r"[-_a-zA-Z0-9][-_=a-zA-Z0-9]{0,127}")


def _key(message_id: str) -> str:
    """A bucket key for a message id: the id itself when it is a plain token, else '=' and its
    hex (keys are [-/_=.a-zA-Z0-9]+, and message ids are whatever a publisher chose)."""
    return message_id if _KEY.fullmatch(message_id) else "=" + message_id.encode().hex()


def _trace_of(headers: Mapping[str, str]) -> tracing.Trace:
    """The trace a handler runs in: the publisher's, as a new span."""
    parent = tracing.parent(headers.get("traceparent"))
    trace_id, flags = parent or (secrets.token_hex(16), "01")
    return tracing.Trace(tracing.request_id(headers.get(REQUEST_ID)), trace_id, secrets.token_hex(8), flags)


# -- the broker's objects (administrator only) -------------------------------------------------


@dataclass(frozen=True)
class Provisioning:
    """Limits of what `provision` creates."""

    ack_wait_seconds: float = 30.0
    duplicate_window_seconds: float = 3600.0
    handled_ttl_seconds: float = 7 * 24 * 3600.0


_RETENTION = {
    "queue": api.RetentionPolicy.WORK_QUEUE,
    "pubsub": api.RetentionPolicy.INTEREST,
    "stream": api.RetentionPolicy.LIMITS,
}


async def provision(js: JetStreamContext, objects: Mapping[str, Any], limits: Provisioning | None = None) -> None:
    """Create (or bring up to date) every stream, durable consumer and bucket the catalog's
    events need (`nexus.catalog.events.broker_objects`). Idempotent."""
    limits = limits or Provisioning()
    for ch in objects["channels"]:
        await _stream(
            js,
            api.StreamConfig(
                name=ch["stream"],
                subjects=list(ch["subjects"]),
                retention=_RETENTION[ch["kind"]],
                storage=api.StorageType.FILE,
                duplicate_window=limits.duplicate_window_seconds,
            ),
        )
        for durable in ch["durables"]:
            await js.add_consumer(
                ch["stream"],
                api.ConsumerConfig(
                    durable_name=durable,
                    ack_policy=api.AckPolicy.EXPLICIT,
                    deliver_policy=api.DeliverPolicy.ALL,
                    ack_wait=limits.ack_wait_seconds,
                    max_deliver=-1,  # the runtime counts attempts and dead-letters; the broker never drops
                    max_ack_pending=10_000,
                ),
            )
    dead = objects["dead_letter"]
    await _stream(
        js, api.StreamConfig(name=dead["stream"], subjects=list(dead["subjects"]), storage=api.StorageType.FILE)
    )
    for bucket in objects["buckets"]:
        await js.create_key_value(api.KeyValueConfig(bucket=bucket, ttl=limits.handled_ttl_seconds, history=1))


async def _stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)
