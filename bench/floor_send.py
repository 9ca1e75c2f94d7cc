"""The floor of a recorded send: the least SQL that keeps DESIGN.md's "nothing lost" promise.

A ``Message`` row and its ``Delivery`` rows must exist before Paubox is called, and the
tracking id (state ``sent``, deliveries ``sent``) must be saved after: two transactions, one on
each side of the call. On PostgreSQL each is a single statement (a data-modifying ``WITH``), so
the floor is 2 statements in 2 transactions; SQLite has no data-modifying ``WITH``, so there it
takes two statements inside ``BEGIN ... COMMIT`` on each side. The statements benchmark counts
this function with the same counter as ``send_mail`` and reports the ratio. Not for production:
one recipient, no validation, no error handling.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from django_paubox.models import Delivery, Message

from .wire import Wire


def _tables() -> tuple[str, str]:
    q = connection.ops.quote_name
    return q(Message._meta.db_table), q(Delivery._meta.db_table)


def _record(subject: str, sender: str, recipient: str) -> int:
    message, delivery = _tables()
    now = timezone.now()
    domain = sender.rsplit("@", 1)[-1].rstrip(">")
    values: list[Any] = ["sending", "queued", subject, sender, domain, 1, now, "", 0]
    insert_message = (
        f"INSERT INTO {message} (state, status, subject, from_email, sender_domain, "  # noqa: S608
        "recipient_count, created_at, error, attempts, mailer, metadata, tags) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, '', '{}', '[]')"
    )
    delivery_columns = (
        "(message_id, recipient, display_name, kind, status, raw_status, via_secure_portal, "
        "updated_at)"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH m AS ({insert_message} RETURNING id) "  # noqa: S608
                f"INSERT INTO {delivery} {delivery_columns} "
                "SELECT id, %s, '', 'to', 'queued', '', false, %s FROM m RETURNING message_id",
                [*values, recipient, now],
            )
            return int(cursor.fetchone()[0])
        with transaction.atomic():
            cursor.execute(insert_message + " RETURNING id", values)
            message_id = int(cursor.fetchone()[0])
            cursor.execute(
                f"INSERT INTO {delivery} {delivery_columns} "  # noqa: S608
                "VALUES (%s, %s, '', 'to', 'queued', '', false, %s)",
                [message_id, recipient, now],
            )
            return message_id


def _mark_sent(message_id: int, tracking_id: str) -> None:
    message, delivery = _tables()
    now = timezone.now()
    update_message = (
        f"UPDATE {message} SET tracking_id = %s, state = 'sent', status = 'sent', "  # noqa: S608
        "sent_at = %s, attempts = 1 WHERE id = %s"
    )
    update_delivery = (
        f"UPDATE {delivery} SET status = 'sent', updated_at = %s WHERE message_id = %s"  # noqa: S608
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH d AS ({update_delivery}) {update_message}",
                [now, message_id, tracking_id, now, message_id],
            )
            return
        with transaction.atomic():
            cursor.execute(update_message, [tracking_id, now, message_id])
            cursor.execute(update_delivery, [now, message_id])


def floor_send(wire: Wire, body: bytes, *, subject: str, sender: str, recipient: str) -> str:
    """Record, POST ``body`` (a prebuilt ``/messages`` body) on ``wire``, save the tracking id."""
    message_id = _record(subject, sender, recipient)
    answer = json.loads(wire.post("messages", body))
    tracking_id = str(answer["sourceTrackingId"])
    _mark_sent(message_id, tracking_id)
    return tracking_id
