"""Cancel or move a scheduled send (``message.paubox_send_at``): Paubox first, then the record.

A message Paubox holds for later is ``sent`` with ``scheduled_at`` in the future (see
:mod:`django_paubox.records`). Cancelling makes it ``cancelled``; rescheduling moves its
``scheduled_at`` (and ``sent_at``). Both ask Paubox with the credentials that sent the message
(``Message.mailer``), and change the record only when Paubox agreed, so the record never claims
what Paubox refused.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from .. import records
from ..client import PauboxClient
from ..credentials import settings_for
from ..exceptions import NotScheduled
from ..models import Message
from .options import format_send_at

__all__ = ["NotScheduled", "cancel", "is_pending", "reschedule"]


def is_pending(message: Message, now: datetime | None = None) -> bool:
    """Whether Paubox holds ``message`` for a time still to come."""
    return (
        message.state == Message.State.SENT
        and bool(message.tracking_id)
        and message.scheduled_at is not None
        and message.scheduled_at > (now or timezone.now())
    )


def _require_pending(message: Message) -> None:
    if is_pending(message):
        return
    if message.state == Message.State.CANCELLED:
        raise NotScheduled(f"{message} was already cancelled.")
    if message.scheduled_at is None:
        raise NotScheduled(f"{message} is not a scheduled send.")
    raise NotScheduled(f"{message} was due at {format_send_at(message.scheduled_at)} already.")


def _client_for(message: Message) -> PauboxClient:
    """A client with the credentials that sent ``message`` (never another key)."""
    return PauboxClient(settings_for(message.mailer, sender=message.from_email))


def cancel(message: Message, *, client: PauboxClient | None = None) -> Message:
    """Ask Paubox not to send ``message``; then record it ``cancelled``."""
    _require_pending(message)
    assert message.tracking_id
    if client is None:
        with _client_for(message) as own:
            own.cancel_scheduled(message.tracking_id)
    else:
        client.cancel_scheduled(message.tracking_id)
    records.mark_cancelled([message])
    return message


def reschedule(message: Message, when: datetime, *, client: PauboxClient | None = None) -> Message:
    """Ask Paubox to send ``message`` at ``when`` (aware, in the future); then record it."""
    _require_pending(message)
    assert message.tracking_id
    if when.tzinfo is None or when.utcoffset() is None:
        raise NotScheduled("The new time needs a time zone.")
    if when <= timezone.now():
        raise NotScheduled(f"The new time ({format_send_at(when)}) is in the past.")
    if client is None:
        with _client_for(message) as own:
            own.reschedule(message.tracking_id, when)
    else:
        client.reschedule(message.tracking_id, when)
    records.mark_rescheduled(message, when.replace(microsecond=0))
    return message
