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
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from .templates import ApiAnswer, bad_request, errors, iso, json_data
from .validation import validate_message

if TYPE_CHECKING:
    from .server import SandboxServer

ENDPOINTS = frozenset({"schedule"})
SCHEDULED, SENT, CANCELLED = "scheduled", "sent", "cancelled"


@dataclass
class ScheduledSend:
    """One message Paubox holds until ``scheduled_at``."""

    tracking_id: str
    message: dict[str, Any]
    scheduled_at: datetime
    options: dict[str, Any] = field(default_factory=dict)
    status: str = SCHEDULED
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    #: Bumped by each reschedule, so that the timer of an earlier time does nothing.
    version: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sourceTrackingId": self.tracking_id,
            "data": {
                "status": self.status,
                "scheduled_at": iso(self.scheduled_at),
                "message": self.message,
            },
        }


class ScheduleStore:
    """The sandbox's scheduled sends, oldest first; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._sends: dict[str, ScheduledSend] = {}

    def all(self) -> list[ScheduledSend]:
        with self.lock:
            return list(self._sends.values())

    def get(self, tracking_id: str) -> ScheduledSend | None:
        with self.lock:
            return self._sends.get(tracking_id)

    def add(self, send: ScheduledSend) -> None:
        with self.lock:
            self._sends[send.tracking_id] = send

    def take_due(self, tracking_id: str, version: int | None) -> ScheduledSend | None:
        """Mark one send ``sent`` if it is still pending (at ``version``, if given)."""
        with self.lock:
            send = self._sends.get(tracking_id)
            if send is None or send.status != SCHEDULED:
                return None
            if version is not None and send.version != version:
                return None
            send.status = SENT
            return send

    def reset(self) -> None:
        with self.lock:
            self._sends.clear()


# --- Routing ----------------------------------------------------------------------------------


def allows(method: str, endpoint: str, rest: str) -> bool:
    if endpoint != "schedule":
        return False
    parts = [p for p in rest.split("/") if p]
    if not parts:
        return method in ("GET", "POST")
    if len(parts) == 1:
        return method in ("GET", "PATCH")
    return len(parts) == 2 and parts[1] == "cancel" and method == "POST"


def handle(
    sandbox: SandboxServer, method: str, endpoint: str, rest: str, body: bytes, content_type: str
) -> tuple[int, Any]:
    try:
        parts = [p for p in rest.split("/") if p]
        if not parts:
            if method == "GET":
                return 200, [send.to_dict() for send in sandbox.schedule_store.all()]
            return _schedule(sandbox, body)
        send = sandbox.schedule_store.get(parts[0])
        if send is None:
            answer = errors(404, "Not Found", "Scheduled message was not found")
            answer.body["sourceTrackingId"] = parts[0]
            raise answer
        if method == "GET":
            return 200, send.to_dict()
        if method == "PATCH":
            return _reschedule(sandbox, send, body)
        return _cancel(sandbox, send)
    except ApiAnswer as answer:
        return answer.status, answer.body


def _schedule(sandbox: SandboxServer, body: bytes) -> tuple[int, Any]:
    data = json_data(body)
    message = data.get("message")
    problems = ["data.message is missing"] if message is None else validate_message(message)
    when = _future_time(data.get("scheduled_at"), problems)
    if problems or when is None or not isinstance(message, dict):
        raise bad_request(*problems)
    options = {k: v for k, v in data.items() if k not in ("message", "scheduled_at")}
    send = ScheduledSend(str(uuid.uuid4()), message, when, options)
    sandbox.schedule_store.add(send)
    _arm(sandbox, send)
    return 200, {
        "sourceTrackingId": send.tracking_id,
        "data": "Service OK",
        "scheduled_at": iso(when),
    }


def _reschedule(sandbox: SandboxServer, send: ScheduledSend, body: bytes) -> tuple[int, Any]:
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
    _arm(sandbox, send)
    return 200, send.to_dict()


def _cancel(sandbox: SandboxServer, send: ScheduledSend) -> tuple[int, Any]:
    with sandbox.schedule_store.lock:
        if send.status != SCHEDULED:
            raise _conflict(send)
        send.status = CANCELLED
    return 200, send.to_dict()


def _conflict(send: ScheduledSend) -> ApiAnswer:
    answer = errors(422, "Unprocessable Entity", f"The scheduled message was already {send.status}")
    answer.body["sourceTrackingId"] = send.tracking_id
    return answer


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


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 (or RFC 2822) time with a zone; None when unreadable or naive."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except (ValueError, IndexError):
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    return moment.astimezone(timezone.utc)


# --- Sending at the time ----------------------------------------------------------------------


def _arm(sandbox: SandboxServer, send: ScheduledSend) -> None:
    """Have the sandbox's scheduler thread send ``send`` at its (current) time."""
    delay = (send.scheduled_at - datetime.now(timezone.utc)).total_seconds()
    version = send.version
    tracking_id = send.tracking_id
    sandbox.call_at(time.monotonic() + max(0.0, delay), lambda: fire(sandbox, tracking_id, version))


def fire(sandbox: SandboxServer, tracking_id: str, version: int | None = None) -> bool:
    """Send a pending scheduled message now (captured as sent); False if it is not pending."""
    send = sandbox.schedule_store.take_due(tracking_id, version)
    if send is None:
        return False
    sandbox.capture(
        send.message, endpoint="schedule", options=dict(send.options), tracking_id=tracking_id
    )
    return True
