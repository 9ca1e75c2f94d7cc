"""The receipts schedule: which sent messages are due for a receipt check, and when next.

Per message, from its age since ``sent_at`` (no poll counter is needed, so the schedule survives
restarts and needs no extra column): every minute for the first 5 minutes, every 5 minutes up to
an hour, every 15 minutes up to 6 hours, hourly up to a day, then every 6 hours. Polling stops
once every delivery is final, or when the next check would fall after
``PAUBOX["RECEIPT_MAX_AGE_HOURS"]``. :mod:`~django_paubox.tracking.polling` asks Paubox about
the due messages and sets each one's next check from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone

from ..conf import PauboxSettings, get_settings
from ..models import Delivery, Message
from . import statuses
from .statuses import WEBHOOK_EVENT_NAMES, Status

#: ``(age below which, poll every)``; past the last row, :data:`LATE_INTERVAL` applies.
SCHEDULE: tuple[tuple[timedelta, timedelta], ...] = (
    (timedelta(minutes=5), timedelta(minutes=1)),
    (timedelta(hours=1), timedelta(minutes=5)),
    (timedelta(hours=6), timedelta(minutes=15)),
    (timedelta(hours=24), timedelta(hours=1)),
)
LATE_INTERVAL = timedelta(hours=6)


def final_statuses() -> list[str]:
    """The normalised statuses after which a delivery is not polled any more."""
    return [value for value in Status.values if statuses.is_final(value)]


def awaiting_news(conf: PauboxSettings) -> Q:
    """Deliveries a receipt can still tell us something about.

    Those not final; those made final by a webhook event that no receipt has confirmed; and,
    with ``RECEIPT_POLL_OPENS``, a delivered message's single recipient
    who has not opened it yet: Paubox reports opens only for single-recipient messages, and a
    missed ``opened`` webhook is never sent again, so polling is the only other way to learn
    "when did they open it?".
    """
    q = ~Q(status__in=final_statuses())
    # Final by a webhook event, whose name is still the raw status: one receipt still tells
    # what an event cannot (delivered through the secure portal? the counters) and replaces
    # the event's name with Paubox's own words.
    q |= Q(raw_status__in=sorted(WEBHOOK_EVENT_NAMES))
    if conf.receipt_poll_opens:
        q |= Q(status=Status.DELIVERED, opened_at__isnull=True, message__recipient_count=1)
    return q


def _open_deliveries(conf: PauboxSettings) -> Exists:
    return Exists(Delivery.objects.filter(awaiting_news(conf), message=OuterRef("pk")))


def max_age(conf: PauboxSettings) -> timedelta:
    return timedelta(hours=float(conf.receipt_max_age_hours))


def due_messages(
    now: datetime | None = None,
    *,
    limit: int | None = None,
    include_all: bool = False,
    tracking_ids: Sequence[str] | None = None,
    conf: PauboxSettings | None = None,
) -> QuerySet[Message]:
    """Sent messages whose receipts should be asked for now, most overdue first.

    By default: with a delivery that is not final, ``next_receipt_check_at <= now``, and sent
    less than ``RECEIPT_MAX_AGE_HOURS`` ago. ``include_all`` ignores the schedule (not the age).
    ``tracking_ids`` selects those messages whatever their schedule, age or finality: someone
    asked for them by name (their open counters may still change).
    """
    conf = conf or get_settings()
    now = now or timezone.now()
    qs = Message.objects.filter(state=Message.State.SENT, tracking_id__isnull=False).exclude(
        tracking_id=""
    )
    if tracking_ids:
        qs = qs.filter(tracking_id__in=list(tracking_ids))
    else:
        cutoff = now - max_age(conf)
        qs = qs.filter(_open_deliveries(conf)).filter(
            Q(sent_at__gte=cutoff) | Q(sent_at__isnull=True, created_at__gte=cutoff)
        )
        if not include_all:
            qs = qs.filter(next_receipt_check_at__lte=now)
    qs = qs.order_by(F("next_receipt_check_at").asc(nulls_last=True), "pk")
    if limit is not None:
        qs = qs[:limit]
    return qs


def next_check_at(sent_at: datetime, now: datetime, conf: PauboxSettings) -> datetime | None:
    """When to ask again about a message sent at ``sent_at``; ``None`` when polling stops."""
    age = now - sent_at
    interval = next((every for below, every in SCHEDULE if age < below), LATE_INTERVAL)
    due = now + interval
    if due > sent_at + max_age(conf):
        return None
    return due


def stop_expired(now: datetime | None = None, *, conf: PauboxSettings | None = None) -> int:
    """Clear the schedule of messages past ``RECEIPT_MAX_AGE_HOURS``; returns how many.

    They are never due anyway; clearing shows "no further check" in the admin and keeps the
    schedule index small.
    """
    conf = conf or get_settings()
    cutoff = (now or timezone.now()) - max_age(conf)
    return Message.objects.filter(
        Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff),
        next_receipt_check_at__isnull=False,
    ).update(next_receipt_check_at=None)
