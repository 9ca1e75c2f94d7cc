"""Polling ``/message_receipt``: asking Paubox about many messages at once, and applying the
answers.

Paubox does not retry webhooks, so polling is the backstop that makes every delivery reach its
final status eventually. Only HTTP runs in worker threads (a bounded
:class:`~concurrent.futures.ThreadPoolExecutor`); every database read and write happens in the
calling thread, in batches, so worker threads never open database connections. Which messages
are due, and when each is asked about next, is :mod:`~django_paubox.tracking.schedule`'s (its
names are importable from here too). Nothing here logs subjects or content: tracking ids and
counts only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .. import records
from ..conf import PauboxSettings, get_settings, sender_domain
from ..credentials import settings_for
from ..exceptions import (
    CredentialsNotFound,
    PauboxAPIError,
    PauboxConfigError,
    PauboxError,
    PauboxPayloadError,
)
from ..models import Delivery, Message
from . import statuses
from .schedule import (
    LATE_INTERVAL,
    SCHEDULE,
    awaiting_news,
    due_messages,
    final_statuses,
    next_check_at,
    stop_expired,
)

__all__ = [
    "LATE_INTERVAL",
    "NOT_FOUND_GRACE",
    "SCHEDULE",
    "RefreshSummary",
    "awaiting_news",
    "due_messages",
    "final_statuses",
    "next_check_at",
    "poll_receipts",
    "stop_expired",
]

logger = logging.getLogger(__name__)


#: A 404 this soon after sending means "Paubox does not know it yet"; later it is an error.
NOT_FOUND_GRACE = timedelta(minutes=30)

#: Receipts applied per database transaction.
WRITE_BATCH = 100

#: Words of Paubox's "Internal error. Please check back later." in an error answer.
CHECK_BACK_LATER = "check back later"

ProgressCallback = Callable[[int, int], None]


@dataclass
class RefreshSummary:
    """What one refresh did; the command prints it and the Celery task returns it."""

    #: Messages whose receipt was requested.
    checked: int = 0
    #: Deliveries whose record changed (status, times, counters).
    changed: int = 0
    #: Messages Paubox does not know yet (404 just after sending, "Internal error. Please
    #: check back later.", or no deliveries listed yet): asked again later, not an error.
    not_found_yet: int = 0
    #: Messages whose receipt could not be had (other API errors, network failures).
    errors: int = 0
    #: Messages whose deliveries are all final now: polling them stops.
    finished: int = 0
    #: Messages given up on: still not final, but past ``RECEIPT_MAX_AGE_HOURS``.
    expired: int = 0
    #: Tracking ids of the messages counted in ``errors`` (for logs and the command).
    error_tracking_ids: list[str] = field(default_factory=list)
    #: Why messages could not be asked about at all, by credentials identity
    #: (``Message.mailer``): their credentials are missing or gone from the settings.
    unresolved: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "changed": self.changed,
            "not_found_yet": self.not_found_yet,
            "errors": self.errors,
            "finished": self.finished,
            "expired": self.expired,
        }


# --- Polling ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    pk: int
    tracking_id: str
    sent_at: datetime
    #: ``Message.mailer``: whose credentials ask about it.
    mailer: str = ""
    from_email: str = ""

    @property
    def credentials_key(self) -> tuple[str, str]:
        # Rows sent before 0.2 recorded no identity: the key of their From domain, as then.
        return (self.mailer, "" if self.mailer else sender_domain(self.from_email))


@dataclass
class _Result:
    target: _Target
    body: Any = None
    error: BaseException | None = None


def _targets(messages: Iterable[Message] | QuerySet[Message]) -> list[_Target]:
    """Only what polling needs, read once, so no queryset stays open while we write."""
    rows: Iterable[tuple[Any, ...]]
    if isinstance(messages, QuerySet):
        rows = messages.values_list(
            "pk", "tracking_id", "sent_at", "created_at", "mailer", "from_email"
        )
    else:
        rows = (
            (m.pk, m.tracking_id, m.sent_at, m.created_at, m.mailer, m.from_email) for m in messages
        )
    seen: set[int] = set()
    targets = []
    for pk, tracking_id, sent_at, created_at, mailer, from_email in rows:
        if not tracking_id or pk in seen:
            continue
        seen.add(pk)
        targets.append(_Target(pk, tracking_id, sent_at or created_at, mailer, from_email))
    return targets


def poll_receipts(
    messages: Iterable[Message] | QuerySet[Message],
    *,
    conf: PauboxSettings | None = None,
    client: Any = None,
    progress: ProgressCallback | None = None,
    batch_size: int = WRITE_BATCH,
) -> RefreshSummary:
    """Ask Paubox for the receipts of ``messages`` concurrently and apply them.

    At most ``RECEIPT_CONCURRENCY`` requests are in flight; receipts are applied in the calling
    thread, ``batch_size`` per transaction, forward-only (:func:`records.apply_receipts`).
    Each message is asked about with the credentials that sent it (``Message.mailer``): one
    :class:`~django_paubox.client.PauboxClient` per identity (closed at the end). Messages
    whose credentials are gone from the settings stop being polled, with the reason recorded
    (:func:`records.stop_polling`), and count as errors. A given ``client`` asks about every
    message (tests) and is left open. ``conf`` rules polling itself (concurrency, schedule);
    ``progress(done, total)`` is called after each answer.
    """
    conf = conf or get_settings()
    targets = _targets(messages)
    summary = RefreshSummary()
    if not targets:
        return summary
    if client is not None:
        _poll(targets, client, conf, summary, progress, max(1, batch_size))
    else:
        _poll_by_credentials(targets, conf, summary, progress, max(1, batch_size))
    logger.info(
        "Paubox receipts: checked %d, changed %d, not found yet %d, errors %d, finished %d, "
        "expired %d",
        summary.checked,
        summary.changed,
        summary.not_found_yet,
        summary.errors,
        summary.finished,
        summary.expired,
    )
    return summary


def _poll_by_credentials(
    targets: list[_Target],
    conf: PauboxSettings,
    summary: RefreshSummary,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    """Poll each group of messages sent with the same credentials with its own client."""
    from ..client import PauboxClient

    groups: dict[tuple[str, str], list[_Target]] = {}
    for target in targets:
        groups.setdefault(target.credentials_key, []).append(target)
    done_before = 0

    def shifted(done: int, total: int) -> None:
        assert progress is not None
        progress(done_before + done, len(targets))

    for group in groups.values():
        first = group[0]
        try:
            credentials = settings_for(first.mailer, sender=first.from_email)
            client = PauboxClient(
                replace(credentials, receipt_concurrency=conf.receipt_concurrency)
            )
        except (PauboxConfigError, PauboxPayloadError) as error:
            _credentials_gone(group, error, summary)
        else:
            records.resume_polling([target.pk for target in group])
            try:
                _poll(group, client, conf, summary, shifted if progress else None, batch_size)
            finally:
                client.close()
        done_before += len(group)


def _credentials_gone(group: list[_Target], error: PauboxError, summary: RefreshSummary) -> None:
    """No credentials to ask with (never another key). Credentials gone from the settings (a
    mailer, domain or label removed) stop these messages' polling with the reason on the row;
    incomplete ones (a key not set) leave them due, to be polled once the key is back."""
    identity = group[0].mailer or "default"
    logger.warning(
        "Paubox receipts: not polling %d message(s) of %r: %s", len(group), identity, error
    )
    summary.unresolved[identity] = str(error)
    if isinstance(error, CredentialsNotFound):
        records.stop_polling([target.pk for target in group], str(error))
    for target in group:
        summary.checked += 1
        _count_error(summary, target.tracking_id, error)


def _poll(
    targets: list[_Target],
    client: Any,
    conf: PauboxSettings,
    summary: RefreshSummary,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    workers = max(1, int(conf.receipt_concurrency))
    # A short queue ahead of the workers keeps them busy while this thread writes, without
    # holding a future per message in memory.
    window = workers * 4
    remaining = iter(targets)
    pending: dict[Future[Any], _Target] = {}
    answered: list[_Result] = []
    done_count = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="paubox-receipt")

    def fill() -> None:
        while len(pending) < window:
            target = next(remaining, None)
            if target is None:
                return
            pending[pool.submit(client.get_receipt, target.tracking_id)] = target

    try:
        fill()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                target = pending.pop(future)
                error = future.exception()
                answered.append(
                    _Result(target, error=error)
                    if error is not None
                    else _Result(target, body=future.result())
                )
            fill()
            done_count += len(finished)
            if len(answered) >= batch_size:
                _apply_batch(answered, conf, summary)
                answered = []
            if progress is not None:
                progress(done_count, len(targets))
        if answered:
            _apply_batch(answered, conf, summary)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _asks_to_check_back(body: Any) -> bool:
    """True when a receipt says nothing yet: no deliveries, or Paubox's "check back later"."""
    try:
        deliveries = body["data"]["message"]["message_deliveries"]
    except (KeyError, TypeError):
        return True
    if not isinstance(deliveries, list) or not deliveries:
        return True
    for item in deliveries:
        status = item.get("status") if isinstance(item, dict) else None
        raw = status.get("deliveryStatus") if isinstance(status, dict) else None
        if isinstance(raw, str) and statuses.from_delivery_status(raw).retry_later:
            return True
    return False


def _is_later(error: BaseException, sent_at: datetime, now: datetime) -> bool:
    """A 404 just after sending, or Paubox's "Internal error. Please check back later."."""
    if not isinstance(error, PauboxAPIError):
        return False
    said = f"{error.title} {error.details}".lower()
    if CHECK_BACK_LATER in said:
        return True
    return error.status == 404 and now - sent_at < NOT_FOUND_GRACE


def _apply_batch(results: list[_Result], conf: PauboxSettings, summary: RefreshSummary) -> None:
    """Apply one batch of answers in one transaction; reschedule every message in it.

    Message rows are locked in primary-key order first (as :func:`records.apply_receipts`
    does), so two refreshes running at once serialise per message instead of deadlocking, and
    never regress a status (applying is forward-only besides).
    """
    results = sorted(results, key=lambda r: r.target.pk)
    later_pks: list[int] = []
    with transaction.atomic():
        now = timezone.now()
        locked = {
            m.pk: m
            for m in Message.objects.select_for_update()
            .filter(pk__in=[r.target.pk for r in results])
            .order_by("pk")
        }
        touched: list[Message] = []
        answered: list[tuple[Message, _Result]] = []
        for result in results:
            message = locked.get(result.target.pk)
            if message is None:  # purged while we asked
                continue
            summary.checked += 1
            touched.append(message)
            if result.error is None:
                answered.append((message, result))
            elif _is_later(result.error, result.target.sent_at, now):
                summary.not_found_yet += 1
                later_pks.append(message.pk)
            else:
                _count_error(summary, result.target.tracking_id, result.error)
        for (_, result), changed in zip(answered, _apply_receipts(answered, summary), strict=True):
            if changed is None:
                continue
            summary.changed += len(changed)
            if _asks_to_check_back(result.body):
                summary.not_found_yet += 1
        if later_pks:
            Message.objects.filter(pk__in=later_pks).update(receipt_checked_at=now)
        _reschedule(touched, now, conf, summary)


def _apply_receipts(
    answered: list[tuple[Message, _Result]], summary: RefreshSummary
) -> list[list[Delivery] | None]:
    """All receipts of a batch at once; should that fail, one by one, so that one receipt we
    cannot apply costs only itself (``None`` in its place, counted as an error)."""
    if not answered:
        return []
    try:
        with transaction.atomic():
            return list(records.apply_receipts([(m, r.body) for m, r in answered]))
    except Exception:
        logger.warning("Paubox receipts: a batch failed to apply; applying one by one")
    out: list[list[Delivery] | None] = []
    for message, result in answered:
        try:
            with transaction.atomic():
                out.append(records.apply_receipt(message, result.body))
        except Exception as error:
            logger.exception(
                "Paubox receipt for %s could not be applied (%s)",
                result.target.tracking_id,
                type(error).__name__,
            )
            _count_error(summary, result.target.tracking_id, error)
            out.append(None)
    return out


def _count_error(summary: RefreshSummary, tracking_id: str, error: BaseException) -> None:
    summary.errors += 1
    summary.error_tracking_ids.append(tracking_id)
    status = getattr(error, "status", None)
    logger.warning(
        "Paubox receipt for %s failed: %s%s",
        tracking_id,
        type(error).__name__,
        f" (HTTP {status})" if status else "",
    )


def _reschedule(
    messages: list[Message], now: datetime, conf: PauboxSettings, summary: RefreshSummary
) -> None:
    if not messages:
        return
    still_open = set(
        Delivery.objects.filter(awaiting_news(conf), message__in=[m.pk for m in messages])
        .values_list("message_id", flat=True)
        .distinct()
    )
    for message in messages:
        if message.pk not in still_open:
            message.next_receipt_check_at = None
            summary.finished += 1
            continue
        message.next_receipt_check_at = next_check_at(
            message.sent_at or message.created_at, now, conf
        )
        if message.next_receipt_check_at is None:
            summary.expired += 1
            logger.info("Paubox receipts: giving up on %s (too old)", message.tracking_id)
    records.save_next_checks(messages)


def __getattr__(name: str) -> object:
    """``refresh_receipts`` was this function's name before 0.2 (it clashed with the task)."""
    if name == "refresh_receipts":
        import warnings

        warnings.warn(
            "refresh_receipts() is now django_paubox.tracking.polling.poll_receipts()",
            DeprecationWarning,
            stacklevel=2,
        )
        return poll_receipts
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
