"""The sending engine: batches, the one-by-one fallback, the failure policy, and records.

Both backends and the Celery outbox worker hand :class:`Prepared` messages to a
:class:`Dispatcher`; it speaks to Paubox through one :class:`~django_paubox.client.PauboxClient`
and writes every outcome through :mod:`django_paubox.records`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction

from .. import records, signals
from ..client import PauboxClient
from ..conf import PauboxSettings
from ..credentials import settings_for
from ..exceptions import (
    PauboxAmbiguousResponse,
    PauboxAPIError,
    PauboxConnectionError,
    PauboxError,
    PauboxPayloadError,
)
from ..models import Message
from .metadata import REF_HEADER, ref_value
from .options import SCHEDULE_MARGIN, parse_send_at
from .payload import without_recipients
from .unsubscribe import unsubscribe_headers

logger = logging.getLogger(__name__)


@dataclass
class Prepared:
    """One outgoing message: its row, its Paubox payload, and the EmailMessage it came from."""

    row: Message
    payload: dict[str, Any]  # {"message": <Paubox message>, "extras": {...}}
    email: EmailMessage | None = None
    tracking_id: str | None = None
    error: PauboxError | None = None
    #: Bare addresses of to, cc and bcc, for post_send's per-recipient outcomes.
    recipients: list[str] = field(default_factory=list)
    #: When Paubox is to send it, once it went through ``/schedule`` (``payload["send_at"]``).
    scheduled_for: datetime | None = None
    #: Recipients left out because they are on the suppression list: ``{address: reason}``.
    suppressed: dict[str, str] = field(default_factory=dict)

    @property
    def sender(self) -> str:
        """The From Paubox will see (an extra From header wins), which picks the API key."""
        headers = self.payload.get("message", {}).get("headers", {})
        return str(headers.get("from") or self.row.from_email)

    def send_body_extras(self) -> dict[str, Any]:
        return dict(self.payload.get("extras") or {})

    def goes_alone(self) -> bool:
        """Whether it needs a request of its own: ``/bulk_messages`` has no room for extras,
        a template (``/templated_messages``) or a send time (``/schedule``)."""
        return bool(
            self.send_body_extras() or self.payload.get("template") or self.payload.get("send_at")
        )


@dataclass
class DispatchResult:
    sent: list[Prepared] = field(default_factory=list)
    failed: list[Prepared] = field(default_factory=list)
    #: Back in the outbox after a transient failure (only with ``requeue_transient``).
    requeued: list[Prepared] = field(default_factory=list)

    @property
    def first_error(self) -> PauboxError | None:
        return next((p.error for p in self.failed if p.error is not None), None)


class Dispatcher:
    """Sends prepared messages through one client and records every outcome.

    Policy: more than one message go to ``/bulk_messages`` in batches of ``BATCH_SIZE``. A batch
    Paubox refuses as invalid (a 4xx) is retried one message at a time, so one bad message
    cannot sink the others. A batch that fails for a reason that is not the messages' fault
    (connection, timeout, 429, 5xx) is marked failed, and so is everything after it without
    being attempted: when Paubox is down, each further batch would only wait for a timeout.
    A batch Paubox answered with success but an unreadable answer may have been taken: it is
    failed as "may have been sent" (or requeued only with ``RESEND_AMBIGUOUS``), never retried
    one by one.
    """

    def __init__(
        self,
        client: PauboxClient,
        conf: PauboxSettings,
        *,
        requeue_transient: bool = False,
        retry_delay: float = 0.0,
    ) -> None:
        self.client = client
        self.conf = conf
        #: The outbox's mode: a transient failure puts the message back in the queue, to be
        #: retried after ``retry_delay`` seconds, instead of failing it.
        self.requeue_transient = requeue_transient
        self.retry_delay = retry_delay

    def dispatch(self, prepared: Sequence[Prepared]) -> DispatchResult:
        result = DispatchResult()
        if len(prepared) == 1:
            self._stamped(prepared)
            self._send_one(prepared[0])
            self._record(prepared, result)
            return result
        return self.dispatch_batches(_chunks(prepared, self.conf.batch_size))

    def dispatch_batches(self, batches: Iterable[Sequence[Prepared]]) -> DispatchResult:
        """Send batches as ``batches`` yields them, each in one request (see the class).

        Pipelined: while batch k is on its way to Paubox, batch k+1 is taken from ``batches``
        (a generator may write its rows then) and batch k-1's outcome is written to the
        database; the helper thread only speaks HTTP, only this one touches the database.
        Still one request in flight, and k+1 leaves only once k has not met an outage; the
        batches after an outage are still taken (their rows written) and marked not attempted.
        Should the database fail, the batch already under way is sent but left unrecorded, in
        state "sending"; should taking the next batch fail, the batch under way is recorded
        first.
        """
        result = DispatchResult()
        source = (self._stamped(batch) for batch in batches)
        current = next(source, None)
        if current is None:
            return result
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="paubox-send") as sender:
            under_way = sender.submit(self._send_batch, current)
            while current is not None:
                try:
                    following = next(source, None)
                except BaseException:
                    under_way.result()
                    self._record(current, result)
                    raise
                outage = under_way.result()
                if outage is None and following is not None:
                    under_way = sender.submit(self._send_batch, following)
                    # Its claim starts as it leaves, so that a long send is not taken for a
                    # dead one: renewed while it is on the wire, not before (a round trip off
                    # the critical path). Meanwhile its claim is the one its rows were written
                    # with, a batch ago: far from OUTBOX_STALE_SECONDS (at least 2 TIMEOUTs).
                    records.renew_claims([item.row for item in following])
                self._record(current, result)
                if outage is not None:
                    for later in itertools.chain([following] if following else [], source):
                        for item in later:
                            item.error = _not_attempted(outage)
                        self._record(later, result)
                    break
                current = following
        return result

    def _stamped(self, batch: Sequence[Prepared]) -> Sequence[Prepared]:
        """The batch, each message's ``X-Paubox-Ref`` header added (its row exists by now)."""
        for item in batch:
            stamp_headers(item.payload, item.row.pk, self.conf)
        return batch

    def _send_one(self, item: Prepared) -> None:
        try:
            item.tracking_id = _send_alone(self.client, item)
        except PauboxError as error:
            item.error = error

    def _send_batch(self, batch: Sequence[Prepared]) -> PauboxError | None:
        """Send one batch; returns the error when Paubox itself is failing."""
        # A bulk request has no room for per-message extras (tracking overrides), templates or
        # send times: those go alone.
        alone = [item for item in batch if item.goes_alone()]
        batch = [item for item in batch if not item.goes_alone()]
        for index, item in enumerate(alone):
            self._send_one(item)
            if _is_outage(item.error):  # as for a failed bulk: do not wait on every other one
                for later in [*alone[index + 1 :], *batch]:
                    later.error = _not_attempted(item.error)
                return item.error
        if len(batch) <= 1:
            for item in batch:
                self._send_one(item)
            return None
        try:
            results = self.client.send_bulk([item.payload["message"] for item in batch])
        except (PauboxAPIError, PauboxConnectionError) as error:
            if _is_outage(error):
                for item in batch:
                    item.error = error
                return error
            if not _refused_as_invalid(error):  # ambiguous, or not about the messages
                for item in batch:
                    item.error = error
                return None
            logger.info(
                "Paubox refused a batch of %d (%s); sending its messages one by one",
                len(batch),
                error.status,
            )
            for item in batch:
                self._send_one(item)
            return None
        for item, outcome in zip(batch, results, strict=True):
            if isinstance(outcome, str):
                item.tracking_id = outcome
            else:
                item.error = outcome
        return None

    def _record_accepted(self, items: Sequence[Prepared]) -> None:
        """The messages Paubox took, sent now or scheduled; all or nothing."""
        now = [(i.row, i.tracking_id) for i in items if i.tracking_id and i.scheduled_for is None]
        later = [
            (i.row, i.tracking_id, i.scheduled_for)
            for i in items
            if i.tracking_id and i.scheduled_for is not None
        ]
        with transaction.atomic() if now and later else nullcontext():
            records.mark_sent(now, self.conf)
            records.mark_scheduled(later, self.conf)

    def _record(self, items: Sequence[Prepared], result: DispatchResult) -> None:
        try:
            self._record_accepted(items)
        except IntegrityError:
            # A tracking id another row already has, or two of these share: looked for only
            # when it happens (a query on every send would be one too many). Those fail as
            # ambiguous; the others are recorded. Nothing was written by the failed attempt.
            _refuse_clashing_ids(items)
            self._record_accepted(items)
        sent = [item for item in items if item.tracking_id]
        failed = [item for item in items if not item.tracking_id]
        if self.requeue_transient:
            transient = [item for item in failed if is_transient(item.error, self.conf)]
            failed = [item for item in failed if item not in transient]
            for error_text, group in _group_by_error(transient):
                requeued = records.requeue(
                    [item.row for item in group],
                    group[0].error or error_text,
                    self.conf,
                    delay=self.retry_delay,
                )
                result.requeued.extend(item for item in group if item.row in requeued)
                # The rest used up their attempts: requeue() has failed them with that reason.
                result.failed.extend(item for item in group if item.row not in requeued)
        for error_text, group in _group_by_error(failed):
            records.mark_failed(
                [item.row for item in group], group[0].error or error_text, self.conf
            )
        requeued_ids = set(map(id, result.requeued))
        for item in items:
            tag_email(item)
            post_send(item, "queued" if id(item) in requeued_ids else None)
        result.sent.extend(sent)
        result.failed.extend(failed)
        if failed:
            logger.warning(
                "Paubox: %d message(s) not sent: %s", len(failed), failed[0].error or "unknown"
            )


def _is_outage(error: PauboxError | None) -> bool:
    """Paubox itself failing (connection, timeout, 429, 5xx), not the message."""
    if isinstance(error, PauboxConnectionError):
        return True
    return isinstance(error, PauboxAPIError) and error.retryable


def _refused_as_invalid(error: PauboxError) -> bool:
    """A 4xx that is about the messages: only then may a batch be retried one by one."""
    return (
        isinstance(error, PauboxAPIError)
        and not error.may_have_been_sent
        and 400 <= error.status < 500
        and error.status not in (401, 403, 404)  # credentials or URL: every message alike
    )


def _refuse_clashing_ids(items: Sequence[Prepared]) -> None:
    """A tracking id another row already has (or two of these share) cannot be recorded: such
    a message may have been sent, so it fails as ambiguous instead of breaking the batch."""
    accepted = [(item.row.pk, item.tracking_id) for item in items if item.tracking_id]
    clashing = records.clashing_tracking_ids(accepted) if accepted else set()
    for item in items:
        if item.tracking_id and item.row.pk in clashing:
            item.error = PauboxAmbiguousResponse(
                200,
                title="Unexpected response",
                details=f"Paubox returned sourceTrackingId {item.tracking_id[:80]!r}, which "
                "another message already has",
            )
            item.tracking_id = None
            item.scheduled_for = None


def _not_attempted(cause: PauboxError | None) -> PauboxConnectionError:
    return PauboxConnectionError(
        f"not attempted after an earlier request failed ({cause})", may_have_been_sent=False
    )


def _send_alone(client: PauboxClient, item: Prepared) -> str:
    """One message through the endpoint its payload names; returns its tracking id.

    ``/templated_messages`` for a template, ``/schedule`` for a send time, else ``/messages``.
    A send time that has come (or is within ``SCHEDULE_MARGIN``) by now, because the message
    waited in the outbox, is sent at once: late is better than refused as "in the past".
    """
    message, extras = item.payload["message"], item.send_body_extras()
    template = item.payload.get("template")
    if template:
        return client.send_templated(message, template["name"], template["values"], **extras)
    send_at = item.payload.get("send_at")
    if send_at:
        when = parse_send_at(send_at)
        if when > datetime.now(timezone.utc) + SCHEDULE_MARGIN:
            tracking_id = client.schedule_message(message, when, **extras)
            item.scheduled_for = when
            return tracking_id
        logger.info("Paubox: message %s was due by the time it was sent; sent now", item.row.pk)
    return client.send_message(message, **extras)


def post_send(item: Prepared, status: str | None = None) -> None:
    """``post_send`` for one message; a failing receiver is logged, the record stays."""
    if status is None and item.tracking_id:
        status = "scheduled" if item.scheduled_for is not None else "sent"
    status = status or "failed"
    outcomes = dict.fromkeys(item.recipients, status)
    outcomes.update(dict.fromkeys(item.suppressed, "suppressed"))
    responses = signals.post_send.send_robust(
        sender=Message,
        message=item.email,
        record=item.row,
        tracking_id=item.tracking_id,
        error=item.error,
        outcomes=outcomes,
        metadata=item.row.metadata,
        tags=item.row.tags,
    )
    for receiver, response in responses:
        if isinstance(response, Exception):
            logger.error(
                "Paubox: a post_send receiver (%s) raised %s",
                getattr(receiver, "__qualname__", receiver),
                type(response).__name__,
            )


def record_left_out(
    left_out: Sequence[tuple[Message, dict[str, str]]],
    nobody_left: Sequence[Prepared],
    conf: PauboxSettings,
) -> None:
    """Record what the suppression list took out of a send: the deliveries of ``left_out``
    (``(row, {address: reason})``) become failed, raw status ``suppressed: <reason>``; the
    messages left with nobody (``item.error`` says so) are failed without a request, neither
    sent nor raised, with ``post_send`` saying ``suppressed``."""
    if left_out:
        records.mark_suppressed(left_out)
    by_reason: dict[str, list[Prepared]] = {}
    for item in nobody_left:
        by_reason.setdefault(str(item.error), []).append(item)
    for reason, group in by_reason.items():
        records.mark_failed([item.row for item in group], reason, conf)
        for item in group:
            tag_email(item)
            post_send(item, "suppressed")


def stamp_headers(payload: dict[str, Any], message_pk: int, conf: PauboxSettings) -> None:
    """Headers that name the row, added once it exists: ``X-Paubox-Ref`` (links webhook
    events whose tracking id is unknown here) and, when the message asked for one-click
    unsubscribe (``payload["unsubscribe"]``, the address), ``List-Unsubscribe``."""
    headers = payload.get("message", {}).get("headers")
    if not isinstance(headers, dict):
        return
    headers[REF_HEADER] = ref_value(message_pk)
    address = payload.get("unsubscribe")
    if address and not any(name.lower() == "list-unsubscribe" for name in headers):
        headers.update(unsubscribe_headers(address, message_pk, conf))


def tag_email(item: Prepared) -> None:
    """The user's handle on a send: ``paubox_tracking_id`` and ``paubox_message``."""
    if item.email is not None:
        item.email.paubox_tracking_id = item.tracking_id  # type: ignore[attr-defined]
        item.email.paubox_message = item.row  # type: ignore[attr-defined]


def is_transient(error: PauboxError | None, conf: PauboxSettings) -> bool:
    """Whether sending again later is right: Paubox was failing, not the message.

    A request that may have reached Paubox counts only with ``RESEND_AMBIGUOUS``: Paubox has no
    idempotency key, so resending it could deliver the message twice.
    """
    if isinstance(error, (PauboxConnectionError, PauboxAPIError)) and error.may_have_been_sent:
        return conf.resend_ambiguous
    return _is_outage(error)


def _chunks(items: Sequence[Prepared], size: int) -> Iterator[Sequence[Prepared]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _group_by_error(items: Sequence[Prepared]) -> list[tuple[str, list[Prepared]]]:
    groups: dict[str, list[Prepared]] = {}
    for item in items:
        groups.setdefault(str(item.error or "not sent"), []).append(item)
    return list(groups.items())


def resend_stored(message: Message) -> Message:
    """Send a stored message again as a new :class:`Message`; needs ``STORE_CONTENT``.

    Recipients a suppression left out of the first send, and those on the list now, are left
    out again."""
    if not message.payload or "message" not in message.payload:
        raise PauboxPayloadError(
            "This message's content was not stored (PAUBOX['STORE_CONTENT'] is off, to keep PHI "
            "out of the database), so it cannot be resent."
        )
    sender = message.payload["message"].get("headers", {}).get("from") or message.from_email
    # The credentials that sent it, found before the row: no key, nothing recorded.
    conf = settings_for(message.mailer, sender=sender)
    kept = [  # not those a suppression left out of the stored payload
        (kind, address, name)
        for kind, address, name, raw in message.deliveries.values_list(
            "kind", "recipient", "display_name", "raw_status"
        )
        if not raw.startswith(records.SUPPRESSED_RAW_STATUS + ":")
    ]
    payload = message.payload
    listed = records.suppressed_addresses(a for _, a, _ in kept) if conf.suppression else {}
    if listed:
        # Suppressed since it was sent (a bounce, an unsubscribe): left out now; with nobody
        # left, RecipientsSuppressed is raised with nothing recorded or sent.
        payload = {**payload, "message": without_recipients(payload["message"], listed)}
        kept = [entry for entry in kept if entry[1] not in listed]
    recipients = [(kind, address) for kind, address, _ in kept]
    names = {address: name for _, address, name in kept if name}
    (row,) = records.create_messages(
        [(message.subject, message.from_email, recipients, payload)],
        conf,
        mailers=[message.mailer],
        display_names=[names],
    )
    item = Prepared(row=row, payload=payload, recipients=[a for _, a in recipients])
    with PauboxClient(conf) as client:
        result = Dispatcher(client, conf).dispatch([item])
    row.refresh_from_db()
    error = result.first_error
    if error is not None:
        raise error
    return row
