"""The floor: the least a correct webhook receiver must do per event, written plainly.

The webhook benchmark runs this view and the real webhook (``django_paubox.urls``) back to back
in the same gunicorn, on the same middleware, database and load, and reports the real one as a
ratio of this one. Per event it:

1. checks the secret in the path (constant time) and that the request is a POST;
2. parses the JSON and reads the few fields it needs (400 if they are not there);
3. in one transaction, inserts the event once (``INSERT ... ON CONFLICT (dedupe_key) DO
   NOTHING``, linked to its message by a subquery on the tracking id), and, when the row is new
   and its message known, moves the delivery forward with one rank-guarded ``UPDATE`` (the
   forward-only rule of DESIGN.md: a status replaces only a lower-ranked one; an open sets the
   first ``opened_at``).

It writes the same table and columns as the real webhook (the body is stored as received), so
rows, indexes and the unique key cost both alike. Deliberately left out, because the floor is
defined as the least per event: the message's aggregate status, signals, logging, the IP
allowlist, body size limits, and matching an event that names no recipient. Not for production.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt

from django_paubox.models import Delivery, Message, WebhookEvent

#: The forward-only order of DESIGN.md (equal ranks never replace each other).
RANK = {
    "queued": 0,
    "sent": 1,
    "processing": 2,
    "soft_bounced": 3,
    "delivered": 4,
    "hard_bounced": 4,
    "failed": 4,
}
#: Paubox's events that set a status; ``api_mail_log_opened`` sets ``opened_at`` instead.
STATUS_OF_EVENT = {
    "api_mail_log_delivered": "delivered",
    "api_mail_log_temporary_failure": "soft_bounced",
    "api_mail_log_permanent_failure": "hard_bounced",
}
OPENED = "api_mail_log_opened"


def _secret_ok(candidate: str) -> bool:
    configured = settings.PAUBOX.get("WEBHOOK_SECRET") or ()
    secrets = [configured] if isinstance(configured, str) else list(configured)
    given = candidate.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, str(secret).encode())
    return matched


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(key)
    return value.strip()


def _read(body: bytes) -> tuple[str, dict[str, Any], str]:
    """(event name, payload, body as text); ``ValueError`` when it is not a Paubox event."""
    try:
        text = body.decode("utf-8")
        data = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise ValueError("json") from exc
    if "\\u0000" in text or not isinstance(data, dict):
        raise ValueError("body")
    name, payload = data.get("event_name"), data.get("payload")
    if not isinstance(name, str) or not name or not isinstance(payload, dict):
        raise ValueError("event")
    return name, payload, text


@functools.cache
def _sql() -> dict[str, str]:
    q = connection.ops.quote_name
    event, message, delivery = (q(m._meta.db_table) for m in (WebhookEvent, Message, Delivery))
    payload = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    rank = "CASE status " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in RANK.items()) + " END"
    return {
        "insert": (
            f"INSERT INTO {event} (event_name, dedupe_key, source_tracking_id, message_id, "  # noqa: S608
            "recipient, occurred_at, received_at, payload) VALUES (%s, %s, %s, "
            f"(SELECT id FROM {message} WHERE tracking_id = %s), %s, %s, %s, {payload}) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, message_id"
        ),
        "status": (
            f"UPDATE {delivery} SET status = %s, raw_status = %s, updated_at = %s, "  # noqa: S608
            "delivered_at = CASE WHEN %s = 'delivered' THEN COALESCE(delivered_at, %s) "
            "ELSE delivered_at END "
            f"WHERE message_id = %s AND recipient = %s AND COALESCE({rank}, -1) < %s"
        ),
        "opened": (
            f"UPDATE {delivery} SET opened_at = %s, updated_at = %s "  # noqa: S608
            "WHERE message_id = %s AND recipient = %s "
            "AND (opened_at IS NULL OR opened_at > %s)"
        ),
    }


@csrf_exempt
def webhook_floor(request: HttpRequest, secret: str) -> HttpResponse:
    """Store one Paubox event once and move its delivery forward (see the module docstring)."""
    if not _secret_ok(secret):
        return JsonResponse({"error": "Not found."}, status=404)
    if request.method != "POST":
        return JsonResponse({"error": "POST only."}, status=405)
    try:
        name, payload, text = _read(request.body)
        tracking_id = _text(payload, "source_tracking_id")
        to = _text(payload, "to")
        occurred_text = _text(payload, "time")
        occurred = parse_datetime(occurred_text) if occurred_text else None
    except ValueError:
        return JsonResponse({"error": "Not a Paubox event."}, status=400)
    identity = ["paubox-event", name, payload.get("id"), occurred_text, tracking_id, to]
    key = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
    recipient = to.lower()
    now = timezone.now()
    sql = _sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            sql["insert"], [name, key, tracking_id, tracking_id, recipient, occurred, now, text]
        )
        row = cursor.fetchone()
        message_id = row[1] if row is not None else None
        if message_id is not None and name in STATUS_OF_EVENT:
            status = STATUS_OF_EVENT[name]
            when = occurred or now
            cursor.execute(
                sql["status"],
                [status, name, now, status, when, message_id, recipient, RANK[status]],
            )
        elif message_id is not None and name == OPENED:
            when = occurred or now
            cursor.execute(sql["opened"], [when, now, message_id, recipient, when])
    return JsonResponse({"status": "ok"})
