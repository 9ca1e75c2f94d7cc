"""Receipts and webhook events applied to Delivery rows: forward-only, under one lock order."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Exists
from django.utils import timezone

from .. import signals
from ..conf import PauboxSettings, get_settings
from ..models import Delivery, Message, WebhookEvent
from ..sending.metadata import read_ref
from ..tracking.parsing import (
    Counters,
    Receipt,
    ReceiptDelivery,
    WebhookEventData,
    normalise_address,
    parse_receipt,
    parse_webhook_event,
)
from ..tracking.statuses import RANK, Outcome, Status, advance, from_webhook_event, is_final
from . import sql
from .suppressions import suppress_hard_bounces

logger = logging.getLogger(__name__)

# --- Dispositions (receipts and webhook events) ---------------------------------------------
#
# Receipts and webhook events both come down to "Paubox said X about recipient R of message
# M". Every such report is applied under a row lock on the Message (taken first, always, so
# that receipts and webhooks for one message queue up instead of deadlocking), the Delivery
# rows are re-read under that lock, and statuses only move forward (statuses.advance): two
# refreshes at once, or a webhook racing a receipt, can never move a delivery back.
# ``Message.status`` is derived from its deliveries by ``aggregate_status`` in the same
# transaction. Signals go out after commit (see signals.py).


#: Delivery fields a receipt or an event may change (``updated_at`` is added when saving).
DISPOSITION_FIELDS = (
    "status",
    "raw_status",
    "via_secure_portal",
    "delivered_at",
    "opened_at",
    "total_opens",
    "distinct_opens",
    "total_click_count",
    "clicks_per_link",
    "unsubscribed",
)
#: Aggregation: a problem with any recipient shows on the message, worst first.
_SURFACING = (Status.FAILED, Status.HARD_BOUNCED, Status.SOFT_BOUNCED)

_Change = tuple[Delivery, str, str, str]  # delivery, old status, new status, source


def aggregate_status(statuses: Iterable[str], *, message_failed: bool = False) -> str | None:
    """``Message.status`` from its deliveries' statuses (None: no deliveries, keep it).

    The rule, for the admin's badge and filter: a message Paubox never took is ``failed``;
    otherwise any ``failed``, then any ``hard_bounced``, then any ``soft_bounced`` delivery
    shows (a problem with one recipient must be visible at a glance); otherwise the least
    advanced delivery: ``delivered`` only when every recipient is delivered. A soft bounce
    that is later delivered stops showing, so the aggregate (unlike a delivery) may go from
    ``soft_bounced`` back to ``processing`` while other recipients are still in flight.
    """
    if message_failed:
        return str(Status.FAILED)
    present = {str(s) for s in statuses}
    if not present:
        return None
    for status in _SURFACING:
        if status in present:
            return str(status)
    return min(present, key=lambda s: RANK.get(s, -1))


def refresh_message_status(message: Message) -> str:
    """Recompute and save ``message.status`` from its deliveries; returns it.

    Runs under the message's row lock (re-entrant inside the apply functions' transaction).
    """
    with transaction.atomic():
        locked = Message.objects.select_for_update().only("pk", "state", "status")
        current = locked.get(pk=message.pk)
        statuses = Delivery.objects.filter(message_id=message.pk).values_list("status", flat=True)
        new = aggregate_status(statuses, message_failed=current.state == Message.State.FAILED)
        if new is not None and new != current.status:
            Message.objects.filter(pk=message.pk).update(status=new)
            current.status = new
    message.status = current.status
    return current.status


def _snapshot(delivery: Delivery) -> tuple[Any, ...]:
    return tuple(getattr(delivery, name) for name in DISPOSITION_FIELDS)


def _apply_outcome(delivery: Delivery, outcome: Outcome, delivered_at: datetime | None) -> None:
    """Apply a status report forward-only; a report that would move back is ignored whole."""
    if outcome.status is None:
        # "Internal error" or a string we do not know: keep Paubox's words, change nothing
        # else; a final delivery keeps the words that explain it.
        if not outcome.opened and not is_final(delivery.status):
            delivery.raw_status = outcome.raw[:255]
        return
    if advance(delivery.status, outcome.status) != outcome.status:
        return
    delivery.status = str(outcome.status)
    delivery.raw_status = outcome.raw[:255]
    if outcome.via_secure_portal:
        delivery.via_secure_portal = True
    if outcome.status == Status.DELIVERED and delivery.delivered_at is None:
        delivery.delivered_at = delivered_at


def _apply_open(delivery: Delivery, when: datetime) -> None:
    """``opened_at`` is the first open known: an earlier time replaces a later one."""
    if delivery.opened_at is None or when < delivery.opened_at:
        delivery.opened_at = when


def _click_total(clicks: object) -> int:
    if not isinstance(clicks, list):
        return -1
    return sum(
        c["click_count"]
        for c in clicks
        if isinstance(c, dict) and isinstance(c.get("click_count"), int)
    )


def _apply_counters(delivery: Delivery, counters: Counters) -> None:
    """Counters only grow (a stale receipt applied late must not lower them)."""
    for name in ("total_opens", "distinct_opens", "total_click_count"):
        value = getattr(counters, name)
        if value is not None:
            current = getattr(delivery, name)
            setattr(delivery, name, value if current is None else max(current, value))
    clicks = counters.clicks_per_link
    if clicks is not None and _click_total(clicks) >= _click_total(delivery.clicks_per_link):
        delivery.clicks_per_link = clicks
    if counters.unsubscribed is not None and delivery.unsubscribed is not True:
        delivery.unsubscribed = counters.unsubscribed


def _apply_receipt_entry(
    delivery: Delivery, entry: ReceiptDelivery, counters: Counters, now: datetime
) -> None:
    if entry.outcome is not None:
        _apply_outcome(delivery, entry.outcome, entry.delivered_at)
    if entry.opened:
        # Paubox said "opened" without a usable time: record when we learned it.
        _apply_open(delivery, entry.opened_at or now)
    _apply_counters(delivery, counters)


def _apply_event(
    delivery: Delivery, outcome: Outcome, occurred_at: datetime | None, now: datetime
) -> None:
    """A webhook event on its delivery; an event without a time happened when it arrived."""
    if not outcome.known:
        return
    _apply_outcome(delivery, outcome, occurred_at or now)
    if outcome.opened:
        _apply_open(delivery, occurred_at or now)


def _send_after_commit(changes: list[_Change]) -> None:
    """Queue one ``delivery_status_changed`` per real status change, sent after commit."""
    for delivery, old, new, source in changes:
        transaction.on_commit(
            _robust(
                signals.delivery_status_changed,
                sender=Delivery,
                delivery=delivery,
                old_status=old,
                new_status=new,
                source=source,
            )
        )


def _robust(signal: Any, **kwargs: Any) -> Callable[[], None]:
    def send() -> None:
        for receiver, result in signal.send_robust(**kwargs):
            if isinstance(result, Exception):
                logger.error(
                    "Paubox: a receiver of %s (%r) raised.",
                    "delivery_status_changed"
                    if signal is signals.delivery_status_changed
                    else "webhook_received",
                    receiver,
                    exc_info=result,
                )

    return send


def _save_deliveries(
    before: dict[int, tuple[Any, ...]],
    deliveries: Iterable[Delivery],
    source: str,
    now: datetime,
    changes: list[_Change],
    old_statuses: dict[int, str],
) -> list[Delivery]:
    """Save the deliveries whose fields changed, writing only those fields; note their status
    changes. One delivery (a webhook event) is a plain UPDATE: ``bulk_update`` builds a CASE
    per field and cost ten times as much."""
    changed: list[Delivery] = []
    fields: set[str] = set()
    for delivery in deliveries:
        snapshot = _snapshot(delivery)
        if snapshot == before[delivery.pk]:
            continue
        changed.append(delivery)
        fields.update(
            name
            for name, new, old in zip(
                DISPOSITION_FIELDS, snapshot, before[delivery.pk], strict=True
            )
            if new != old
        )
        delivery.updated_at = now
        old_status = old_statuses[delivery.pk]
        if delivery.status != old_status:
            changes.append((delivery, old_status, delivery.status, source))
    if len(changed) == 1:
        (delivery,) = changed
        Delivery.objects.filter(pk=delivery.pk).update(
            updated_at=now, **{name: getattr(delivery, name) for name in fields}
        )
    elif changed:
        Delivery.objects.bulk_update(changed, [*sorted(fields), "updated_at"])
    return changed


def _by_recipient(deliveries: Iterable[Delivery]) -> dict[str, Delivery]:
    return {normalise_address(d.recipient): d for d in deliveries}


def _match(by_recipient: dict[str, Delivery], recipient: str) -> Delivery | None:
    """The delivery an event is about; an event naming nobody fits a one-recipient message."""
    if recipient:
        return by_recipient.get(recipient)
    if len(by_recipient) == 1:
        return next(iter(by_recipient.values()))
    return None


def apply_receipt(message: Message, receipt: dict[str, Any]) -> list[Delivery]:
    """Apply a ``GET /message_receipt`` answer to ``message``'s deliveries.

    Returns the deliveries that changed (status, times, flag or counters). Tolerant: unknown
    statuses and "Internal error" are kept raw without a status change, absent or garbage
    times are left unset, entries for recipients we do not know are skipped, an empty
    ``message_deliveries`` only records the check. A receipt whose ``sourceTrackingId`` is
    not the message's is ignored (logged). Sets ``receipt_checked_at`` and refreshes
    ``message.status`` (and updates the instance passed in).
    """
    return apply_receipts([(message, receipt)])[0]


def apply_receipts(
    items: Iterable[tuple[Message, dict[str, Any]]],
) -> list[list[Delivery]]:
    """:func:`apply_receipt` for many messages in one transaction and a few queries.

    For the polling command: one lock query, one read and one bulk update for the whole
    batch. Returns the changed deliveries per item, in order.
    """
    pairs = [(message, parse_receipt(receipt)) for message, receipt in items]
    results: list[list[Delivery]] = [[] for _ in pairs]
    if not pairs:
        return results
    now = timezone.now()
    changes: list[_Change] = []
    with transaction.atomic():
        pks = sorted({m.pk for m, _ in pairs})
        locked = {
            m.pk: m for m in Message.objects.select_for_update().filter(pk__in=pks).order_by("pk")
        }
        rows: dict[int, list[Delivery]] = {pk: [] for pk in locked}
        for delivery in (
            Delivery.objects.select_for_update().filter(message_id__in=list(locked)).order_by("pk")
        ):
            delivery.message = locked[delivery.message_id]  # receivers read it: no query
            rows[delivery.message_id].append(delivery)
        before = {d.pk: _snapshot(d) for ds in rows.values() for d in ds}
        old_statuses = {d.pk: d.status for ds in rows.values() for d in ds}
        applied: list[tuple[int, Message, Message]] = []
        for index, (message, receipt) in enumerate(pairs):
            row = locked.get(message.pk)
            if row is None:
                continue  # deleted meanwhile (purged)
            if receipt.tracking_id and receipt.tracking_id != row.tracking_id:
                logger.warning(
                    "Paubox: ignored a receipt for %s applied to message %s (tracking id %s).",
                    receipt.tracking_id,
                    row.pk,
                    row.tracking_id,
                )
                continue
            applied.append((index, message, row))
        _link_orphan_events([row for _, _, row in applied], rows, now)
        for index, _, row in applied:
            _apply_receipt_to_rows(pairs[index][1], rows[row.pk], now)
        all_changed = {
            d.pk
            for d in _save_deliveries(
                before,
                (d for ds in rows.values() for d in ds),
                "receipt",
                now,
                changes,
                old_statuses,
            )
        }
        for index, message, row in applied:
            results[index] = [d for d in rows[row.pk] if d.pk in all_changed]
            new = aggregate_status(
                (d.status for d in rows[row.pk]),
                message_failed=row.state == Message.State.FAILED,
            )
            row.status = new if new is not None else row.status
            row.receipt_checked_at = now
            message.status, message.receipt_checked_at = row.status, now
        if applied:
            Message.objects.bulk_update(
                [row for _, _, row in applied], ["status", "receipt_checked_at"]
            )
        suppress_hard_bounces(changes)
        _send_after_commit(changes)
    return results


def _apply_receipt_to_rows(receipt: Receipt, deliveries: list[Delivery], now: datetime) -> None:
    by_recipient = _by_recipient(deliveries)
    single = len(receipt.deliveries) == 1
    for entry in receipt.deliveries:
        delivery = by_recipient.get(entry.recipient)
        if delivery is None:
            continue
        # Message-level counters are Paubox's single-recipient fields: never spread them.
        counters = entry.counters.merged(receipt.counters) if single else entry.counters
        _apply_receipt_entry(delivery, entry, counters, now)


def _link_orphan_events(
    messages: list[Message], rows: dict[int, list[Delivery]], now: datetime
) -> None:
    """Link (and apply) events that arrived before their message's tracking id was saved.

    Paubox may call the webhook before the send's transaction commits; such an event is
    stored unlinked, and the next receipt check of its message picks it up. What the events
    change is saved (and signalled) with the receipt's changes.
    """
    by_tracking_id = {m.tracking_id: m for m in messages if m.tracking_id}
    if not by_tracking_id:
        return
    orphans = WebhookEvent.objects.filter(
        message__isnull=True, source_tracking_id__in=list(by_tracking_id)
    ).order_by("received_at", "pk")
    linked: dict[int, list[int]] = {}
    for event in orphans:
        message = by_tracking_id[event.source_tracking_id]
        linked.setdefault(message.pk, []).append(event.pk)
        delivery = _match(_by_recipient(rows[message.pk]), event.recipient)
        if delivery is not None:
            _apply_event(delivery, from_webhook_event(event.event_name), event.occurred_at, now)
    for message_pk, event_pks in linked.items():
        WebhookEvent.objects.filter(pk__in=event_pks).update(message_id=message_pk)


def apply_webhook_event(
    data: object, conf: PauboxSettings | None = None
) -> tuple[WebhookEvent, bool]:
    """Store a parsed webhook body once and apply it to its delivery, forward-only.

    Raises :class:`InvalidWebhookEvent` (a ``ValueError``) when ``data`` is not a Paubox event.
    Returns ``(event, created)``; ``created`` is False for a replay, which changes nothing.
    Events for messages this app did not send are stored unlinked; unknown event names are
    stored and change nothing. With ``STORE_SUBJECT`` off, the payload's subject is dropped.

    One transaction, in as few statements as the rules allow: the event is inserted unless
    stored already, and linked to its message, in one statement; a new event about a known
    message then locks the message and its deliveries and reads the deliveries in one more;
    what changed is one rank-guarded ``UPDATE`` of the delivery, and one of the message's
    status when its aggregate moved. A replay costs the insert that found it, and one read.
    """
    parsed = parse_webhook_event(data)
    conf = conf or get_settings()
    now = timezone.now()
    changes: list[_Change] = []
    with transaction.atomic():
        event, created = _store_event(parsed, _stored_body(parsed, conf), now)
        if created and event.message_id is None:
            _link_by_header(event, parsed)
        if created and event.message_id is not None and parsed.outcome.known:
            _apply_event_to_message(event.message_id, parsed, now, changes)
        suppress_hard_bounces(changes, conf)
        _send_after_commit(changes)
        transaction.on_commit(
            _robust(signals.webhook_received, sender=WebhookEvent, event=event, created=created)
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
) -> tuple[WebhookEvent, bool]:
    """Insert the event unless it is stored already; ``(event, created)``.

    The insert, the duplicate check and the link to the message are one statement where the
    database has ``INSERT ... ON CONFLICT DO NOTHING RETURNING``; a replay then reads the
    stored event. Elsewhere, the ORM in a savepoint.
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
        inserted = sql.insert_event_once(values, parsed.source_tracking_id)
        if inserted is None:
            return WebhookEvent.objects.get(dedupe_key=parsed.dedupe_key), False
        event = WebhookEvent(id=inserted[0], message_id=inserted[1], **values)
        event._state.adding = False
        event._state.db = connection.alias
        return event, True
    message_id = None
    if parsed.source_tracking_id:
        message_id = (
            Message.objects.filter(tracking_id=parsed.source_tracking_id)
            .values_list("pk", flat=True)
            .first()
        )
    try:
        with transaction.atomic():
            return WebhookEvent.objects.create(message_id=message_id, **values), True
    except IntegrityError:
        return WebhookEvent.objects.get(dedupe_key=parsed.dedupe_key), False


def _apply_event_to_message(
    message_id: int, parsed: WebhookEventData, now: datetime, changes: list[_Change]
) -> None:
    """Apply a new event to its delivery under the locks, and keep ``Message.status`` in step.

    The delivery's new values are decided in Python by the same rules as receipts'
    (``_apply_event``); the ``UPDATE`` is guarded by rank as well, so that a write that did
    not take the message's lock can never be moved back.
    """
    deliveries = sql.lock_deliveries(message_id)
    delivery = _match(_by_recipient(deliveries), parsed.recipient)
    if delivery is None:
        return
    before, old_status = _snapshot(delivery), delivery.status
    _apply_event(delivery, parsed.outcome, parsed.occurred_at, now)
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
        for name, new, old in zip(DISPOSITION_FIELDS, _snapshot(delivery), before, strict=True)
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
