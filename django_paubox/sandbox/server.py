"""``SandboxServer``: the sandbox's Python API, a threaded HTTP server on loopback."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from . import schedule as _schedule
from .faults import FAULT_KINDS, Fault, FaultPlan
from .handler import SandboxHandler
from .schedule import ScheduledSend, ScheduleStore
from .state import CapturedMessage, SandboxState, TrackedMessage
from .templates import UNKNOWN_TEMPLATE_STATUSES, SandboxTemplate, TemplateStore
from .webhooks import WebhookScheduler

#: Username used in :attr:`SandboxServer.base_url` when any username is accepted.
DEFAULT_USERNAME = "sandbox"


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its sandbox and can close idle keep-alive connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, SandboxHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on a keep-alive read so its thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal here (timeouts, drops): no traceback.
        from .handler import logger

        logger.debug("sandbox: connection error from %s", client_address, exc_info=True)


class SandboxServer:
    """A local Paubox: ``SandboxServer().start()``, then point ``PAUBOX["API_URL"]`` at ``.url``.

    ``api_key=None`` accepts any key (a missing or ill-formed Authorization header is still
    401); ``api_username=None`` accepts any username path segment. The socket is bound at
    construction, so ``.url`` is known before :meth:`start`. See the package docstring for the
    outcome-steering addresses and :mod:`.faults` for fault kinds.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
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
        self.release_event = threading.Event()
        self._scheduler = WebhookScheduler(self.state, lambda: self.webhook_url)
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def __repr__(self) -> str:
        return f"<SandboxServer {self.url}>"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> SandboxServer:
        """Serve in a background thread; returns self."""
        if self._stopped:
            raise RuntimeError("A stopped SandboxServer cannot be started again.")
        if self._thread is None:
            self._scheduler.start()
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"paubox-sandbox-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        self._scheduler.start()
        try:
            self._httpd.serve_forever(poll_interval=0.1)
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, release held requests, close every connection. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self.release_event.set()
        self._httpd.close_connections()
        self._httpd.server_close()
        self._scheduler.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT/``: the HTML page (and the control API under /_sandbox/)."""
        host = self.host
        if host in ("0.0.0.0", ""):  # noqa: S104
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    @property
    def url(self) -> str:
        """The ``PAUBOX["API_URL"]`` to configure; the client appends ``/<API_USERNAME>``."""
        return self.root_url + "v1/"

    @property
    def username(self) -> str:
        """The username to configure: the required one, else :data:`DEFAULT_USERNAME`."""
        return self.api_username or DEFAULT_USERNAME

    @property
    def base_url(self) -> str:
        """The URL every API path is relative to (username included, no trailing slash)."""
        return self.url + self.username

    def describe(self) -> dict[str, Any]:
        """Configuration for display and the control API; never the key itself."""
        return {
            "api_url": self.url,
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

    def set_fault_rates(
        self,
        server_error: float = 0.0,
        rate_limit: float = 0.0,
        timeout: float = 0.0,
        drop: float = 0.0,
        seed: int | None = None,
    ) -> None:
        """Answer a random share of API requests with each fault (all zero: none)."""
        self.faults.set_rates(
            server_error=server_error, rate_limit=rate_limit, timeout=timeout, drop=drop, seed=seed
        )

    def set_outcome(self, address: str, outcome: str | None) -> None:
        """Override the simulated outcome for ``address`` (messages sent from now on)."""
        self.state.set_outcome(address, outcome)

    def finish_processing(self) -> None:
        """Make every simulated delivery reach its final state now (events fire at once)."""
        self._scheduler.schedule_stages(self.state.finish_processing())

    # -- used by the handler --------------------------------------------------------------
    def capture(
        self,
        message: dict[str, Any],
        *,
        endpoint: str,
        options: dict[str, Any] | None = None,
        batch_index: int | None = None,
        tracking_id: str | None = None,
    ) -> TrackedMessage:
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

    def call_at(self, at: float, callback: Any) -> None:
        """Run ``callback()`` at monotonic time ``at`` on the scheduler thread."""
        self._scheduler.call_at(at, callback)

    # -- dynamic templates and scheduled sends ---------------------------------------------
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

    @property
    def scheduled(self) -> list[ScheduledSend]:
        """Scheduled sends, oldest first, whatever their status (scheduled, sent, cancelled)."""
        return self.schedule_store.all()

    def send_scheduled_now(self) -> list[str]:
        """Send every pending scheduled message now; returns their tracking ids."""
        return [
            send.tracking_id
            for send in self.schedule_store.all()
            if _schedule.fire(self, send.tracking_id)
        ]
