"""Scheduled sends in the sandbox: ``/schedule`` and ``/schedule/{sourceTrackingId}[/cancel]``.

What Paubox documents (its newest API): ``POST /schedule`` with ``data.message`` and
``data.scheduled_at``; ``GET`` and ``PATCH /schedule/{sourceTrackingId}``;
``POST /schedule/{sourceTrackingId}/cancel``. Everything else is this sandbox's choice, made so
that a client written against it stays tolerant:

- ``scheduled_at`` is ISO 8601 with an offset (``2026-09-14T09:00:00Z``; RFC 2822 dates are
  read too); a time without a zone, or not in the future, is a 400.
- ``POST /schedule`` answers like a send, ``{"sourceTrackingId", "data": "Service OK"}``, plus
  ``scheduled_at``. ``GET``, ``PATCH`` and ``cancel`` answer
  ``{"sourceTrackingId", "data": {"status", "scheduled_at", "message"}}`` with ``status``
  ``scheduled``, ``sent`` or ``cancelled``; ``GET /schedule`` lists them all (a bare array).
- ``PATCH`` takes ``{"data": {"scheduled_at": ...}}``; changing or cancelling a send that was
  already sent or cancelled is a 422; an unknown id a 404 (Paubox's error shape).
- At its time the message is captured as sent (endpoint ``schedule``) under the tracking id
  returned at scheduling, and its deliveries progress and fire webhooks like any other. Until
  then ``GET /message_receipt`` answers 404, as for an id Paubox does not know yet.
  :meth:`SandboxServer.send_scheduled_now` sends every pending one at once, for tests.

The sends themselves are kept in :mod:`.schedule_store`; :class:`~.core.Sandbox` sends them.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from ..exceptions import SandboxAnswer
from .core import Sandbox
from .routing import ApiRequest, bad_request, errors, json_data
from .schedule_store import CANCELLED, SCHEDULED, ScheduledSend
from .times import parse_time
from .validation import validate_message

ENDPOINTS = frozenset({"schedule"})


def methods(endpoint: str, rest: str) -> frozenset[str]:
    """Methods defined for ``/endpoint{rest}`` (none: no such path)."""
    if endpoint != "schedule":
        return frozenset()
    parts = [p for p in rest.split("/") if p]
    if not parts:
        return frozenset({"GET", "POST"})
    if len(parts) == 1:
        return frozenset({"GET", "PATCH"})
    if len(parts) == 2 and parts[1] == "cancel":
        return frozenset({"POST"})
    return frozenset()


def handle(sandbox: Sandbox, request: ApiRequest) -> tuple[int, Any]:
    parts = request.segments
    if not parts:
        if request.method == "GET":
            return 200, [send.to_dict() for send in sandbox.schedule_store.all()]
        return _schedule(sandbox, request.body)
    send = sandbox.schedule_store.get(parts[0])
    if send is None:
        raise errors(404, "Not Found", "Scheduled message was not found", sourceTrackingId=parts[0])
    if request.method == "GET":
        return 200, send.to_dict()
    if request.method == "PATCH":
        return _reschedule(sandbox, send, request.body)
    return _cancel(sandbox, send)


def _schedule(sandbox: Sandbox, body: bytes) -> tuple[int, Any]:
    data = json_data(body)
    message = data.get("message")
    problems = ["data.message is missing"] if message is None else validate_message(message)
    when = _future_time(data.get("scheduled_at"), problems)
    if problems or when is None or not isinstance(message, dict):
        raise bad_request(*problems)
    options = {k: v for k, v in data.items() if k not in ("message", "scheduled_at")}
    send = ScheduledSend(str(uuid.uuid4()), message, when, options)
    sandbox.schedule_store.add(send)
    sandbox.arm(send)
    return 200, {
        "sourceTrackingId": send.tracking_id,
        "data": "Service OK",
        "scheduled_at": send.to_dict()["data"]["scheduled_at"],
    }


def _reschedule(sandbox: Sandbox, send: ScheduledSend, body: bytes) -> tuple[int, Any]:
    data = json_data(body)
    problems: list[str] = []
    when = _future_time(data.get("scheduled_at"), problems)
    if problems or when is None:
        raise bad_request(*problems)
    with sandbox.schedule_store.lock:
        if send.status != SCHEDULED:
            raise _conflict(send)
        send.scheduled_at = when
        send.version += 1
    sandbox.arm(send)
    return 200, send.to_dict()


def _cancel(sandbox: Sandbox, send: ScheduledSend) -> tuple[int, Any]:
    with sandbox.schedule_store.lock:
        if send.status != SCHEDULED:
            raise _conflict(send)
        send.status = CANCELLED
    return 200, send.to_dict()


def _conflict(send: ScheduledSend) -> SandboxAnswer:
    return errors(
        422,
        "Unprocessable Entity",
        f"The scheduled message was already {send.status}",
        sourceTrackingId=send.tracking_id,
    )


def _future_time(value: Any, problems: list[str]) -> datetime | None:
    """``scheduled_at`` as an aware datetime in the future, or None with the problem noted."""
    if value is None:
        problems.append("data.scheduled_at is missing")
        return None
    when = parse_time(value) if isinstance(value, str) else None
    if when is None:
        problems.append("data.scheduled_at must be an ISO 8601 time with a time zone")
        return None
    if when <= datetime.now(timezone.utc):
        problems.append("data.scheduled_at must be in the future")
        return None
    return when
