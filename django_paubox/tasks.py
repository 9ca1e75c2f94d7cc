"""Celery tasks: send the outbox, sweep what a dead broker or worker left, poll receipts, purge.

Every task takes ids or nothing, never message content, so no PHI passes through the broker
or the result backend. Schedules for beat are in :mod:`django_paubox.beat`.
Rows are the source of truth, the broker only a doorbell: :func:`enqueue` hands ids over after
the rows commit, and ``sweep_outbox`` finds rows whose doorbell was lost (broker down, worker
dead). So a broker failure when enqueueing is logged, never raised to the sender.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from celery import shared_task

from . import records
from .client import shared_client
from .conf import PauboxSettings, get_settings, sender_domain
from .credentials import settings_for
from .exceptions import (
    PauboxConfigError,
    PauboxError,
    PauboxPayloadError,
    RecipientsSuppressed,
)
from .models import Delivery, Message
from .sending.dispatch import Dispatcher, DispatchResult, Prepared, record_left_out
from .sending.payload import without_recipients
from .tracking import polling, retention, schedule

logger = logging.getLogger(__name__)


def retry_delay(attempt: int, conf: PauboxSettings) -> float:
    """Exponential back-off with jitter, so that workers retrying together spread out."""
    ceiling = min(conf.outbox_retry_delay_max, conf.outbox_retry_delay * 2 ** max(attempt, 0))
    return random.uniform(ceiling / 2, ceiling)


def _message_ids(value: Any) -> list[int]:
    if not isinstance(value, (list, tuple)):
        return []
    return [v for v in value if isinstance(v, int) and not isinstance(v, bool) and v > 0]


def _valid_payload(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("message"), dict)
        and isinstance(payload.get("extras", {}), dict)
    )


def enqueue(message_ids: Sequence[int], batch_size: int) -> int:
    """Send one ``send_queued`` task per batch; returns how many messages were handed over."""
    handed = 0
    for start in range(0, len(message_ids), batch_size):
        batch = list(message_ids[start : start + batch_size])
        try:
            send_queued.apply_async(
                (batch,),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as error:  # any broker failure: the rows are safe, the sweeper retries
            logger.warning(
                "Paubox outbox: the broker is unreachable (%s); %d message(s) stay queued until "
                "sweep_outbox enqueues them",
                type(error).__name__,
                len(message_ids) - handed,
            )
            break
        handed += len(batch)
    return handed


@shared_task(name="django_paubox.send_queued", acks_late=True, reject_on_worker_lost=True)
def send_queued(message_ids: list[int]) -> dict[str, int]:
    """Send queued messages (one batch of ids) through ``/bulk_messages``.

    Claims the rows first, so a redelivered or duplicate task sends nothing twice. Transient
    failures put rows back in the queue with a back-off; permanent ones fail them at once.
    """
    ids = _message_ids(message_ids)
    given = len(message_ids) if isinstance(message_ids, (list, tuple)) else 1
    if given != len(ids):
        logger.warning("Paubox send_queued: ignored %d invalid message id(s)", given - len(ids))
    rows = records.claim_queued(ids)
    if not rows:
        return {"sent": 0, "failed": 0, "requeued": 0, "skipped": len(ids)}
    conf = get_settings()
    broken = [row for row in rows if not _valid_payload(row.payload)]
    if broken:
        logger.warning("Paubox send_queued: %d message(s) without a valid payload", len(broken))
        records.mark_failed(broken, "The stored payload is missing or invalid", conf)
    recipients: dict[int, list[str]] = {}
    suppressed: dict[int, dict[str, str]] = {}  # left out when queued (suppression list)
    for message_id, address, raw in Delivery.objects.filter(message__in=rows).values_list(
        "message_id", "recipient", "raw_status"
    ):
        recipients.setdefault(message_id, []).append(address)
        if raw.startswith(records.SUPPRESSED_RAW_STATUS + ":"):
            suppressed.setdefault(message_id, {})[address] = raw.partition(": ")[2]
    prepared = [
        Prepared(
            row=row,
            payload=row.payload or {},
            recipients=recipients.get(row.pk, []),
            suppressed=suppressed.get(row.pk, {}),
        )
        for row in rows
        if row not in broken
    ]
    nobody_left = _leave_out_suppressed(prepared, conf) if conf.suppression else []
    prepared = [item for item in prepared if item not in nobody_left]
    delay = retry_delay(max((row.attempts for row in rows), default=0), conf)
    groups = _by_credentials(prepared, conf)
    result = DispatchResult(failed=[item for item in prepared if item.error is not None])
    result.failed.extend(nobody_left)
    for domain_conf, group in groups.items():
        try:
            client = shared_client(domain_conf)
        except PauboxConfigError as error:  # fail the rows, do not loop
            records.mark_failed([p.row for p in group], error, conf)
            result.failed.extend(group)
            continue
        sent = Dispatcher(client, domain_conf, requeue_transient=True, retry_delay=delay).dispatch(
            group
        )
        result.sent.extend(sent.sent)
        result.failed.extend(sent.failed)
        result.requeued.extend(sent.requeued)
    if result.requeued:
        requeued = [item.row.pk for item in result.requeued]
        try:
            send_queued.apply_async((requeued,), countdown=delay)
        except Exception as error:
            logger.warning(
                "Paubox send_queued: could not schedule the retry (%s); the sweeper will",
                type(error).__name__,
            )
    return {
        "sent": len(result.sent),
        "failed": len(result.failed) + len(broken),
        "requeued": len(result.requeued),
        "skipped": len(ids) - len(rows),
    }


def _leave_out_suppressed(prepared: list[Prepared], conf: PauboxSettings) -> list[Prepared]:
    """Check the suppression list again at send time, one query per batch: an address may have
    bounced or unsubscribed since its message was queued (a retry can come hours later).

    Recipients listed now, and those left out before, are taken out of each payload (the
    stored one is left as it is: this runs on every attempt). Newly left-out deliveries are
    recorded as suppressed; a message left with nobody is failed, with ``post_send``, and
    returned.
    """
    listed = records.suppressed_addresses(a for item in prepared for a in item.recipients)
    newly: list[tuple[Message, dict[str, str]]] = []
    nobody_left: list[Prepared] = []
    for item in prepared:
        now_listed = {
            a: listed[a] for a in item.recipients if a in listed and a not in item.suppressed
        }
        if now_listed:
            newly.append((item.row, now_listed))
            item.suppressed.update(now_listed)
        if not item.suppressed or not isinstance(item.payload.get("message"), dict):
            continue
        try:
            item.payload["message"] = without_recipients(item.payload["message"], item.suppressed)
        except RecipientsSuppressed as error:
            item.error = error
            nobody_left.append(item)
    record_left_out(newly, nobody_left, conf)
    return nobody_left


def _by_credentials(
    prepared: list[Prepared], conf: PauboxSettings
) -> dict[PauboxSettings, list[Prepared]]:
    """Group by the credentials that queued each message (``Message.mailer``), resolved once
    per identity.

    Credentials gone from the settings since (a ``MAILERS`` alias or a ``DOMAINS`` entry
    removed) fail their messages with a reason naming them: never another key.
    """
    resolved: dict[tuple[str, str], PauboxSettings | PauboxError] = {}
    groups: dict[PauboxSettings, list[Prepared]] = {}
    failed: dict[tuple[str, str], list[Prepared]] = {}
    for item in prepared:
        # Rows queued before 0.2 recorded no identity: routed by From domain, as then.
        key = (item.row.mailer, "" if item.row.mailer else sender_domain(item.sender))
        if key not in resolved:
            try:
                resolved[key] = settings_for(item.row.mailer, sender=item.sender)
            except (PauboxConfigError, PauboxPayloadError) as error:
                resolved[key] = error
        found = resolved[key]
        if isinstance(found, PauboxError):
            item.error = found
            failed.setdefault(key, []).append(item)
        else:
            groups.setdefault(found, []).append(item)
    for key, items in failed.items():
        reason = resolved[key]
        assert isinstance(reason, PauboxError)
        logger.warning(
            "Paubox send_queued: %d message(s) of %r failed: %s", len(items), key[0], reason
        )
        records.mark_failed([item.row for item in items], reason, conf)
    return groups


@shared_task(name="django_paubox.sweep_outbox", ignore_result=True)
def sweep_outbox() -> dict[str, int]:
    """Re-enqueue messages queued too long, settle those whose worker died mid-send."""
    conf = get_settings()
    queued, claimed = records.stale_outbox(conf)
    requeued = records.release_stale_claims(claimed, conf)
    ids = queued + requeued
    # Restart their staleness clock first: a worker's SKIP LOCKED claim would pass over rows
    # that this UPDATE still held locked.
    records.mark_enqueued(ids)
    handed = enqueue(ids, conf.batch_size)
    if ids or claimed:
        logger.info(
            "Paubox sweep_outbox: %d re-enqueued, %d stale claim(s) settled", handed, len(claimed)
        )
    return {"reenqueued": handed, "stale_claims": len(claimed)}


@shared_task(name="django_paubox.refresh_receipts", ignore_result=True)
def refresh_receipts(limit: int | None = 1000) -> dict[str, int]:
    """Poll ``/message_receipt`` for messages whose deliveries are not final and are due."""
    schedule.stop_expired()
    summary = polling.poll_receipts(schedule.due_messages(limit=limit))
    return {k: v for k, v in asdict(summary).items() if isinstance(v, int)}


@shared_task(name="django_paubox.purge", ignore_result=True)
def purge(older_than_days: int | None = None) -> dict[str, int]:
    """Apply retention: delete messages, deliveries and events older than the cutoff."""
    days = older_than_days or get_settings().purge_after_days
    if not days:
        return {"deleted": 0}
    summary = retention.purge(timedelta(days=days))
    return {k: v for k, v in asdict(summary).items() if isinstance(v, int)}
