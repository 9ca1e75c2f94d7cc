"""The sandbox's scheduled sends: what Paubox holds until its time, and their status. No HTTP."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .times import iso_z

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
                "scheduled_at": iso_z(self.scheduled_at),
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
