"""The one place that writes Message, Delivery and WebhookEvent rows.

The backends, the webhook view, the management commands and the Celery tasks all call these
functions, so that what a send, a receipt or an event does to the records is decided here once.
Nothing here logs subjects, bodies or attachments. :mod:`.sends` holds the rows of sending
(created before Paubox is called, then sent, failed, requeued, cancelled); :mod:`.dispositions`
applies receipts to deliveries, and :mod:`.events` webhook events; :mod:`.suppressions` keeps
the suppression list.
"""

from .dispositions import (
    DISPOSITION_FIELDS,
    aggregate_status,
    apply_receipt,
    apply_receipts,
    refresh_message_status,
)
from .events import apply_webhook_event
from .sends import (
    CANCELLED_RAW_STATUS,
    claim_queued,
    clashing_tracking_ids,
    create_messages,
    create_messages_checking_suppression,
    mark_cancelled,
    mark_enqueued,
    mark_failed,
    mark_rescheduled,
    mark_scheduled,
    mark_sent,
    release_stale_claims,
    renew_claims,
    requeue,
    resume_polling,
    save_next_checks,
    stale_outbox,
    stop_polling,
)
from .suppressions import (
    SUPPRESSED_RAW_STATUS,
    mark_suppressed,
    suppress_hard_bounces,
    suppressed_addresses,
)

__all__ = [
    "CANCELLED_RAW_STATUS",
    "DISPOSITION_FIELDS",
    "SUPPRESSED_RAW_STATUS",
    "aggregate_status",
    "apply_receipt",
    "apply_receipts",
    "apply_webhook_event",
    "claim_queued",
    "clashing_tracking_ids",
    "create_messages",
    "create_messages_checking_suppression",
    "mark_cancelled",
    "mark_enqueued",
    "mark_failed",
    "mark_rescheduled",
    "mark_scheduled",
    "mark_sent",
    "mark_suppressed",
    "refresh_message_status",
    "release_stale_claims",
    "renew_claims",
    "requeue",
    "resume_polling",
    "save_next_checks",
    "stale_outbox",
    "stop_polling",
    "suppress_hard_bounces",
    "suppressed_addresses",
]
