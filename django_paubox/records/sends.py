"""Rows for sends: created before Paubox is called, then sent, failed, requeued or cancelled."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from ..conf import PauboxSettings, sender_domain
from ..models import Delivery, Message
from ..tracking.statuses import Status
from . import sql
from .suppressions import normalise, suppressed_addresses

logger = logging.getLogger(__name__)

# --- Sending --------------------------------------------------------------------------------


#: What :func:`create_messages` takes per message: ``(subject, from_email, recipients,
#: payload)``, where ``recipients`` is ``[(kind, address), ...]``.
Prepared = tuple[str, str, Sequence[tuple[str, str]], dict[str, Any]]


def create_messages(
    prepared: Sequence[Prepared],
    conf: PauboxSettings,
    *,
    state: str = Message.State.SENDING,
    keep_payload: bool = False,
    mailers: Sequence[str] | None = None,
    display_names: Sequence[Mapping[str, str]] | None = None,
) -> list[Message]:
    """Write one Message and its Delivery rows per prepared message, before Paubox is called.

    ``prepared`` holds ``(subject, from_email, recipients, payload)`` where ``recipients`` is
    ``[(kind, address), ...]``. Two bulk inserts however many messages there are.
    ``keep_payload`` stores the Paubox payload (PHI) on the row: the Celery outbox needs it
    until the send; ``STORE_CONTENT`` keeps it afterwards. A row created ``sending`` (the plain
    backend) is claimed from now: if the process dies mid-send, the sweeper finds it stale.
    ``mailers`` holds, per message, the identity of the credentials that send it
    (``Message.mailer``; see :func:`django_paubox.credentials.settings_for`); ``"default"`` for all
    when not given.
    ``display_names``, parallel to ``prepared``, maps addresses to the names they were given
    ("Grace Hopper"); kept, like the subject, only with ``STORE_SUBJECT``.
    """
    messages, deliveries = _rows(
        prepared,
        conf,
        state=state,
        keep_payload=keep_payload,
        mailers=mailers,
        display_names=display_names,
    )
    _insert_rows(messages, deliveries)
    return messages


def _rows(
    prepared: Sequence[Prepared],
    conf: PauboxSettings,
    *,
    state: str = Message.State.SENDING,
    keep_payload: bool = False,
    mailers: Sequence[str] | None = None,
    display_names: Sequence[Mapping[str, str]] | None = None,
) -> tuple[list[Message], list[Delivery]]:
    """The unsaved rows of :func:`create_messages`."""
    now = timezone.now()
    identities = list(mailers) if mailers is not None else ["default"] * len(prepared)
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
            claimed_at=now if state == Message.State.SENDING else None,
            payload=payload if (keep_payload or conf.store_content) else None,
            # paubox_metadata / paubox_tags, validated by the payload builder (not PHI).
            metadata=payload.get("metadata") or {},
            tags=payload.get("tags") or [],
            mailer=mailer,
        )
        for (subject, from_email, recipients, payload), mailer in zip(
            prepared, identities, strict=True
        )
    ]
    names: Sequence[Mapping[str, str]] = (
        display_names if display_names is not None and conf.store_subject else [{}] * len(prepared)
    )
    deliveries = [
        Delivery(
            message=message,
            recipient=address,
            display_name=named.get(address, "")[:255],
            kind=kind,
            status=Status.QUEUED,
        )
        for message, (_, _, recipients, _), named in zip(messages, prepared, names, strict=True)
        for kind, address in recipients
    ]
    return messages, deliveries


def create_messages_checking_suppression(
    prepared: Sequence[Prepared], conf: PauboxSettings, **options: Any
) -> tuple[list[Message], dict[str, str]]:
    """:func:`create_messages`, with the suppression list looked up for their recipients in
    the same step: ``(rows, {address: reason})``.

    For a caller whose payloads are not stored, since the lookup cannot change what is
    written. One message on PostgreSQL: one statement, atomic alone (a ``send_mail()`` is two
    statements in all); otherwise the lookup and the inserts in one transaction.
    """
    messages, deliveries = _rows(prepared, conf, **options)
    addresses = sorted({normalise(a) for _, _, recipients, _ in prepared for _, a in recipients})
    if len(messages) == 1:
        listed = sql.insert_message_with_deliveries(
            messages[0], deliveries, suppressed_of=addresses
        )
        if listed is not None:
            return messages, listed
    with transaction.atomic():
        listed = suppressed_addresses(addresses)
        _insert_rows(messages, deliveries)
    return messages, listed


def _insert_rows(messages: list[Message], deliveries: list[Delivery]) -> None:
    """Two bulk inserts in a transaction; one message (``send_mail()``) on PostgreSQL: one
    statement, atomic on its own."""
    if (
        len(messages) == 1
        and sql.insert_message_with_deliveries(messages[0], deliveries) is not None
    ):
        return
    # Inside the caller's transaction (the backend's, with the suppression lookup), no
    # savepoint: a failure here undoes the whole step anyway.
    with transaction.atomic(savepoint=False):
        Message.objects.bulk_create(messages)
        Delivery.objects.bulk_create(deliveries)


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
    send or a bulk batch sent now) this is two UPDATE statements in one transaction, however
    many messages, and on PostgreSQL one statement without a transaction (see
    :func:`_record_sent_now`).
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
    scheduled = [(m, t, when) for m, t, when in accepted if when is not None]
    # One statement on PostgreSQL (atomic alone): no BEGIN/COMMIT around it.
    # Inside a caller's transaction it takes a savepoint instead, so that a failed statement
    # (a tracking id another row has) can be undone without undoing the caller's work.
    alone = not scheduled and sql.accepted_in_one_statement() and not connection.in_atomic_block
    with nullcontext() if alone else transaction.atomic():
        if sent_now:
            _record_sent_now(sent_now, now, common)
        for message, tracking_id, when in scheduled:  # scheduled sends go one at a time
            Message.objects.filter(pk=message.pk).update(
                tracking_id=tracking_id,
                status=Status.QUEUED,
                scheduled_at=when,
                sent_at=when,
                next_receipt_check_at=message.next_receipt_check_at,
                **common,
            )


def clashing_tracking_ids(accepted: Sequence[tuple[int, str]]) -> set[int]:
    """Of ``(row id, tracking id)`` pairs, the rows whose id cannot be recorded: another row
    has it already, or two of them share it (the column is unique). One indexed query."""
    counts: dict[str, int] = {}
    for _, tracking_id in accepted:
        counts[tracking_id] = counts.get(tracking_id, 0) + 1
    taken = set(
        Message.objects.filter(tracking_id__in=list(counts))
        .exclude(pk__in=[pk for pk, _ in accepted])
        .values_list("tracking_id", flat=True)
    )
    return {pk for pk, tracking_id in accepted if counts[tracking_id] > 1 or tracking_id in taken}


def _record_sent_now(sent_now: Sequence[Message], now: datetime, common: dict[str, Any]) -> None:
    """Messages sent now: one ``UPDATE`` of the messages (the same values for all, and each
    one's tracking id in a ``CASE``), one of their queued deliveries (now ``sent``)."""
    values = {k: v for k, v in common.items() if k != "attempts"}  # incremented by sql
    sql.update_accepted(
        {
            **values,
            "status": Status.SENT,
            "scheduled_at": None,
            "sent_at": now,
            "next_receipt_check_at": sent_now[0].next_receipt_check_at,
        },
        [(m.pk, m.tracking_id or "") for m in sent_now],
        {"status": Status.SENT, "updated_at": now},
        [Status.QUEUED],
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


def renew_claims(messages: Sequence[Message]) -> None:
    """Restart the staleness clock of rows about to be sent (a later batch of a long send)."""
    now = timezone.now()
    for message in messages:
        message.claimed_at = now
    Message.objects.filter(pk__in=[m.pk for m in messages], state=Message.State.SENDING).update(
        claimed_at=now
    )


def stale_outbox(conf: PauboxSettings) -> tuple[list[int], list[int]]:
    """Ids of messages a dead broker or process left behind: (queued too long, sending too long).

    A row is stale once it has been claimed (by a worker, or by the plain backend when it wrote
    the row) for ``OUTBOX_STALE_SECONDS``; a ``sending`` row without a claim time (written
    before 0.2 by the plain backend) once it is that old.
    """
    cutoff = timezone.now() - timedelta(seconds=conf.outbox_stale_seconds)
    queued = Message.objects.filter(state=Message.State.QUEUED, next_attempt_at__lte=cutoff)
    claimed = Message.objects.filter(state=Message.State.SENDING).filter(
        Q(claimed_at__lte=cutoff) | Q(claimed_at__isnull=True, created_at__lte=cutoff)
    )
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
    """Settle messages whose worker or process died while sending them.

    The send may or may not have reached Paubox, and Paubox has no idempotency key: by default
    they are marked failed with that reason (at most once); with ``RESEND_AMBIGUOUS`` outbox
    messages go back to the outbox (at least once). A message of the plain backend (never in
    the outbox, its content not kept) is always failed: nothing could send it again. Returns
    the ids put back in the outbox.
    """
    rows = list(Message.objects.filter(pk__in=list(message_ids), state=Message.State.SENDING))
    outbox = [m for m in rows if m.next_attempt_at is not None and isinstance(m.payload, dict)]
    direct = [m for m in rows if m not in outbox]
    mark_failed(
        direct,
        "The process stopped while sending (a worker timeout or crash, during the request to "
        "Paubox); the message may or may not have reached Paubox (not resent)",
        conf,
    )
    reason = "The worker stopped while sending; the message may or may not have reached Paubox"
    if conf.resend_ambiguous:
        return [m.pk for m in requeue(outbox, reason, conf, delay=0)]
    mark_failed(outbox, reason + " (not resent: RESEND_AMBIGUOUS is off)", conf)
    return []


#: Starts the reason :func:`stop_polling` records.
NOT_POLLED = "Receipts not polled: "


def stop_polling(message_ids: Sequence[int], reason: str) -> None:
    """No receipt can be asked for these sent messages (their credentials are gone from the
    settings): clear their schedule and keep the reason on the row, for the admin."""
    Message.objects.filter(pk__in=list(message_ids)).update(
        next_receipt_check_at=None, error=NOT_POLLED + reason
    )


def resume_polling(message_ids: Sequence[int]) -> None:
    """Their credentials are back: forget the reason :func:`stop_polling` recorded."""
    Message.objects.filter(pk__in=list(message_ids), error__startswith=NOT_POLLED).update(error="")


def save_next_checks(messages: Sequence[Message]) -> None:
    """Save each message's ``next_receipt_check_at`` (its schedule after a poll), and only
    that column: the receipt applied before it owns the others. One statement."""
    sql.update_rows(Message, messages, ["next_receipt_check_at"])


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
