"""``Sandbox``: everything the sandbox knows and can be told, without the HTTP server.

The routes work on this object, and :class:`~django_paubox.sandbox.server.SandboxServer` is
this object plus a socket; so every Python-API method documented on ``SandboxServer`` (steering,
inspection, templates, scheduled sends) is defined here, below the HTTP layer that uses it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .faults import FAULT_KINDS, Fault, FaultPlan, FaultRates
from .schedule_store import ScheduledSend, ScheduleStore
from .state import CapturedMessage, SandboxState, TrackedMessage
from .template_store import SandboxTemplate, TemplateStore
from .webhooks import WebhookScheduler

#: Statuses ``unknown_template_status`` may take: 200 with an error body, or a 4xx.
UNKNOWN_TEMPLATE_STATUSES = (200, 400, 404, 422)


class Sandbox:
    """The sandbox's state and steering; see :class:`~.server.SandboxServer` for the arguments.

    ``api_key=None`` accepts any key (a missing or ill-formed Authorization header is still
    401); ``api_username=None`` accepts any username path segment.
    """

    def __init__(
        self,
        api_key: str | None = None,
        api_username: str | None = None,
        processing_seconds: float = 2.0,
        webhook_url: str | None = None,
        *,
        latency: float = 0.0,
        timeout_hold_seconds: float = 30.0,
    ) -> None:
        self.api_key = api_key
        self.api_username = api_username
        self.processing_seconds = processing_seconds
        self.webhook_url = webhook_url
        self.timeout_hold_seconds = timeout_hold_seconds
        self.state = SandboxState()
        self.template_store = TemplateStore()
        self.schedule_store = ScheduleStore()
        self._unknown_template_status = 200
        self.faults = FaultPlan(latency)
        #: Set to release every answer held by a ``timeout`` fault (and latency sleeps).
        self.release_event = threading.Event()
        self._scheduler = WebhookScheduler(self.state, lambda: self.webhook_url)

    def describe(self) -> dict[str, Any]:
        """Configuration for display and the control API; never the key itself."""
        return {
            "api_username": self.api_username,
            "api_key_required": self.api_key is not None,
            "processing_seconds": self.processing_seconds,
            "webhook_url": self.webhook_url,
            "latency": self.faults.latency,
            "fault_rates": self.faults.rates,
            "timeout_hold_seconds": self.timeout_hold_seconds,
        }

    # -- inspection -----------------------------------------------------------------------
    @property
    def messages(self) -> list[CapturedMessage]:
        """Captured messages, oldest first."""
        return self.state.messages

    @property
    def last_message(self) -> CapturedMessage | None:
        messages = self.state.messages
        return messages[-1] if messages else None

    def get_message(self, tracking_id: str) -> CapturedMessage | None:
        tracked = self.state.get(tracking_id)
        return tracked.captured if tracked else None

    def receipt(self, tracking_id: str) -> dict[str, Any] | None:
        """What ``GET /message_receipt`` would answer now (None for an unknown id)."""
        tracked = self.state.get(tracking_id)
        return tracked.receipt(time.monotonic()) if tracked else None

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every API request (the control API and HTML pages excluded)."""
        return self.state.requests

    @property
    def webhook_attempts(self) -> list[dict[str, Any]]:
        """Webhook POSTs made: event_name, id, source_tracking_id, to, and status or error."""
        return self.state.webhook_attempts

    # -- steering -------------------------------------------------------------------------
    @property
    def processing_seconds(self) -> float:
        """Seconds a message stays ``processing``; applies to messages sent afterwards."""
        return self._processing_seconds

    @processing_seconds.setter
    def processing_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("processing_seconds must not be negative.")
        self._processing_seconds = float(seconds)

    def reset(self) -> None:
        """Forget messages, requests, webhook attempts, faults and outcome overrides (and
        templates, scheduled sends and ``unknown_template_status``)."""
        self.state.reset()
        self.template_store.reset()
        self.schedule_store.reset()
        self._unknown_template_status = 200
        self.faults.reset()
        old, self.release_event = self.release_event, threading.Event()
        old.set()

    def set_latency(self, seconds: float) -> None:
        """Delay every API answer by ``seconds`` (each request sleeps in its own thread)."""
        if seconds < 0:
            raise ValueError("latency must not be negative.")
        self.faults.latency = float(seconds)

    def fail_next(
        self,
        status: int = 503,
        count: int = 1,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        endpoint: str | None = None,
    ) -> None:
        """Answer the next ``count`` API requests with ``status`` (Paubox's error body unless
        ``body`` is given: a dict/list is sent as JSON, a str/bytes as is)."""
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599).")
        self.faults.fail_next(
            Fault(
                "status", status=status, body=body, headers=dict(headers or {}), endpoint=endpoint
            ),
            count,
        )

    def fail_next_with(self, kind: str, count: int = 1, *, endpoint: str | None = None) -> None:
        """Inject ``"timeout"``, ``"drop"`` or ``"html404"`` into the next ``count`` requests."""
        if kind not in FAULT_KINDS or kind == "status":
            raise ValueError('kind must be "timeout", "drop" or "html404" (see fail_next).')
        self.faults.fail_next(Fault(kind, endpoint=endpoint), count)

    def set_fault_rates(self, rates: FaultRates | None = None, /, **shares: Any) -> None:
        """Answer a random share of API requests with each fault (none given: no faults).

        Either a :class:`~.faults.FaultRates` or its fields as keywords:
        ``set_fault_rates(server_error=0.05, rate_limit=0.02, seed=1)``.
        """
        self.faults.set_rates(rates if rates is not None else FaultRates(**shares))

    def set_outcome(self, address: str, outcome: str | None) -> None:
        """Override the simulated outcome for ``address`` (messages sent from now on)."""
        self.state.set_outcome(address, outcome)

    def finish_processing(self) -> None:
        """Make every simulated delivery reach its final state now (events fire at once)."""
        self._scheduler.schedule_stages(self.state.finish_processing())

    # -- used by the routes ---------------------------------------------------------------
    def capture(
        self,
        message: dict[str, Any],
        *,
        endpoint: str,
        options: dict[str, Any] | None = None,
        batch_index: int | None = None,
        tracking_id: str | None = None,
    ) -> TrackedMessage:
        """Take a valid message as sent: capture it and schedule its deliveries' events."""
        tracked = self.state.add_message(
            message,
            endpoint=endpoint,
            processing_seconds=self.processing_seconds,
            options=options,
            batch_index=batch_index,
            tracking_id=tracking_id,
        )
        self._scheduler.schedule(tracked)
        return tracked

    def call_at(self, at: float, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` at monotonic time ``at`` on the scheduler thread."""
        self._scheduler.call_at(at, callback)

    # -- dynamic templates ----------------------------------------------------------------
    @property
    def templates(self) -> list[SandboxTemplate]:
        """Uploaded dynamic templates, by id."""
        return self.template_store.all()

    def add_template(self, name: str, body: str) -> SandboxTemplate:
        """Upload a template directly (test setup); ``ValueError`` for a bad name or body."""
        return self.template_store.create(name, body)

    @property
    def unknown_template_status(self) -> int:
        """Status of the ``{"error": ...}`` answer to an unknown template name: 200 (as Paubox
        sometimes answers), 400, 404 or 422. Back to 200 on :meth:`reset`."""
        return self._unknown_template_status

    @unknown_template_status.setter
    def unknown_template_status(self, status: int) -> None:
        if status not in UNKNOWN_TEMPLATE_STATUSES:
            raise ValueError(f"unknown_template_status must be one of {UNKNOWN_TEMPLATE_STATUSES}.")
        self._unknown_template_status = status

    # -- scheduled sends ------------------------------------------------------------------
    @property
    def scheduled(self) -> list[ScheduledSend]:
        """Scheduled sends, oldest first, whatever their status (scheduled, sent, cancelled)."""
        return self.schedule_store.all()

    def arm(self, send: ScheduledSend) -> None:
        """Have the scheduler thread send ``send`` at its (current) time."""
        delay = (send.scheduled_at - datetime.now(timezone.utc)).total_seconds()
        version, tracking_id = send.version, send.tracking_id
        self.call_at(
            time.monotonic() + max(0.0, delay),
            lambda: self.send_scheduled(tracking_id, version),
        )

    def send_scheduled(self, tracking_id: str, version: int | None = None) -> bool:
        """Send a pending scheduled message now (captured as sent); False if not pending."""
        send = self.schedule_store.take_due(tracking_id, version)
        if send is None:
            return False
        self.capture(
            send.message, endpoint="schedule", options=dict(send.options), tracking_id=tracking_id
        )
        return True

    def send_scheduled_now(self) -> list[str]:
        """Send every pending scheduled message now; returns their tracking ids."""
        return [
            send.tracking_id
            for send in self.schedule_store.all()
            if self.send_scheduled(send.tracking_id)
        ]
