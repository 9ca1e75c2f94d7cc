"""Receipts applied to Delivery rows, and the rules every disposition keeps: forward-only,
under one lock order (webhook events, by the same rules: :mod:`.events`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import signals
from ..models import Delivery, Message, WebhookEvent
from ..tracking.parsing import (
    Counters,
    Receipt,
    ReceiptDelivery,
    normalise_address,
    parse_receipt,
)
from ..tracking.statuses import RANK, Outcome, Status, advance, from_webhook_event, is_final
from . import sql
from .suppressions import suppress_hard_bounces, unsubscribe

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
_UNSUBSCRIBED = DISPOSITION_FIELDS.index("unsubscribed")
#: Aggregation: a problem with any recipient shows on the message, worst first.
_SURFACING = (Status.FAILED, Status.HARD_BOUNCED, Status.SOFT_BOUNCED)

Change = tuple[Delivery, str, str, str]  # delivery, old status, new status, source


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


def disposition_of(delivery: Delivery) -> tuple[Any, ...]:
    """The values of :data:`DISPOSITION_FIELDS`: what a report may have changed."""
    return tuple(getattr(delivery, name) for name in DISPOSITION_FIELDS)


def apply_outcome(delivery: Delivery, outcome: Outcome, delivered_at: datetime | None) -> None:
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


def apply_open(delivery: Delivery, when: datetime) -> None:
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
        apply_outcome(delivery, entry.outcome, entry.delivered_at)
    if entry.opened:
        # Paubox said "opened" without a usable time: record when we learned it.
        apply_open(delivery, entry.opened_at or now)
    _apply_counters(delivery, counters)


def apply_event(
    delivery: Delivery, outcome: Outcome, occurred_at: datetime | None, now: datetime
) -> None:
    """A webhook event on its delivery; an event without a time happened when it arrived."""
    if not outcome.known:
        return
    apply_outcome(delivery, outcome, occurred_at or now)
    if outcome.opened:
        apply_open(delivery, occurred_at or now)


def send_after_commit(changes: list[Change]) -> None:
    """Queue one ``delivery_status_changed`` per real status change, sent after commit."""
    for delivery, old, new, source in changes:
        transaction.on_commit(
            robust(
                signals.delivery_status_changed,
                sender=Delivery,
                delivery=delivery,
                old_status=old,
                new_status=new,
                source=source,
            )
        )


def robust(signal: Any, **kwargs: Any) -> Callable[[], None]:
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
    changes: list[Change],
    old_statuses: dict[int, str],
) -> list[Delivery]:
    """Save the deliveries whose fields changed, writing only those fields, in one statement
    (:func:`sql.update_rows`); note their status changes."""
    changed: list[Delivery] = []
    fields: set[str] = set()
    for delivery in deliveries:
        now_values = disposition_of(delivery)
        if now_values == before[delivery.pk]:
            continue
        changed.append(delivery)
        fields.update(
            name
            for name, new, old in zip(
                DISPOSITION_FIELDS, now_values, before[delivery.pk], strict=True
            )
            if new != old
        )
        delivery.updated_at = now
        old_status = old_statuses[delivery.pk]
        if delivery.status != old_status:
            changes.append((delivery, old_status, delivery.status, source))
    sql.update_rows(Delivery, changed, [*sorted(fields), "updated_at"])
    return changed


def deliveries_by_recipient(deliveries: Iterable[Delivery]) -> dict[str, Delivery]:
    return {normalise_address(d.recipient): d for d in deliveries}


def match_delivery(by_recipient: dict[str, Delivery], recipient: str) -> Delivery | None:
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
    changes: list[Change] = []
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
        before = {d.pk: disposition_of(d) for ds in rows.values() for d in ds}
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
        sql.update_rows(Message, [row for _, _, row in applied], ["status", "receipt_checked_at"])
        suppress_hard_bounces(changes)
        _record_unsubscribes(before, (d for ds in rows.values() for d in ds if d.pk in all_changed))
        send_after_commit(changes)
    return results


def _record_unsubscribes(before: dict[int, tuple[Any, ...]], changed: Iterable[Delivery]) -> None:
    """A receipt that first says a recipient unsubscribed (Paubox's own unsubscribe link)
    puts the address on the suppression list as ``unsubscribed``, as a one-click unsubscribe
    does, with ``recipient_unsubscribed`` after commit. No query unless one did."""
    for delivery in changed:
        if delivery.unsubscribed is True and before[delivery.pk][_UNSUBSCRIBED] is not True:
            unsubscribe(delivery.recipient, delivery.message_id)


def _apply_receipt_to_rows(receipt: Receipt, deliveries: list[Delivery], now: datetime) -> None:
    by_recipient = deliveries_by_recipient(deliveries)
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
        delivery = match_delivery(deliveries_by_recipient(rows[message.pk]), event.recipient)
        if delivery is not None:
            apply_event(delivery, from_webhook_event(event.event_name), event.occurred_at, now)
    for message_pk, event_pks in linked.items():
        WebhookEvent.objects.filter(pk__in=event_pks).update(message_id=message_pk)
