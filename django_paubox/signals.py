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
"""

from __future__ import annotations

from django.dispatch import Signal

delivery_status_changed = Signal()
webhook_received = Signal()
