"""The one place that writes Message, Delivery and WebhookEvent rows.

The backends, the webhook view, the management commands and the Celery tasks all call these
functions, so that what a send, a receipt or an event does to the records is decided here once.
Nothing here logs subjects, bodies or attachments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from .conf import PauboxSettings
from .models import Delivery, Message
from .statuses import Status

# --- Sending --------------------------------------------------------------------------------


def _sender_domain(from_email: str) -> str:
    _, _, domain = from_email.rpartition("@")
    return domain.strip(" >").lower()


def create_messages(
    prepared: Sequence[tuple[str, str, Sequence[tuple[str, str]], dict[str, Any]]],
    conf: PauboxSettings,
    *,
    state: str = Message.State.SENDING,
    keep_payload: bool = False,
) -> list[Message]:
    """Write one Message and its Delivery rows per prepared message, before Paubox is called.

    ``prepared`` holds ``(subject, from_email, recipients, payload)`` where ``recipients`` is
    ``[(kind, address), ...]``. Two bulk inserts however many messages there are.
    ``keep_payload`` stores the Paubox payload (PHI) on the row: the Celery outbox needs it
    until the send; ``STORE_CONTENT`` keeps it afterwards.
    """
    now = timezone.now()
    messages = [
        Message(
            state=state,
            status=Status.QUEUED,
            subject=subject if conf.store_subject else "",
            from_email=from_email,
            sender_domain=_sender_domain(from_email),
            recipient_count=len(recipients),
            created_at=now,
            payload=payload if (keep_payload or conf.store_content) else None,
        )
        for subject, from_email, recipients, payload in prepared
    ]
    with transaction.atomic():
        Message.objects.bulk_create(messages)
        Delivery.objects.bulk_create(
            Delivery(message=message, recipient=address, kind=kind, status=Status.QUEUED)
            for message, (_, _, recipients, _) in zip(messages, prepared)
            for kind, address in recipients
        )
    return messages


def mark_sent(
    sent: Sequence[tuple[Message, str]], conf: PauboxSettings, *, next_check_in: float = 60.0
) -> None:
    """Record Paubox's tracking ids; deliveries move from queued to sent.

    A few queries per call, however many messages: the bulk path calls it once per batch.
    """
    if not sent:
        return
    now = timezone.now()
    next_check = now + timezone.timedelta(seconds=next_check_in)
    for message, tracking_id in sent:
        message.tracking_id = tracking_id
        message.state = Message.State.SENT
        message.status = Status.SENT
        message.sent_at = now
        message.error = ""
        message.error_status = None
        message.attempts += 1
        message.next_receipt_check_at = next_check
        if not conf.store_content:
            message.payload = None
    with transaction.atomic():
        Message.objects.bulk_update(
            [m for m, _ in sent],
            [
                "tracking_id",
                "state",
                "status",
                "sent_at",
                "error",
                "error_status",
                "attempts",
                "next_receipt_check_at",
                "payload",
            ],
        )
        Delivery.objects.filter(
            message__in=[m.pk for m, _ in sent], status=Status.QUEUED
        ).update(status=Status.SENT, updated_at=now)


def mark_failed(
    messages: Sequence[Message],
    error: BaseException | str,
    conf: PauboxSettings,
) -> None:
    """Record why messages could not be sent; their deliveries become ``failed``.

    ``error`` is stored as its text, which never holds the key or content (see exceptions.py).
    """
    if not messages:
        return
    now = timezone.now()
    status = getattr(error, "status", None)
    for message in messages:
        message.state = Message.State.FAILED
        message.status = Status.FAILED
        message.error = str(error)
        message.error_status = status if isinstance(status, int) else None
        message.attempts += 1
        if not conf.store_content:
            message.payload = None
    with transaction.atomic():
        Message.objects.bulk_update(
            list(messages), ["state", "status", "error", "error_status", "attempts", "payload"]
        )
        Delivery.objects.filter(message__in=[m.pk for m in messages]).exclude(
            status=Status.FAILED
        ).update(status=Status.FAILED, updated_at=now)


# --- Dispositions (receipts and webhook events) ---------------------------------------------
