"""``SandboxServer``: the sandbox's Python API, a threaded HTTP server on loopback."""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any

from .core import Sandbox
from .handler import SandboxHandler, root_url

logger = logging.getLogger(__name__)

#: Username used in :attr:`SandboxServer.base_url` when any username is accepted.
DEFAULT_USERNAME = "sandbox"


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its sandbox and can close idle keep-alive connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
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
        logger.debug("sandbox: connection error from %s", client_address, exc_info=True)


class SandboxServer(Sandbox):
    """A local Paubox: ``SandboxServer().start()``, then point ``PAUBOX["API_URL"]`` at ``.url``.

    ``api_key=None`` accepts any key (a missing or ill-formed Authorization header is still
    401); ``api_username=None`` accepts any username path segment. The socket is bound at
    construction, so ``.url`` is known before :meth:`start`. See the package docstring for the
    outcome-steering addresses and :mod:`.faults` for fault kinds; the steering and inspection
    methods are :class:`~.core.Sandbox`'s.
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
        super().__init__(
            api_key,
            api_username,
            processing_seconds,
            webhook_url,
            latency=latency,
            timeout_hold_seconds=timeout_hold_seconds,
        )
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
        return root_url(self.host, self.port)

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
        return {"api_url": self.url, **super().describe()}
