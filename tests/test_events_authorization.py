"""Broker authorization = the catalog's publish/subscribe edges: the check that holds the rendered
permissions to the edges, and a real nats-server that enforces them on the shipped catalog."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import broker
import pytest
from conftest import CATALOG, ROOT

from nexus.catalog import events as ev
from nexus.catalog import load_catalog
from nexus.catalog import messages as names
from nexus.checks import events as checks
from nexus.render import RenderContext, render
from nexus.render.events import PERMISSIONS

nats = pytest.importorskip("nats")


@pytest.fixture(scope="module")
def rendered() -> tuple[RenderContext, dict[str, str]]:
    loaded = load_catalog(CATALOG)
    ctx = RenderContext(loaded.catalog, loaded.plan)
    return ctx, render(ctx)


def _edit(files: dict[str, str], service: str, block: str, value: Any) -> dict[str, str]:
    data = json.loads(files[PERMISSIONS])
    data["users"][service][block] = value
    return {**files, PERMISSIONS: json.dumps(data)}


def test_rendered_permissions_equal_the_edges(rendered: tuple[RenderContext, dict[str, str]]) -> None:
    ctx, files = rendered
    assert checks.run(ctx, files) == []
    users = json.loads(files[PERMISSIONS])["users"]
    assert users["invoice-gen"]["publish"]["allow"][:2] == [
        "$JS.ACK.EVENTS_INVOICE_REQUESTED.INVOICE_GEN.>",
        "$JS.API.CONSUMER.INFO.EVENTS_INVOICE_REQUESTED.INVOICE_GEN",
    ]
    assert users["key-service"] == {"publish": {"deny": [">"]}, "subscribe": {"deny": [">"]}}


@pytest.mark.parametrize(
    ("service", "block", "value", "expected"),
    [
        (  # a subject beyond its edges
            "invoice-gen",
            "publish",
            {"allow": ["events.payment-completed.v1", "_INBOX_INVOICE_GEN.>"]},
            "invoice-gen: may publish to events.payment-completed.v1, but the catalog does not list it as a publisher",
        ),
        (  # another service's consumer
            "invoice-gen",
            "publish",
            {"allow": ["$JS.API.CONSUMER.MSG.NEXT.EVENTS_PAYMENT_COMPLETED.PUABO_NEXUS"]},
            "invoice-gen: may publish to $JS.API.CONSUMER.MSG.NEXT.EVENTS_PAYMENT_COMPLETED.PUABO_NEXUS, but "
            "it consumes no channel",
        ),
        (  # an edge left out
            "billing-service",
            "publish",
            {"allow": ["events.audit-trail.v1", "events.payment-completed.v1"]},
            "billing-service: publishes on invoice-requested in the catalog, but may not publish its subject",
        ),
        (  # NATS reads an empty allow list as "anything"
            "ledger-mgr",
            "publish",
            {"allow": []},
            "ledger-mgr: permissions must be a non-empty allow list or deny '>' each",
        ),
        (  # reading everyone's replies
            "auth-service",
            "subscribe",
            {"allow": ["_INBOX_AUTH_SERVICE.>", "_INBOX_BILLING_SERVICE.>"]},
            "auth-service: may subscribe to ['_INBOX_AUTH_SERVICE.>', '_INBOX_BILLING_SERVICE.>'], expected "
            "only its inbox",
        ),
        (  # a consumer without its acks
            "content-management",
            "publish",
            {
                "allow": [
                    "$JS.API.CONSUMER.INFO.EVENTS_UPLOAD_RECEIVED.CONTENT_MANAGEMENT",
                    "$JS.API.CONSUMER.MSG.NEXT.EVENTS_UPLOAD_RECEIVED.CONTENT_MANAGEMENT",
                    "deadletter.upload-received.content-management",
                ]
            },
            "content-management: consumes upload-received in the catalog, but lacks ack",
        ),
    ],
)
def test_the_check_names_a_permission_that_is_not_an_edge(
    rendered: tuple[RenderContext, dict[str, str]], service: str, block: str, value: Any, expected: str
) -> None:
    ctx, files = rendered
    failures = checks.run(ctx, _edit(files, service, block, value))
    assert any(expected in f for f in failures), failures


# -- the real broker -----------------------------------------------------------------------------


def _users(cat: Any) -> dict[str, dict[str, Any]]:
    return {name: p.to_nats() for name, p in ev.permissions(cat).items()}


async def _connect(server: broker.Server, user: str, errors: list[str] | None = None) -> Any:
    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(str(exc))

    password = broker.ADMIN[1] if user == broker.ADMIN[0] else f"{user}-secret"
    return await nats.connect(
        server.url,
        user=user,
        password=password,
        inbox_prefix=names.inbox(user) if user != broker.ADMIN[0] else "_INBOX",
        error_cb=on_error,
        allow_reconnect=False,
    )


def _generated_events(service: str) -> Any:
    """The generated events.py of a shipped service, imported as the service would."""
    for folder in (ROOT / "generated" / "runtime", ROOT / "generated" / "services" / service):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    import importlib

    return importlib.import_module(f"{names.snake(service)}.events")


def test_the_broker_enforces_each_services_edges(tmp_path: Path) -> None:
    cat = load_catalog(CATALOG).catalog

    async def main() -> None:
        with broker.running(tmp_path / "nats", _users(cat)) as server:
            admin = await _connect(server, broker.ADMIN[0])
            js = admin.jetstream()
            rt = _generated_events("invoice-gen").EVENTS.__class__.__module__
            provision = sys.modules[rt].provision
            await provision(js, ev.broker_objects(cat), sys.modules[rt].Provisioning(ack_wait_seconds=2))

            # billing-service publishes through its generated, typed publisher, as its own user
            billing_events = _generated_events("billing-service")
            messages = sys.modules["billing_service.messages"]
            publisher = sys.modules[rt].Broker(billing_events.EVENTS)
            await publisher.start(server.url, "billing-service", "billing-service-secret")
            request = messages.InvoiceRequestedV1(
                payment_id="6f1c1b1e-6c44-4f3e-9a57-0b1f6c7f1f10",
                account_id="acct-1",
                amount_cents=1250,
                currency="EUR",
                lines=["ticket"],
            )
            await billing_events.Publisher(publisher).invoice_requested(request, message_id="pay-9")

            # invoice-gen consumes it through its generated wiring and team-owned handler
            records: list[logging.LogRecord] = []
            handler = logging.Handler()
            handler.emit = records.append  # type: ignore[method-assign]
            logging.getLogger("invoice-gen.events").addHandler(handler)
            logging.getLogger("invoice-gen.events").setLevel(logging.INFO)
            consumer = sys.modules[rt].Broker(_generated_events("invoice-gen").EVENTS)
            await consumer.start(server.url, "invoice-gen", "invoice-gen-secret")
            for _ in range(200):
                if any(getattr(r, "message_id", None) == "pay-9" for r in records):
                    break
                await asyncio.sleep(0.05)
            await consumer.stop()
            await publisher.stop()
            assert any(getattr(r, "message_id", None) == "pay-9" for r in records)

            # what the edges do not allow, the broker refuses
            errors: list[str] = []
            invoice = await _connect(server, "invoice-gen", errors)
            before = (await js.stream_info(names.stream("payment-completed"))).state.messages
            await invoice.publish(names.subject("payment-completed", 1), b"{}")  # a forged payment
            await invoice.subscribe(names.subject("payment-completed", 1))  # eavesdropping
            await invoice.subscribe(f"{names.inbox('billing-service')}.>")  # another's replies
            stolen = await invoice.jetstream().pull_subscribe_bind(
                names.durable("puabo-nexus"),
                names.stream("payment-completed"),
                inbox_prefix=f"{names.inbox('invoice-gen')}.".encode(),
            )
            with pytest.raises(nats.errors.TimeoutError):  # another service's consumer: its fetch is refused
                await stolen.fetch(1, timeout=1)
            await invoice.flush()
            await asyncio.sleep(0.3)
            after = (await js.stream_info(names.stream("payment-completed"))).state.messages
            keyless = await _connect(server, "key-service", errors)  # no edges: nothing at all
            await keyless.publish(names.subject("audit-trail", 1), b"{}")
            await keyless.flush()
            await asyncio.sleep(0.3)
            audit = (await js.stream_info(names.stream("audit-trail"))).state.messages
            for nc in (invoice, keyless, admin):
                await nc.close()
            assert after == before and audit == 0
            text = " | ".join(errors).lower()  # nats-py lower-cases the server's -ERR
            assert 'permissions violation for publish to "events.payment-completed.v1"' in text
            assert 'permissions violation for subscription to "events.payment-completed.v1"' in text
            assert 'permissions violation for subscription to "_inbox_billing_service.>"' in text
            assert 'permissions violation for publish to "events.audit-trail.v1"' in text
            assert (
                'permissions violation for publish to "$js.api.consumer.msg.next.events_payment_completed.puabo_nexus"'
                in text
            )

    asyncio.run(main())
