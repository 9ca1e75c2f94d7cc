"""Webhook events applied to their deliveries: stored once, then forward-only under the
message's lock, by the rules and in the lock order of :mod:`.dispositions`."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists
from django.utils import timezone

from .. import signals
from ..conf import PauboxSettings, get_settings
from ..models import Delivery, Message, WebhookEvent
from ..sending.metadata import read_ref
from ..tracking.parsing import WebhookEventData, parse_webhook_event
from ..tracking.statuses import RANK
from . import sql
from .dispositions import (
    DISPOSITION_FIELDS,
    Change,
    aggregate_status,
    apply_event,
    deliveries_by_recipient,
    disposition_of,
    match_delivery,
    robust,
    send_after_commit,
)
from .suppressions import suppress_hard_bounces

logger = logging.getLogger(__name__)


def apply_webhook_event(
    data: object, conf: PauboxSettings | None = None
) -> tuple[WebhookEvent, bool]:
    """Store a parsed webhook body once and apply it to its delivery, forward-only.

    Raises :class:`InvalidWebhookEvent` (a ``ValueError``) when ``data`` is not a Paubox event.
    Returns ``(event, created)``; ``created`` is False for a replay, which changes nothing.
    Events for messages this app did not send are stored unlinked; unknown event names are
    stored and change nothing. With ``STORE_SUBJECT`` off, the payload's subject is dropped.

    One transaction, in as few statements as the rules allow: the event is inserted unless
    stored already, and linked to its message, in one statement, which on PostgreSQL also
    locks the message and its deliveries and reads the deliveries (elsewhere one more
    statement); what changed is one rank-guarded ``UPDATE`` of the delivery, and one of the
    message's status when its aggregate moved (the same statement on PostgreSQL). A replay
    costs the insert that found it, and one read.
    """
    parsed = parse_webhook_event(data)
    conf = conf or get_settings()
    try:
        return _apply(parsed, conf)
    except IntegrityError:
        if connection.in_atomic_block:
            raise  # in a caller's transaction, whose own commit decides
        # Its message was purged between the insert that linked the event to it and the
        # commit (which checks the link): once more, the event finds no message and is stored
        # unlinked, rather than lost (Paubox does not send an event again).
        logger.info("Paubox: a webhook event's message was purged meanwhile; stored unlinked.")
        return _apply(parsed, conf)


def _apply(parsed: WebhookEventData, conf: PauboxSettings) -> tuple[WebhookEvent, bool]:
    now = timezone.now()
    changes: list[Change] = []
    with transaction.atomic():
        event, created, locked = _store_event(parsed, _stored_body(parsed, conf), now)
        if created and event.message_id is None:
            _link_by_header(event, parsed)
            locked = None  # linked now: its message is not locked yet
        if created and event.message_id is not None and parsed.outcome.known:
            if locked is None:
                locked = sql.lock_deliveries(event.message_id)
            _apply_event_to_message(locked, parsed, now, changes)
        suppress_hard_bounces(changes, conf)
        send_after_commit(changes)
        transaction.on_commit(
            robust(signals.webhook_received, sender=WebhookEvent, event=event, created=created)
        )
    return event, created


def _link_by_header(event: WebhookEvent, parsed: WebhookEventData) -> None:
    """Link an event whose tracking id is unknown here to the message its ``X-Paubox-Ref``
    custom header names (signed by us). No query for events without such a header."""
    pk = read_ref(parsed.custom_headers)
    if pk is not None and WebhookEvent.objects.filter(pk=event.pk).filter(
        Exists(Message.objects.filter(pk=pk))
    ).update(message_id=pk):
        event.message_id = pk


def _stored_body(parsed: WebhookEventData, conf: PauboxSettings) -> dict[str, Any]:
    """The body as stored: without the payload's subject when ``STORE_SUBJECT`` is off."""
    body = parsed.body
    payload = body.get("payload")
    if not conf.store_subject and isinstance(payload, dict) and "subject" in payload:
        body = {**body, "payload": {k: v for k, v in payload.items() if k != "subject"}}
    return body


def _store_event(
    parsed: WebhookEventData, body: dict[str, Any], now: datetime
) -> tuple[WebhookEvent, bool, list[Delivery] | None]:
    """Insert the event unless it is stored already; ``(event, created, locked)``.

    The insert, the duplicate check and the link to the message are one statement where the
    database has ``INSERT ... ON CONFLICT DO NOTHING RETURNING``; a replay then reads the
    stored event. On PostgreSQL, a new event that will be applied also locks and reads its
    message's deliveries in that statement (``locked``; None where they are not locked yet).
    Elsewhere, the ORM in a savepoint.
    """
    values = {
        "event_name": parsed.event_name,
        "dedupe_key": parsed.dedupe_key,
        "source_tracking_id": parsed.source_tracking_id,
        "recipient": parsed.recipient,
        "occurred_at": parsed.occurred_at,
        "received_at": now,
        "payload": body,
    }
    if sql.can_insert_once():
        locked: list[Delivery] | None = None
        inserted: tuple[int, int | None] | None
        if parsed.outcome.known and sql.can_lock_on_insert():
            with_locks = sql.insert_event_locking(values, parsed.source_tracking_id)
            inserted = None if with_locks is None else with_locks[:2]
            locked = None if with_locks is None else with_locks[2]
        else:
            inserted = sql.insert_event_once(values, parsed.source_tracking_id)
        if inserted is None:
            return WebhookEvent.objects.get(dedupe_key=parsed.dedupe_key), False, None
        event = WebhookEvent(id=inserted[0], message_id=inserted[1], **values)
        event._state.adding = False
        event._state.db = connection.alias
        return event, True, locked
    message_id = None
    if parsed.source_tracking_id:
        message_id = (
            Message.objects.filter(tracking_id=parsed.source_tracking_id)
            .values_list("pk", flat=True)
            .first()
        )
    try:
        with transaction.atomic():
            return WebhookEvent.objects.create(message_id=message_id, **values), True, None
    except IntegrityError:
        return WebhookEvent.objects.get(dedupe_key=parsed.dedupe_key), False, None


def _apply_event_to_message(
    deliveries: list[Delivery], parsed: WebhookEventData, now: datetime, changes: list[Change]
) -> None:
    """Apply a new event to its delivery under the locks, and keep ``Message.status`` in step.

    ``deliveries``: all of the message's, locked with it (:func:`sql.lock_deliveries`). The
    delivery's new values are decided in Python by the same rules as receipts'
    (``apply_event``); the ``UPDATE`` is guarded by rank as well, so that a write that did
    not take the message's lock can never be moved back.
    """
    delivery = match_delivery(deliveries_by_recipient(deliveries), parsed.recipient)
    if delivery is None:
        return
    before, old_status = disposition_of(delivery), delivery.status
    apply_event(delivery, parsed.outcome, parsed.occurred_at, now)
    # The message and all its deliveries are locked and in hand: derive its status from them,
    # written with the delivery's change (one statement on PostgreSQL) if that is written.
    message = delivery.message
    new = aggregate_status(
        (d.status for d in deliveries), message_failed=message.state == Message.State.FAILED
    )
    moved = new if new is not None and new != message.status else None
    if not _save_event_change(delivery, before, old_status, now, moved):
        return
    if delivery.status != old_status:
        changes.append((delivery, old_status, delivery.status, "webhook"))
    if moved is not None:
        message.status = moved


def _save_event_change(
    delivery: Delivery,
    before: tuple[Any, ...],
    old_status: str,
    now: datetime,
    message_status: str | None = None,
) -> bool:
    """Write the fields an event changed, in one ``UPDATE`` (with the message's new
    ``message_status``, if any); False when nothing changed.

    A status change is guarded by rank in the statement itself (it applies only to a delivery
    whose status is still lower), on every database; the message's status is written only
    with the delivery's change.
    """
    fields = {
        name: new
        for name, new, old in zip(DISPOSITION_FIELDS, disposition_of(delivery), before, strict=True)
        if new != old
    }
    if not fields:
        return False
    guard = sql.statuses_at_or_above(delivery.status, RANK) if delivery.status != old_status else []
    moved = None if message_status is None else (delivery.message_id, message_status)
    if not sql.update_delivery(
        delivery.pk, {**fields, "updated_at": now}, guard, message_status=moved
    ):
        return False
    delivery.updated_at = now
    return True
