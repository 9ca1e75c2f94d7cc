"""The one place that writes Message, Delivery and WebhookEvent rows.

The backends, the webhook view, the management commands and the Celery tasks all call these
functions, so that what a send, a receipt or an event does to the records is decided here once.
Nothing here logs subjects, bodies or attachments.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from . import signals
from .conf import PauboxSettings, get_settings, sender_domain
from .dispositions import (
    Counters,
    InvalidWebhookEvent,  # noqa: F401  (raised by apply_webhook_event)
    Receipt,
    ReceiptDelivery,
    normalise_address,
    parse_receipt,
    parse_webhook_event,
)
from .models import Delivery, Message, WebhookEvent
from .statuses import RANK, Outcome, Status, advance, from_webhook_event, is_final

# --- Sending --------------------------------------------------------------------------------


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
            sender_domain=sender_domain(from_email),
            recipient_count=len(recipients),
            created_at=now,
            next_attempt_at=now if state == Message.State.QUEUED else None,
            payload=payload if (keep_payload or conf.store_content) else None,
        )
        for subject, from_email, recipients, payload in prepared
    ]
    with transaction.atomic():
        Message.objects.bulk_create(messages)
        Delivery.objects.bulk_create(
            Delivery(message=message, recipient=address, kind=kind, status=Status.QUEUED)
            for message, (_, _, recipients, _) in zip(messages, prepared, strict=True)
            for kind, address in recipients
        )
    return messages


def mark_sent(
    sent: Sequence[tuple[Message, str]], conf: PauboxSettings, *, next_check_in: float = 60.0
) -> None:
    """Record Paubox's tracking ids; deliveries move from queued to sent.

    A few queries per call, however many messages: the bulk path calls it once per batch.
    """
    _mark_accepted([(m, tracking_id, None) for m, tracking_id in sent], conf, next_check_in)


def _mark_accepted(
    accepted: Sequence[tuple[Message, str, datetime | None]],
    conf: PauboxSettings,
    next_check_in: float,
) -> None:
    """Paubox took these messages: ``(row, tracking id, scheduled time or None)``.

    A message sent now is ``sent``; a scheduled one stays ``queued`` until its time, when its
    receipts are first asked for (before it Paubox has nothing to report). On the hot path (a
    bulk batch sent now) this is two UPDATE statements, however many messages: the same values
    for every row, and the tracking ids in one CASE (``bulk_update`` cost more than the rest
    of a batch's database work together).
    """
    if not accepted:
        return
    now = timezone.now()
    for message, tracking_id, when in accepted:
        message.tracking_id = tracking_id
        message.state = Message.State.SENT
        message.status = Status.SENT if when is None else Status.QUEUED
        message.scheduled_at = when
        message.sent_at = when or now
        message.error = ""
        message.error_status = None
        message.attempts += 1
        message.next_receipt_check_at = (when or now) + timedelta(seconds=next_check_in)
        if not conf.store_content:
            message.payload = None
    common = {
        "state": Message.State.SENT,
        "error": "",
        "error_status": None,
        "attempts": F("attempts") + 1,
        **({} if conf.store_content else {"payload": None}),
    }
    sent_now = [m for m, _, when in accepted if when is None]
    with transaction.atomic():
        if sent_now:
            Message.objects.filter(pk__in=[m.pk for m in sent_now]).update(
                status=Status.SENT,
                scheduled_at=None,
                sent_at=now,
                next_receipt_check_at=sent_now[0].next_receipt_check_at,
                **common,
            )
            _set_tracking_ids([(m.pk, m.tracking_id or "") for m in sent_now])
            Delivery.objects.filter(
                message__in=[m.pk for m in sent_now], status=Status.QUEUED
            ).update(status=Status.SENT, updated_at=now)
        for message, tracking_id, when in accepted:
            if when is not None:  # scheduled sends go one at a time
                Message.objects.filter(pk=message.pk).update(
                    tracking_id=tracking_id,
                    status=Status.QUEUED,
                    scheduled_at=when,
                    sent_at=when,
                    next_receipt_check_at=message.next_receipt_check_at,
                    **common,
                )


def _set_tracking_ids(pairs: Sequence[tuple[int, str]]) -> None:
    """``UPDATE ... SET tracking_id = CASE id WHEN ... END`` in one statement."""
    quote = connection.ops.quote_name
    table = quote(Message._meta.db_table)
    pk = quote(str(Message._meta.get_field("id").column))
    column = quote(str(Message._meta.get_field("tracking_id").column))
    cases = " ".join(["WHEN %s THEN %s"] * len(pairs))
    marks = ", ".join(["%s"] * len(pairs))
    params: list[Any] = [value for pair in pairs for value in pair]
    params += [pk_value for pk_value, _ in pairs]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {column} = CASE {pk} {cases} END WHERE {pk} IN ({marks})",  # noqa: S608
            params,
        )


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


def requeue(
    messages: Sequence[Message], error: BaseException | str, conf: PauboxSettings, *, delay: float
) -> list[Message]:
    """Put messages back in the outbox after a transient failure; returns those requeued.

    A message that has used up ``SEND_MAX_ATTEMPTS`` is marked failed instead, with the reason.
    Its payload stays, since the next attempt needs it.
    """
    exhausted = [m for m in messages if m.attempts + 1 >= conf.send_max_attempts]
    if exhausted:
        mark_failed(exhausted, f"{error} (gave up after {conf.send_max_attempts} attempts)", conf)
    retry = [m for m in messages if m not in exhausted]
    if not retry:
        return []
    next_attempt = timezone.now() + timedelta(seconds=delay)
    for message in retry:
        message.state = Message.State.QUEUED
        message.attempts += 1
        message.error = str(error)
        message.error_status = _status_of(error)
        message.claimed_at = None
        message.next_attempt_at = next_attempt
    Message.objects.bulk_update(
        retry, ["state", "attempts", "error", "error_status", "claimed_at", "next_attempt_at"]
    )
    return retry


def _status_of(error: BaseException | str) -> int | None:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else None


def claim_queued(message_ids: Sequence[int]) -> list[Message]:
    """Claim queued messages for one worker: they become ``sending``, and no other worker gets
    them. Uses ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it (PostgreSQL);
    elsewhere the state check in the UPDATE keeps two workers from sending the same row."""
    now = timezone.now()
    with transaction.atomic():
        queryset = Message.objects.filter(pk__in=list(message_ids), state=Message.State.QUEUED)
        if connection.features.has_select_for_update_skip_locked:
            queryset = queryset.select_for_update(skip_locked=True)
        ids = list(queryset.order_by("pk").values_list("pk", flat=True))
        claimed = Message.objects.filter(pk__in=ids, state=Message.State.QUEUED).update(
            state=Message.State.SENDING, claimed_at=now
        )
    if claimed != len(ids):  # lost a race on a database without SKIP LOCKED: re-read
        return list(Message.objects.filter(pk__in=ids, state=Message.State.SENDING, claimed_at=now))
    return list(Message.objects.filter(pk__in=ids).order_by("pk"))


def stale_outbox(conf: PauboxSettings) -> tuple[list[int], list[int]]:
    """Ids of messages a dead broker or worker left behind: (queued too long, claimed too long)."""
    cutoff = timezone.now() - timedelta(seconds=conf.outbox_stale_seconds)
    queued = Message.objects.filter(state=Message.State.QUEUED, next_attempt_at__lte=cutoff)
    claimed = Message.objects.filter(state=Message.State.SENDING, claimed_at__lte=cutoff)
    return (
        list(queued.order_by("pk").values_list("pk", flat=True)),
        list(claimed.order_by("pk").values_list("pk", flat=True)),
    )


def mark_enqueued(message_ids: Sequence[int]) -> None:
    """Restart the staleness clock of queued messages just handed to the broker again."""
    Message.objects.filter(pk__in=list(message_ids), state=Message.State.QUEUED).update(
        next_attempt_at=timezone.now()
    )


def release_stale_claims(message_ids: Sequence[int], conf: PauboxSettings) -> list[int]:
    """Settle messages whose worker died while sending them.

    The send may or may not have reached Paubox, and Paubox has no idempotency key: by default
    they are marked failed with that reason (at most once); with ``RESEND_AMBIGUOUS`` they go
    back to the outbox (at least once). Returns the ids put back in the outbox.
    """
    rows = list(Message.objects.filter(pk__in=list(message_ids), state=Message.State.SENDING))
    reason = "The worker stopped while sending; the message may or may not have reached Paubox"
    if conf.resend_ambiguous:
        return [m.pk for m in requeue(rows, reason, conf, delay=0)]
    mark_failed(rows, reason + " (not resent: RESEND_AMBIGUOUS is off)", conf)
    return []


# --- Dispositions (receipts and webhook events) ---------------------------------------------
#
# Receipts and webhook events both come down to "Paubox said X about recipient R of message
# M". Every such report is applied under a row lock on the Message (taken first, always, so
# that receipts and webhooks for one message queue up instead of deadlocking), the Delivery
# rows are re-read under that lock, and statuses only move forward (statuses.advance): two
# refreshes at once, or a webhook racing a receipt, can never move a delivery back.
# ``Message.status`` is derived from its deliveries by ``aggregate_status`` in the same
# transaction. Signals go out after commit (see signals.py).

logger = logging.getLogger("django_paubox")

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
    """
    parsed = parse_webhook_event(data)
    conf = conf or get_settings()
    body = parsed.body
    payload = body.get("payload")
    if not conf.store_subject and isinstance(payload, dict) and "subject" in payload:
        body = {**body, "payload": {k: v for k, v in payload.items() if k != "subject"}}
    now = timezone.now()
    changes: list[_Change] = []
    with transaction.atomic():
        message = None
        if parsed.source_tracking_id:
            message = (
                Message.objects.select_for_update()
                .filter(tracking_id=parsed.source_tracking_id)
                .first()
            )
        try:
            with transaction.atomic():
                event = WebhookEvent.objects.create(
                    event_name=parsed.event_name,
                    dedupe_key=parsed.dedupe_key,
                    source_tracking_id=parsed.source_tracking_id,
                    message=message,
                    recipient=parsed.recipient,
                    occurred_at=parsed.occurred_at,
                    received_at=now,
                    payload=body,
                )
        except IntegrityError:
            event = WebhookEvent.objects.get(dedupe_key=parsed.dedupe_key)
            created = False
        else:
            created = True
        if created and message is not None and parsed.outcome.known:
            deliveries = list(
                Delivery.objects.select_for_update().filter(message=message).order_by("pk")
            )
            delivery = _match(_by_recipient(deliveries), parsed.recipient)
            if delivery is not None:
                before = {delivery.pk: _snapshot(delivery)}
                old = {delivery.pk: delivery.status}
                _apply_event(delivery, parsed.outcome, parsed.occurred_at, now)
                if _save_deliveries(before, [delivery], "webhook", now, changes, old):
                    # The message and all its deliveries are locked and in hand: derive its
                    # status from them rather than reading them again.
                    new = aggregate_status(
                        (d.status for d in deliveries),
                        message_failed=message.state == Message.State.FAILED,
                    )
                    if new is not None and new != message.status:
                        Message.objects.filter(pk=message.pk).update(status=new)
                        message.status = new
        _send_after_commit(changes)
        transaction.on_commit(
            _robust(signals.webhook_received, sender=WebhookEvent, event=event, created=created)
        )
    return event, created


# --- Scheduled sends --------------------------------------------------------------------------
#
# A scheduled message is ``sent`` (Paubox accepted it and returned a tracking id) with
# ``scheduled_at`` set; its ``sent_at`` is the scheduled time, so that receipt polling, the
# dashboard and the monthly usage count it when Paubox sends it. Its deliveries stay ``queued``
# until Paubox reports on them. A cancelled one is ``cancelled``, its deliveries ``failed``
# (final: no late report can revive a message that will never be sent).

#: Raw status kept on the deliveries of a cancelled scheduled send.
CANCELLED_RAW_STATUS = "scheduled send cancelled"


def mark_scheduled(
    scheduled: Sequence[tuple[Message, str, datetime]],
    conf: PauboxSettings,
    *,
    next_check_in: float = 60.0,
) -> None:
    """Record scheduled sends Paubox accepted: ``(row, tracking id, scheduled time)``.

    Receipts are first asked for ``next_check_in`` seconds after the scheduled time: before
    it Paubox has nothing to report.
    """
    _mark_accepted(scheduled, conf, next_check_in)


def mark_rescheduled(message: Message, when: datetime, *, next_check_in: float = 60.0) -> None:
    """Record that Paubox now sends ``message`` at ``when``."""
    message.scheduled_at = when
    message.sent_at = when
    message.next_receipt_check_at = when + timedelta(seconds=next_check_in)
    Message.objects.filter(pk=message.pk).update(
        scheduled_at=when, sent_at=when, next_receipt_check_at=message.next_receipt_check_at
    )


def mark_cancelled(messages: Sequence[Message]) -> None:
    """Record scheduled sends that Paubox will not send: ``cancelled``, deliveries ``failed``."""
    if not messages:
        return
    now = timezone.now()
    with transaction.atomic():
        for message in messages:
            message.state = Message.State.CANCELLED
            message.status = Status.FAILED
            message.next_receipt_check_at = None
        Message.objects.bulk_update(list(messages), ["state", "status", "next_receipt_check_at"])
        Delivery.objects.filter(message__in=[m.pk for m in messages]).exclude(
            status=Status.FAILED
        ).update(status=Status.FAILED, raw_status=CANCELLED_RAW_STATUS, updated_at=now)
