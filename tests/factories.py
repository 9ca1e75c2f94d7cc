"""Test data, one factory per kind: EmailMessages to send, and Message rows as a send leaves
them (through records.py) or as other tests want them (written directly)."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Sequence
from typing import Any

from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils import timezone

from django_paubox import records
from django_paubox.conf import get_settings
from django_paubox.models import Delivery, Message
from django_paubox.tracking.statuses import Status

SENDER = "sender@clinic.example"
_ids = itertools.count(1)


def email(body: str = "Hello", **kwargs: Any) -> EmailMultiAlternatives:
    """One message to one patient; any EmailMessage argument can be given."""
    kwargs.setdefault("subject", "Subject")
    kwargs.setdefault("from_email", SENDER)
    kwargs.setdefault("to", ["patient@example.com"])
    return EmailMultiAlternatives(body=body, **kwargs)


def emails(
    n: int = 1,
    *,
    subject: str = "Reminder {i}",
    body: str = "Body {i}",
    from_email: str = "Clinic <reminders@clinic.example>",
    to: Sequence[str] = ("patient{i}@example.com",),
    cc: Sequence[str] | None = None,
    bcc: Sequence[str] | None = None,
) -> list[EmailMessage]:
    """``n`` messages; ``{i}`` in subject, body and ``to`` is each one's number."""
    return [
        EmailMessage(
            subject.format(i=i),
            body.format(i=i),
            from_email,
            [address.format(i=i) for address in to],
            cc=cc,
            bcc=bcc,
        )
        for i in range(n)
    ]


def sent_message(
    recipients: list[str] | tuple[str, ...] = ("patient@example.com",),
    tracking_id: str | None = "track-1",
) -> Message:
    """A message as the backend leaves it: rows created, then marked sent (or not)."""
    conf = get_settings()
    [message] = records.create_messages(
        [("Subject", "clinic@example.org", [("to", r) for r in recipients], {})], conf
    )
    if tracking_id:
        records.mark_sent([(message, tracking_id)], conf)
    message.refresh_from_db()
    return message


def stored_message(
    *,
    status: str = Status.DELIVERED,
    state: str = Message.State.SENT,
    recipients: Sequence[str] = ("patient@clinic.example",),
    delivery_statuses: Sequence[str] | None = None,
    created_at: datetime.datetime | None = None,
    sent_at: datetime.datetime | None = None,
    subject: str = "Your appointment",
    from_email: str = "care@hospital.example",
    payload: Any = None,
    opened_at: datetime.datetime | None = None,
    tracking_id: str | None = "auto",
) -> Message:
    """One message and its deliveries, written directly (records.py is tested elsewhere)."""
    n = next(_ids)
    created = created_at or timezone.now()
    message = Message.objects.create(
        tracking_id=f"trk-{n:05d}-{status}" if tracking_id == "auto" else tracking_id,
        state=state,
        status=status,
        subject=subject,
        from_email=from_email,
        sender_domain=from_email.rpartition("@")[2],
        recipient_count=len(recipients),
        created_at=created,
        sent_at=sent_at if sent_at is not None else (created if state == "sent" else None),
        payload=payload,
    )
    statuses = delivery_statuses or [status] * len(recipients)
    Delivery.objects.bulk_create(
        Delivery(
            message=message,
            recipient=address,
            status=delivery_status,
            raw_status={"delivered": "delivered"}.get(delivery_status, delivery_status),
            delivered_at=created if delivery_status == Status.DELIVERED else None,
            opened_at=opened_at,
        )
        for address, delivery_status in zip(recipients, statuses, strict=True)
    )
    return message
