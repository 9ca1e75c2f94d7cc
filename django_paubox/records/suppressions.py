"""The suppression list: the only code that writes ``Suppression`` rows (and reads for sends).

An address is suppressed after a hard bounce (receipt or webhook), when its recipient
unsubscribes (one click), or by staff. ``PAUBOX["SUPPRESSION"] = False`` stops hard bounces
from adding rows and sends from consulting them; unsubscribes are still recorded and signalled.
Addresses are kept lower-cased, as ``Delivery.recipient`` is. Nothing here logs an address.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from .. import signals
from ..conf import PauboxSettings, get_settings
from ..models import Delivery, Message, Suppression
from ..tracking.statuses import Status

logger = logging.getLogger(__name__)

#: ``Delivery.raw_status`` of a recipient left out of a send: ``suppressed: <reason>``.
SUPPRESSED_RAW_STATUS = "suppressed"


def normalise(address: str) -> str:
    return str(address).strip().lower()


def suppressed_addresses(addresses: Iterable[str]) -> dict[str, str]:
    """``{address: reason}`` for those of ``addresses`` on the list: one query."""
    wanted = sorted({normalise(a) for a in addresses if a})
    if not wanted:
        return {}
    return dict(Suppression.objects.filter(address__in=wanted).values_list("address", "reason"))


def mark_suppressed(left_out: Sequence[tuple[Message, dict[str, str]]]) -> None:
    """Record the recipients a send left out: their deliveries become ``failed`` with raw
    status ``suppressed: <reason>``. One UPDATE per reason, however many messages."""
    by_reason: dict[str, set[str]] = {}
    messages: set[int] = set()
    for message, addresses in left_out:
        if addresses:
            messages.add(message.pk)
        for address, reason in addresses.items():
            by_reason.setdefault(reason, set()).add(address)
    now = timezone.now()
    with transaction.atomic():
        for reason, listed in sorted(by_reason.items()):
            Delivery.objects.filter(
                message__in=sorted(messages), recipient__in=sorted(listed)
            ).update(
                status=Status.FAILED,
                raw_status=f"{SUPPRESSED_RAW_STATUS}: {reason}",
                updated_at=now,
            )


def suppress_hard_bounces(
    changes: Iterable[tuple[Delivery, str, str, str]], conf: PauboxSettings | None = None
) -> int:
    """Add the addresses of deliveries that just became ``hard_bounced``; returns how many
    rows were new. Called with the status changes of a receipt or an event: no query unless
    one of them is a hard bounce; an address already on the list keeps its row."""
    bounced = {
        normalise(delivery.recipient): delivery.message_id
        for delivery, old, new, _ in changes
        if new == Status.HARD_BOUNCED and old != Status.HARD_BOUNCED
    }
    if not bounced or not (conf or get_settings()).suppression:
        return 0
    existing = set(
        Suppression.objects.filter(address__in=sorted(bounced)).values_list("address", flat=True)
    )
    now = timezone.now()
    new = [
        Suppression(
            address=address,
            reason=Suppression.Reason.HARD_BOUNCE,
            created_at=now,
            message_id=message_id,
        )
        for address, message_id in sorted(bounced.items())
        if address not in existing
    ]
    Suppression.objects.bulk_create(new, ignore_conflicts=True)
    return len(new)


def add(
    address: str,
    reason: str = Suppression.Reason.MANUAL,
    *,
    message: Message | None = None,
    note: str = "",
) -> tuple[Suppression, bool]:
    """Put ``address`` on the list (staff, the command); an existing row is kept as it is."""
    address = normalise(address)
    return Suppression.objects.get_or_create(
        address=address,
        defaults={"reason": reason, "message": message, "note": note},
    )


def set_note(pk: int, note: str) -> None:
    """Staff's note on a row (the only field they change)."""
    Suppression.objects.filter(pk=pk).update(note=note)


def remove(addresses: Iterable[str]) -> int:
    """Take addresses off the list; returns how many rows were deleted."""
    wanted = sorted({normalise(a) for a in addresses})
    if not wanted:
        return 0
    deleted, _ = Suppression.objects.filter(address__in=wanted).delete()
    return deleted


def unsubscribe(address: str, message_id: int | None = None) -> bool:
    """Record a one-click unsubscribe; returns True when the address was not yet unsubscribed.

    An address suppressed for another reason (a hard bounce, staff) becomes ``unsubscribed``:
    the recipient's own choice says most. ``recipient_unsubscribed`` is sent once per address,
    after commit.
    """
    address = normalise(address)
    with transaction.atomic():
        if message_id is not None and not Message.objects.filter(pk=message_id).exists():
            message_id = None  # purged meanwhile
        row, created = Suppression.objects.select_for_update().get_or_create(
            address=address,
            defaults={"reason": Suppression.Reason.UNSUBSCRIBED, "message_id": message_id},
        )
        if not created:
            if row.reason == Suppression.Reason.UNSUBSCRIBED:
                return False
            row.reason = Suppression.Reason.UNSUBSCRIBED
            row.message_id = message_id or row.message_id
            row.created_at = timezone.now()
            row.save(update_fields=["reason", "message", "created_at"])
        transaction.on_commit(lambda: _send_unsubscribed(row))
    return True


def _send_unsubscribed(row: Suppression) -> None:
    kwargs: dict[str, Any] = {"address": row.address, "suppression": row}
    for receiver, result in signals.recipient_unsubscribed.send_robust(
        sender=Suppression, **kwargs
    ):
        if isinstance(result, Exception):
            logger.error(
                "Paubox: a receiver of recipient_unsubscribed (%r) raised.",
                receiver,
                exc_info=result,
            )
