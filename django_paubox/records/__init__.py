"""The one place that writes Message, Delivery and WebhookEvent rows.

The backends, the webhook view, the management commands and the Celery tasks all call these
functions, so that what a send, a receipt or an event does to the records is decided here once.
Nothing here logs subjects, bodies or attachments. :mod:`.sends` holds the rows of sending
(created before Paubox is called, then sent, failed, requeued, cancelled); :mod:`.dispositions`
applies receipts and webhook events to deliveries.
"""

from .dispositions import (
    DISPOSITION_FIELDS,
    aggregate_status,
    apply_receipt,
    apply_receipts,
    apply_webhook_event,
    refresh_message_status,
)
from .sends import (
    CANCELLED_RAW_STATUS,
    claim_queued,
    create_messages,
    mark_cancelled,
    mark_enqueued,
    mark_failed,
    mark_rescheduled,
    mark_scheduled,
    mark_sent,
    release_stale_claims,
    requeue,
    resume_polling,
    stale_outbox,
    stop_polling,
)

__all__ = [
    "CANCELLED_RAW_STATUS",
    "DISPOSITION_FIELDS",
    "aggregate_status",
    "apply_receipt",
    "apply_receipts",
    "apply_webhook_event",
    "claim_queued",
    "create_messages",
    "mark_cancelled",
    "mark_enqueued",
    "mark_failed",
    "mark_rescheduled",
    "mark_scheduled",
    "mark_sent",
    "refresh_message_status",
    "release_stale_claims",
    "requeue",
    "resume_polling",
    "stale_outbox",
    "stop_polling",
]
