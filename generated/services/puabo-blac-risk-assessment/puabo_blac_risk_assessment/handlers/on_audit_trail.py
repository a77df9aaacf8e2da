# Yours: nexus created this file once and never touches it again.
"""What puabo-blac-risk-assessment does with each message of a channel it consumes:
audit-trail (stream).

Delivery is at least once: a message can arrive again after a crash, so make side effects
idempotent by ``delivery.message_id`` (e.g. a unique key). Raise to have it retried with
backoff; after the last attempt it goes to the dead-letter subject
deadletter.audit-trail.puabo-blac-risk-assessment."""

import logging

from nexus_runtime.events import Delivery

from ..messages import AuditTrailV1

log = logging.getLogger("puabo-blac-risk-assessment.events")


async def handle(message: AuditTrailV1, delivery: Delivery) -> None:
    log.info("received", extra={"channel": delivery.channel, "message_id": delivery.message_id})
