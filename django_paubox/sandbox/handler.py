"""The HTTP side of the sandbox: reading requests, routing, auth, faults, writing answers.

Routes live in their own modules (:mod:`.messages`, :mod:`.templates`, :mod:`.schedule`, and
:mod:`.control_routes` for ``/_sandbox/``); this module only speaks HTTP. A path Paubox does not
have answers the gateway's HTML 404; a method Paubox does not define for a path it has answers
405 with ``Allow``; a body that cannot be read (bad ``Content-Length``, malformed chunks) 400;
all three before auth, latency and faults, and in Paubox's JSON error shape but the 404.

Measured pitfall kept in mind throughout: every answer goes out in ONE ``wfile.write`` (status
line, headers and body assembled first) on a socket with Nagle disabled, over HTTP/1.1
keep-alive with a Content-Length, or keep-alive clients stall ~40 ms per answer on delayed ACKs.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from ..exceptions import SandboxAnswer
from . import control_routes, messages, pages, schedule, templates
from .core import Sandbox
from .faults import Fault
from .routing import ApiRequest, bad_request, method_not_allowed, paubox_error, title_of

logger = logging.getLogger(__name__)

_API_PATH = re.compile(r"/v1/([^/]+)/([A-Za-z_]+)((?:/[^/]+)*)")
_AUTH = re.compile(r"(?:Token\s+token=|Bearer\s+)(\S+)")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")


class _Route(NamedTuple):
    """A route module's two functions (see :mod:`.routing`)."""

    methods: Callable[[str, str], frozenset[str]]
    handle: Callable[[Sandbox, ApiRequest], tuple[int, Any]]


#: Endpoint -> its route.
_ROUTES = {
    endpoint: _Route(module.methods, module.handle)
    for module in (messages, templates, schedule)
    for endpoint in module.ENDPOINTS
}
#: The username segment of Paubox's newer, username-less paths (``/v1/email/messages``).
NO_USERNAME_SEGMENT = "email"
MAX_BODY_BYTES = 64 * 1024 * 1024


def root_url(host: str, port: int) -> str:
    """``http://127.0.0.1:PORT/`` for a listening address (a wildcard shown as loopback)."""
    if host in ("0.0.0.0", ""):  # noqa: S104
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "PauboxSandbox/1.0"
    sys_version = ""
    #: Idle keep-alive connections are closed after this many seconds.
    timeout = 300

    @property
    def sandbox(self) -> Sandbox:
        return self.server.sandbox  # type: ignore[attr-defined,no-any-return]

    # -- plumbing -------------------------------------------------------------------------
    # Every standard method is routed: Paubox's own are answered, the others get a 405 on a
    # path Paubox has (an unknown method name stays http.server's 501).
    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET
    do_OPTIONS = do_TRACE = do_CONNECT = do_QUERY = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("sandbox: " + format, *args)

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Write status line, headers and body in one call (see the module docstring)."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        lines = [
            f"{self.protocol_version} {status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"Connection: {'close' if self.close_connection else 'keep-alive'}",
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)
        self._status = status

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(body).encode(), headers=headers)

    def _send_html(self, status: int, text: str) -> None:
        # "replace": a lone surrogate that slipped into a page must not make it a 500.
        self._send(status, text.encode("utf-8", "replace"), "text/html; charset=utf-8")

    def _send_answer(self, answer: SandboxAnswer) -> None:
        self._send_json(answer.status, answer.body, answer.headers)

    def _read_body(self) -> bytes:
        """The request body; a 400 (framing that cannot be read) or 413 answer if it cannot be
        taken (the caller closes the connection: where the next request starts is unknown)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not declared.isdigit() or not declared.isascii():
            raise bad_request("Content-Length must be a non-negative integer")
        length = int(declared)
        if length > MAX_BODY_BYTES:
            raise SandboxAnswer(413, paubox_error(413, "Payload Too Large", "Request too large"))
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537).split(b";")[0].strip()
            if not _CHUNK_SIZE.fullmatch(line):
                raise bad_request("Malformed chunked body: bad chunk size")
            size = int(line, 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise SandboxAnswer(
                    413, paubox_error(413, "Payload Too Large", "Request too large")
                )
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3).strip():
                raise bad_request("Malformed chunked body: a chunk does not match its size")
            chunks.append(chunk)

    def _dispatch(self) -> None:
        started = time.perf_counter()
        self._status = 0
        path = urlsplit(self.path).path
        try:
            body = self._read_body()
        except SandboxAnswer as answer:  # unreadable (400) or too large (413)
            self.close_connection = True  # where the next request starts is unknown
            self._send_answer(answer)
            return
        try:
            if path.startswith(control_routes.PREFIX):
                self._control(path, body)
            elif self.command in ("GET", "HEAD") and (
                path in ("/", "/favicon.ico") or path.startswith("/message/")
            ):
                self._ui(path)
            else:
                self.sandbox.state.record_request(self.command, self.path)
                self._api(path, body)
        except OSError:
            raise  # the client went away: nothing to answer
        except Exception:
            # A sandbox bug must look like a server error, not like an injected dropped connection.
            logger.exception("Paubox sandbox failed answering %s %s", self.command, path)
            if not self._status:
                self.close_connection = True
                self._send_json(500, paubox_error(500, "Internal Server Error", "Sandbox error"))
        if self._status:
            logger.info(
                "%s %s %s %.1f ms",
                self.command,
                path,
                self._status,
                (time.perf_counter() - started) * 1000,
            )

    # -- the Paubox API -------------------------------------------------------------------
    def _api(self, path: str, body: bytes) -> None:
        match = _API_PATH.fullmatch(path)
        route = _ROUTES.get(match.group(2)) if match else None
        if match is None or route is None:
            self._send_html(404, pages.GATEWAY_404)
            return
        endpoint, rest = match.group(2), match.group(3)
        allowed = route.methods(endpoint, rest)
        if not allowed:
            self._send_html(404, pages.GATEWAY_404)
            return
        if self.command not in allowed:
            self._send_answer(method_not_allowed(self.command, allowed))
            return
        sandbox = self.sandbox
        latency = sandbox.faults.latency
        if latency > 0:
            sandbox.release_event.wait(latency)
        fault = sandbox.faults.draw(endpoint)
        if fault is not None and fault.kind != "timeout":
            self._answer_fault(fault)
            return
        request = ApiRequest(
            self.command,
            endpoint,
            rest,
            urlsplit(self.path).query,
            body,
            self.headers.get("Content-Type", ""),
        )
        headers: dict[str, str] = {}
        try:
            self._authorize(unquote(match.group(1)))
            status, answer = route.handle(sandbox, request)
        except SandboxAnswer as answered:
            status, answer, headers = answered.status, answered.body, answered.headers
        if fault is not None:  # a timeout: processed, then held past the client's patience
            self.close_connection = True
            sandbox.release_event.wait(sandbox.timeout_hold_seconds)
            with contextlib.suppress(OSError):  # the client gave up long ago, as intended
                self._send_json(status, answer, headers)
            return
        self._send_json(status, answer, headers)

    def _answer_fault(self, fault: Fault) -> None:
        if fault.kind == "drop":
            self.close_connection = True
            self._status = -1
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        elif fault.kind == "html404":
            self._send_html(404, pages.GATEWAY_404)
        elif fault.body is None:
            details = (
                "rate limit exceeded"
                if fault.status == 429
                else "Sandbox fault injection: the service is unavailable, try again later"
            )
            error = paubox_error(fault.status, title_of(fault.status), details)
            self._send_json(fault.status, error, dict(fault.headers))
        elif isinstance(fault.body, (dict, list)):
            self._send_json(fault.status, fault.body, dict(fault.headers))
        else:
            raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
            kind = "text/html" if raw.lstrip().startswith(b"<") else "text/plain"
            self._send(fault.status, raw, f"{kind}; charset=utf-8", dict(fault.headers))

    def _authorize(self, username: str) -> None:
        sandbox = self.sandbox
        found = _AUTH.fullmatch(self.headers.get("Authorization", "").strip())
        if not found:
            raise SandboxAnswer(
                401,
                paubox_error(
                    401,
                    "Unauthorized",
                    "Authorization header is missing or ill-formed; "
                    "expected 'Token token=<API key>'",
                ),
            )
        key = found.group(1)
        if sandbox.api_key is not None and not hmac.compare_digest(
            key.encode(), sandbox.api_key.encode()
        ):
            raise SandboxAnswer(401, paubox_error(401, "Unauthorized", "Invalid API key"))
        if sandbox.api_username is not None and username not in (
            sandbox.api_username,
            NO_USERNAME_SEGMENT,
        ):
            raise SandboxAnswer(
                401,
                paubox_error(
                    401, "Unauthorized", "The API key does not match the endpoint username"
                ),
            )

    # -- the HTML pages -------------------------------------------------------------------
    def _ui(self, path: str) -> None:
        sandbox = self.sandbox
        now = time.monotonic()
        if path == "/":
            address: Any = self.server.server_address
            api_url = root_url(str(address[0]), int(address[1])) + "v1/"
            self._send_html(200, pages.render_index(sandbox.state.tracked(), now, api_url))
            return
        tracked = sandbox.state.get(unquote(path[len("/message/") :]))
        if path.startswith("/message/") and tracked is not None:
            self._send_html(200, pages.render_detail(tracked, now))
            return
        self._send_html(404, pages.GATEWAY_404)

    # -- the control API ------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        try:
            status, answer = control_routes.handle_control(self.sandbox, self.command, path, body)
        except (ValueError, TypeError, KeyError) as error:
            status, answer = 400, {"error": str(error)}
        self._send_json(status, answer, {"Allow": "GET, POST"} if status == 405 else None)
