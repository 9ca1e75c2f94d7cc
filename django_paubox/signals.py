"""Signals for code that reacts to dispositions (alerting on bounces, updating a CRM, ...).

Both are sent only after the database transaction that recorded the change has committed
(``transaction.on_commit``), so a receiver sees the rows it is told about and is never told
about a change that was rolled back. They are sent with ``send_robust``: an exception in a
receiver is logged (logger ``django_paubox``) and does not undo the change, nor turn Paubox's
webhook call into an error.

``delivery_status_changed``
    ``sender=Delivery``; kwargs ``delivery`` (the saved row), ``old_status``, ``new_status``
    (:class:`~django_paubox.statuses.Status` values as plain strings) and ``source``
    (``"receipt"`` or ``"webhook"``). Sent once per real change: a replayed event, a stale
    receipt or a report that ranks no higher than the current status sends nothing. Opens and
    counters are not status changes.

``webhook_received``
    ``sender=WebhookEvent``; kwargs ``event`` (the stored row) and ``created`` (False when the
    event had already been stored: Paubox, or someone, sent it again). Sent for every accepted
    webhook call, known event name or not.

``recipient_unsubscribed``
    ``sender=Suppression``; kwargs ``address`` (lower case) and ``suppression`` (the row; its
    ``message`` is the message whose link was used, when still stored). Sent once per address,
    after commit, when an unsubscribe is first recorded for it: a one-click unsubscribe, or a
    receipt in which Paubox reports that the recipient unsubscribed.

Around sending (``sender=Message``):

``pre_send``
    Sent for each ``EmailMessage`` before anything is recorded or sent; kwargs ``message``
    (the EmailMessage: a receiver may change it) and ``backend``. A receiver raises
    :class:`CancelSend` to drop that one message (it is not recorded, sent or counted); any
    other exception propagates to the caller, before anything was recorded or sent.

``post_send``
    Sent once Paubox has answered for a message, or it was refused before sending; kwargs
    ``message`` (the EmailMessage, or ``None`` when a Celery worker sent it from the outbox),
    ``record`` (its :class:`~django_paubox.models.Message` row), ``tracking_id`` (or ``None``),
    ``error`` (the exception, or ``None``), ``metadata`` and ``tags`` (``paubox_metadata`` and
    ``paubox_tags`` as stored) and ``outcomes``: ``{recipient: status}`` with
    ``sent``, ``scheduled`` (Paubox will send it at ``paubox_send_at``), ``queued`` (back in
    the outbox for a retry), ``suppressed`` (on the suppression list: left out) or
    ``failed``. Sent with ``send_robust``: a failing receiver is logged and cannot undo the
    record of the send.
"""

from __future__ import annotations

from django.dispatch import Signal

from .exceptions import CancelSend

__all__ = [
    "CancelSend",
    "delivery_status_changed",
    "post_send",
    "pre_send",
    "recipient_unsubscribed",
    "webhook_received",
]

delivery_status_changed = Signal()
webhook_received = Signal()
pre_send = Signal()
post_send = Signal()
recipient_unsubscribed = Signal()
