# Yours: nexus created this file once and never touches it again.
"""What puabo-nuki-order-processor does with each message of a channel it consumes:
payment-completed (pubsub).

Delivery is at least once: a message can arrive again after a crash, so make side effects
idempotent by ``delivery.message_id`` (e.g. a unique key). Raise to have it retried with
backoff; after the last attempt it goes to the dead-letter subject
deadletter.payment-completed.puabo-nuki-order-processor."""

import logging

from nexus_runtime.events import Delivery

from ..messages import PaymentCompletedV1

log = logging.getLogger("puabo-nuki-order-processor.events")


async def handle(message: PaymentCompletedV1, delivery: Delivery) -> None:
    log.info("received", extra={"channel": delivery.channel, "message_id": delivery.message_id})
