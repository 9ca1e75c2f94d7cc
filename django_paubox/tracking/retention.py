"""Retention: delete old messages, their deliveries and webhook events, in batches.

Webhook payloads carry names and addresses (PII), so they fall under the same retention as the
messages they describe; events for messages this app did not send (Paubox posts the whole
organisation's) are purged by the time they were received. Deleting by primary-key lists, one
short transaction per batch, keeps locks brief on a busy table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from ..models import Delivery, Message, WebhookEvent

logger = logging.getLogger(__name__)

_AGE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``"90d"``, ``"12h"``, ``"2w"`` → a timedelta. A bare number is refused: a purge should
    never guess its unit."""
    match = _AGE.match(text or "")
    if not match:
        raise ValueError(
            f"{text!r} is not an age: use a whole number followed by h, d or w (e.g. 90d)."
        )
    amount, unit = int(match.group(1)), match.group(2).lower()
    age = timedelta(**{_UNITS[unit]: amount})
    if age <= timedelta(0):
        raise ValueError("The age must be greater than zero.")
    return age


@dataclass
class PurgeSummary:
    """What a purge deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    dry_run: bool
    messages: int = 0
    deliveries: int = 0
    webhook_events: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "messages": self.messages,
            "deliveries": self.deliveries,
            "webhook_events": self.webhook_events,
            "batches": self.batches,
        }


def purge(
    older_than: timedelta,
    *,
    dry_run: bool = False,
    batch_size: int = 1000,
    now: datetime | None = None,
    progress: Callable[[PurgeSummary], None] | None = None,
) -> PurgeSummary:
    """Delete messages created before ``now - older_than`` with their deliveries and events,
    and unlinked webhook events received before then; ``dry_run`` only counts.

    ``progress`` is called with the running totals after each batch."""
    if older_than <= timedelta(0):
        raise ValueError("older_than must be greater than zero.")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1.")
    cutoff = (now or timezone.now()) - older_than
    summary = PurgeSummary(cutoff=cutoff, dry_run=dry_run)
    old_messages = Message.objects.filter(created_at__lt=cutoff)
    old_unlinked = WebhookEvent.objects.filter(message__isnull=True, received_at__lt=cutoff)
    if dry_run:
        summary.messages = old_messages.count()
        summary.deliveries = Delivery.objects.filter(message__created_at__lt=cutoff).count()
        summary.webhook_events = WebhookEvent.objects.filter(
            Q(message__created_at__lt=cutoff) | Q(message__isnull=True, received_at__lt=cutoff)
        ).count()
        return summary
    for queryset in (old_messages, old_unlinked):
        while True:
            pks = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not pks:
                break
            with transaction.atomic():
                _, deleted = queryset.model._default_manager.filter(pk__in=pks).delete()
            summary.batches += 1
            summary.messages += deleted.get(Message._meta.label, 0)
            summary.deliveries += deleted.get(Delivery._meta.label, 0)
            summary.webhook_events += deleted.get(WebhookEvent._meta.label, 0)
            if progress is not None:
                progress(summary)
    logger.info(
        "Paubox purge before %s: %d messages, %d deliveries, %d webhook events in %d batches",
        cutoff.isoformat(),
        summary.messages,
        summary.deliveries,
        summary.webhook_events,
        summary.batches,
    )
    return summary
