"""Webhook events: one scheduler thread POSTs each event when its delivery stage is reached.

A heap of (due time, stage) and one thread, not a timer per message: a benchmark that sends
thousands of messages must not start thousands of threads. Like Paubox, a failed POST is logged
and never retried.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.utils import parseaddr
from typing import Any
from urllib.parse import urlsplit

from .state import SandboxState, SimulatedDelivery, Stage, TrackedMessage
from .times import iso_z

logger = logging.getLogger(__name__)

# Webhook receivers are local: never send events through an HTTP proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def build_event(
    event_name: str,
    tracked: TrackedMessage,
    delivery: SimulatedDelivery,
    stage: Stage,
    event_id: int,
) -> dict[str, Any]:
    """A webhook body in Paubox's documented shape."""
    captured = tracked.captured
    headers = captured.headers
    custom = {
        str(k): v
        for k, v in headers.items()
        if str(k).lower().startswith("x-") and isinstance(v, str)
    }
    digest = hashlib.sha256(captured.tracking_id.encode()).hexdigest()
    return {
        "event_name": event_name,
        "payload": {
            "id": event_id,
            "subject": captured.subject,
            "header_message_id": captured.message_id,
            "source_tracking_id": captured.tracking_id,
            "outbound_queue_id": digest[:15].upper(),
            "time": iso_z(tracked.wall_time(stage.at)),
            "from": parseaddr(captured.sender)[1] or captured.sender,
            "to": delivery.recipient,
            "custom_headers": custom,
        },
    }


class WebhookScheduler:
    """Fires each stage's event at its time to the URL ``get_url()`` returns then (if any)."""

    def __init__(
        self,
        state: SandboxState,
        get_url: Callable[[], str | None],
        *,
        post_timeout: float = 5.0,
    ) -> None:
        self._state = state
        self._get_url = get_url
        self._post_timeout = post_timeout
        # (due, seq, tracked, delivery, stage); (due, seq, None, None, callback) for call_at.
        self._heap: list[tuple[float, int, Any, Any, Any]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="paubox-sandbox-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self._post_timeout + 1)
            self._thread = None

    def schedule(self, tracked: TrackedMessage) -> None:
        """Queue every stage of ``tracked`` that fires an event."""
        self.schedule_stages(
            (tracked, delivery, stage)
            for delivery in tracked.deliveries
            for stage in delivery.stages
            if stage.event
        )

    def schedule_stages(self, items: Any) -> None:
        with self._cond:
            for tracked, delivery, stage in items:
                if stage.event:
                    heapq.heappush(
                        self._heap, (stage.at, next(self._seq), tracked, delivery, stage)
                    )
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping:
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cond.wait(wait)
                if self._stopping:
                    return
                _at, _seq, tracked, delivery, stage = heapq.heappop(self._heap)
            if tracked is None:
                self._call(stage)
                continue
            self._fire(tracked, delivery, stage)

    def call_at(self, at: float, callback: Callable[[], Any]) -> None:
        """Run ``callback`` on the scheduler thread at monotonic time ``at`` (scheduled sends)."""
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._seq), None, None, callback))
            self._cond.notify_all()

    def _call(self, callback: Callable[[], Any]) -> None:
        try:
            callback()
        except Exception:  # a sandbox bug must not stop every later event
            logger.exception("Sandbox scheduler: a scheduled callback failed")

    def _fire(self, tracked: TrackedMessage, delivery: SimulatedDelivery, stage: Stage) -> None:
        with self._state.lock:
            if stage.fired or tracked.cancelled or stage.at > time.monotonic():
                return
            stage.fired = True
        url = self._get_url()
        if not url or not stage.event:
            return
        event = build_event(stage.event, tracked, delivery, stage, self._state.next_event_id())
        attempt: dict[str, Any] = {
            "event_name": stage.event,
            "id": event["payload"]["id"],
            "source_tracking_id": tracked.captured.tracking_id,
            "to": delivery.recipient,
        }
        try:
            attempt["status"] = self._post(url, event)
        except (OSError, ValueError) as error:
            attempt["error"] = type(error).__name__
            logger.warning(
                "Sandbox webhook %s for %s failed (%s); not retried, as Paubox does not retry.",
                stage.event,
                tracked.captured.tracking_id,
                type(error).__name__,
            )
        self._state.record_webhook(attempt)

    def _post(self, url: str, event: dict[str, Any]) -> int:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook URL scheme must be http or https, not {url!r}")
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked above)
            url,
            data=json.dumps(event).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "Paubox-Sandbox-Webhook"},
            method="POST",
        )
        try:
            with _OPENER.open(request, timeout=self._post_timeout) as response:
                response.read()
                status = int(response.status)
        except urllib.error.HTTPError as error:
            status = error.code
            logger.warning(
                "Sandbox webhook %s answered HTTP %s; not retried.", event["event_name"], status
            )
        return status
