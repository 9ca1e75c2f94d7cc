"""What the sandbox remembers: captured messages, their simulated deliveries, and requests.

One lock guards everything; handler threads, the webhook scheduler and the test thread all go
through :class:`SandboxState`. Times are kept on the monotonic clock (so a changed system clock
cannot reorder stages) and shown as wall-clock times derived from the send's wall-clock time.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr
from typing import Any

from .outcomes import DELIVERED_STATUSES, OUTCOMES, PROCESSING, normalise_outcome, outcome_for
from .times import rfc2822
from .validation import all_recipients


@dataclass(frozen=True)
class CapturedMessage:
    """One message as Paubox received it; attribute or item access (``m.message``,
    ``m["message"]``)."""

    tracking_id: str
    #: ``"messages"`` or ``"bulk_messages"``.
    endpoint: str
    #: The Paubox message dict exactly as received.
    message: dict[str, Any]
    #: Bare addresses of to, cc and bcc, de-duplicated, in order.
    recipients: list[str]
    received_at: datetime
    #: The ``id`` of the receipt (``<uuid@from-domain>``), also ``header_message_id`` of events.
    message_id: str = ""
    #: Keys of ``data`` beside the message (``override_open_tracking``, ``unsubscribe_url``...).
    options: dict[str, Any] = field(default_factory=dict)
    #: Position in the bulk request, for ``bulk_messages``.
    batch_index: int | None = None

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    @property
    def headers(self) -> dict[str, Any]:
        headers = self.message.get("headers")
        return headers if isinstance(headers, dict) else {}

    @property
    def subject(self) -> str:
        return str(self.headers.get("subject") or "")

    @property
    def sender(self) -> str:
        return str(self.headers.get("from") or "")

    @property
    def content(self) -> dict[str, Any]:
        content = self.message.get("content")
        return content if isinstance(content, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracking_id": self.tracking_id,
            "endpoint": self.endpoint,
            "message": self.message,
            "recipients": list(self.recipients),
            "received_at": self.received_at.isoformat(),
            "message_id": self.message_id,
            "options": self.options,
            "batch_index": self.batch_index,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CapturedMessage:
        return cls(
            tracking_id=data["tracking_id"],
            endpoint=data["endpoint"],
            message=data["message"],
            recipients=list(data["recipients"]),
            received_at=datetime.fromisoformat(data["received_at"]),
            message_id=data.get("message_id", ""),
            options=data.get("options") or {},
            batch_index=data.get("batch_index"),
        )


@dataclass
class Stage:
    """A scheduled step of one delivery; ``at`` is on the monotonic clock."""

    at: float
    status: str | None
    opened: bool
    event: str | None
    fired: bool = False


@dataclass
class SimulatedDelivery:
    recipient: str
    outcome: str
    stages: list[Stage]


@dataclass
class TrackedMessage:
    captured: CapturedMessage
    sent_mono: float
    deliveries: list[SimulatedDelivery]
    cancelled: bool = False

    def wall_time(self, mono: float) -> datetime:
        return self.captured.received_at + timedelta(seconds=mono - self.sent_mono)

    def status_of(
        self, delivery: SimulatedDelivery, now: float
    ) -> tuple[str, Stage | None, Stage | None]:
        """(deliveryStatus, the stage that delivered it, the stage that opened it) at ``now``."""
        status, delivered, opened = PROCESSING, None, None
        for stage in delivery.stages:
            if stage.at > now:
                break
            if stage.status:
                status = stage.status
                delivered = stage if status in DELIVERED_STATUSES else None
            if stage.opened:
                opened = stage
        return status, delivered, opened

    def receipt(self, now: float) -> dict[str, Any]:
        """The body of ``GET /message_receipt`` for this message at monotonic time ``now``."""
        single = len(self.deliveries) == 1
        rows: list[dict[str, Any]] = []
        opens: int | None = None
        for delivery in self.deliveries:
            status, delivered, opened = self.status_of(delivery, now)
            entry: dict[str, Any] = {"deliveryStatus": status}
            if delivered is not None:
                entry["deliveryTime"] = rfc2822(self.wall_time(delivered.at))
                if single:
                    entry["openedStatus"] = "opened" if opened else "not opened"
                    opens = 1 if opened else 0
            if opened is not None and single:
                entry["openedTime"] = rfc2822(self.wall_time(opened.at))
            rows.append({"recipient": delivery.recipient, "status": entry})
        message: dict[str, Any] = {"id": self.captured.message_id, "message_deliveries": rows}
        if opens is not None:
            message["total_opens"] = opens
            message["distinct_opens"] = opens
        return {"sourceTrackingId": self.captured.tracking_id, "data": {"message": message}}

    def summary(self, now: float) -> str:
        """One status for the HTML list: the common status, or each distinct one."""
        statuses: list[str] = []
        for delivery in self.deliveries:
            status, _delivered, opened = self.status_of(delivery, now)
            label = f"{status} (opened)" if opened else status
            if label not in statuses:
                statuses.append(label)
        return "; ".join(statuses) or PROCESSING


class SandboxState:
    """Thread-safe store of everything the sandbox has seen."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._tracked: dict[str, TrackedMessage] = {}
        self._order: list[TrackedMessage] = []
        self._requests: list[tuple[str, str]] = []
        self._overrides: dict[str, str] = {}
        self._webhook_attempts: list[dict[str, Any]] = []
        self._event_ids = itertools.count(5_000_000_001)

    # -- requests -------------------------------------------------------------------------
    def record_request(self, method: str, path: str) -> None:
        with self.lock:
            self._requests.append((method, path))

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self._requests)

    # -- messages -------------------------------------------------------------------------
    def add_message(
        self,
        message: dict[str, Any],
        *,
        endpoint: str,
        processing_seconds: float,
        options: dict[str, Any] | None = None,
        batch_index: int | None = None,
        tracking_id: str | None = None,
    ) -> TrackedMessage:
        """Capture a valid message and plan each recipient's simulated delivery.

        ``tracking_id`` is given for a scheduled send, whose id was returned at scheduling.
        """
        now = time.monotonic()
        recipients = all_recipients(message)
        headers = message.get("headers") or {}
        domain = parseaddr(str(headers.get("from") or ""))[1].rpartition("@")[2] or "sandbox"
        captured = CapturedMessage(
            tracking_id=tracking_id or str(uuid.uuid4()),
            endpoint=endpoint,
            message=message,
            recipients=recipients,
            received_at=datetime.now(timezone.utc),
            message_id=f"<{uuid.uuid4()}@{domain}>",
            options=dict(options or {}),
            batch_index=batch_index,
        )
        with self.lock:
            deliveries = []
            for address in recipients:
                outcome = outcome_for(
                    address,
                    self._overrides,
                    allow_non_tls=message.get("allowNonTLS") is True,
                    force_secure_notification=message.get("forceSecureNotification") is True,
                    single_recipient=len(recipients) == 1,
                )
                stages = [
                    Stage(
                        now + spec.after * processing_seconds, spec.status, spec.opened, spec.event
                    )
                    for spec in OUTCOMES[outcome]
                ]
                deliveries.append(SimulatedDelivery(address, outcome, stages))
            tracked = TrackedMessage(captured, now, deliveries)
            self._tracked[captured.tracking_id] = tracked
            self._order.append(tracked)
        return tracked

    def get(self, tracking_id: str) -> TrackedMessage | None:
        with self.lock:
            return self._tracked.get(tracking_id)

    def tracked(self) -> list[TrackedMessage]:
        with self.lock:
            return list(self._order)

    @property
    def messages(self) -> list[CapturedMessage]:
        with self.lock:
            return [t.captured for t in self._order]

    def finish_processing(self) -> list[tuple[TrackedMessage, SimulatedDelivery, Stage]]:
        """Move every future stage to now; returns the moved stages (to schedule their events)."""
        now = time.monotonic()
        moved = []
        with self.lock:
            for tracked in self._order:
                for delivery in tracked.deliveries:
                    for stage in delivery.stages:
                        if stage.at > now:
                            stage.at = now
                            moved.append((tracked, delivery, stage))
        return moved

    # -- outcomes -------------------------------------------------------------------------
    def set_outcome(self, address: str, outcome: str | None) -> None:
        """Override the outcome of messages sent to ``address`` from now on (None clears)."""
        key = parseaddr(address)[1].lower() or address.lower()
        with self.lock:
            if outcome is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = normalise_outcome(outcome)

    # -- webhooks -------------------------------------------------------------------------
    def next_event_id(self) -> int:
        with self.lock:
            return next(self._event_ids)

    def record_webhook(self, attempt: dict[str, Any]) -> None:
        with self.lock:
            self._webhook_attempts.append(attempt)

    @property
    def webhook_attempts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(a) for a in self._webhook_attempts]

    # -- reset ----------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            for tracked in self._order:
                tracked.cancelled = True
            self._tracked.clear()
            self._order.clear()
            self._requests.clear()
            self._overrides.clear()
            self._webhook_attempts.clear()
