# Yours: nexus created this file once and never touches it again.
"""What invoice-gen does with each message of a channel it consumes:
invoice-requested (queue).

Delivery is at least once: a message can arrive again after a crash, so make side effects
idempotent by ``delivery.message_id`` (e.g. a unique key). Raise to have it retried with
backoff; after the last attempt it goes to the dead-letter subject
deadletter.invoice-requested.invoice-gen."""

import logging

from nexus_runtime.events import Delivery

from ..messages import InvoiceRequestedV1

log = logging.getLogger("invoice-gen.events")


async def handle(message: InvoiceRequestedV1, delivery: Delivery) -> None:
    log.info("received", extra={"channel": delivery.channel, "message_id": delivery.message_id})
