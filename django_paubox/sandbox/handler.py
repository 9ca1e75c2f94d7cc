"""The HTTP side of the sandbox: routing, auth, Paubox's endpoints, faults, the control API.

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
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import pages
from . import schedule as schedule_routes
from . import templates as template_routes
from .faults import Fault
from .validation import validate_message

if TYPE_CHECKING:
    from .server import SandboxServer

logger = logging.getLogger("django_paubox.sandbox")

_API_PATH = re.compile(r"/v1/([^/]+)/([A-Za-z_]+)((?:/[^/]+)*)")
_AUTH = re.compile(r"(?:Token\s+token=|Bearer\s+)(\S+)")
_ROUTES = {
    ("POST", "messages"),
    ("POST", "bulk_messages"),
    ("GET", "message_receipt"),
}
#: Endpoints with sub-paths (``/dynamic_templates/{id}``, ``/schedule/{id}/cancel``): their
#: modules route them (see sandbox.templates and sandbox.schedule).
_EXTENSIONS = {
    **{endpoint: template_routes for endpoint in template_routes.ENDPOINTS},
    **{endpoint: schedule_routes for endpoint in schedule_routes.ENDPOINTS},
}
#: The username segment of Paubox's newer, username-less paths (``/v1/email/messages``).
NO_USERNAME_SEGMENT = "email"
MAX_BODY_BYTES = 64 * 1024 * 1024


class _Answer(Exception):
    """Raised inside a route to answer at once with a status and a JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def paubox_error(status: int, title: str, details: str) -> dict[str, Any]:
    return {"errors": [{"code": status, "title": title, "details": details}]}


def _error_title(status: int) -> str:
    if status == 429:
        return "Too Many Requests"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "PauboxSandbox/1.0"
    sys_version = ""
    #: Idle keep-alive connections are closed after this many seconds.
    timeout = 300

    @property
    def sandbox(self) -> SandboxServer:
        return self.server.sandbox  # type: ignore[attr-defined,no-any-return]

    # -- plumbing -------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

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
        self._send(status, text.encode(), "text/html; charset=utf-8")

    def _read_body(self) -> bytes | None:
        """The request body; None (after answering 413) when it is too large to take."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send_json(413, paubox_error(413, "Payload Too Large", "Request body too large"))
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                self._send_json(413, paubox_error(413, "Payload Too Large", "Request too large"))
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _dispatch(self) -> None:
        started = time.perf_counter()
        self._status = 0
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        try:
            if path.startswith("/_sandbox/"):
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
        endpoint = match.group(2) if match else ""
        self._rest = match.group(3) if match else ""
        extension = _EXTENSIONS.get(endpoint)
        known = match is not None and (
            (not self._rest and (self.command, endpoint) in _ROUTES)
            or (extension is not None and extension.allows(self.command, endpoint, self._rest))
        )
        if not known or match is None:
            self._send_html(404, pages.GATEWAY_404)
            return
        sandbox = self.sandbox
        latency = sandbox.faults.latency
        if latency > 0:
            sandbox.release_event.wait(latency)
        fault = sandbox.faults.draw(endpoint)
        hold = False
        if fault is not None:
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "html404":
                self._send_html(404, pages.GATEWAY_404)
                return
            if fault.kind == "status":
                self._send_fault(fault)
                return
            hold = fault.kind == "timeout"
        try:
            self._authorize(unquote(match.group(1)))
            status, answer = self._route(endpoint, body)
        except _Answer as answered:
            status, answer = answered.status, answered.body
        if hold:
            self.close_connection = True
            release = sandbox.release_event
            release.wait(sandbox.timeout_hold_seconds)
            with contextlib.suppress(OSError):  # the client gave up long ago, as intended
                self._send_json(status, answer)
            return
        self._send_json(status, answer)

    def _drop(self) -> None:
        self.close_connection = True
        self._status = -1
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_fault(self, fault: Fault) -> None:
        headers = dict(fault.headers)
        if fault.body is None:
            details = (
                "rate limit exceeded"
                if fault.status == 429
                else "Sandbox fault injection: the service is unavailable, try again later"
            )
            self._send_json(
                fault.status,
                paubox_error(fault.status, _error_title(fault.status), details),
                headers,
            )
        elif isinstance(fault.body, (dict, list)):
            self._send_json(fault.status, fault.body, headers)
        else:
            raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
            kind = "text/html" if raw.lstrip().startswith(b"<") else "text/plain"
            self._send(fault.status, raw, f"{kind}; charset=utf-8", headers)

    def _authorize(self, username: str) -> None:
        sandbox = self.sandbox
        found = _AUTH.fullmatch(self.headers.get("Authorization", "").strip())
        if not found:
            raise _Answer(
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
            raise _Answer(401, paubox_error(401, "Unauthorized", "Invalid API key"))
        if sandbox.api_username is not None and username not in (
            sandbox.api_username,
            NO_USERNAME_SEGMENT,
        ):
            raise _Answer(
                401,
                paubox_error(
                    401, "Unauthorized", "The API key does not match the endpoint username"
                ),
            )

    def _route(self, endpoint: str, body: bytes) -> tuple[int, Any]:
        extension = _EXTENSIONS.get(endpoint)
        if extension is not None:
            content_type = self.headers.get("Content-Type", "")
            return extension.handle(  # type: ignore[no-any-return]
                self.sandbox, self.command, endpoint, self._rest, body, content_type
            )
        if endpoint == "message_receipt":
            return self._receipt()
        data = _parse_data(body)
        if endpoint == "messages":
            return self._send_one(data)
        return self._send_bulk(data)

    def _send_one(self, data: dict[str, Any]) -> tuple[int, Any]:
        message = data.get("message")
        if message is None:
            raise _bad_request(["data.message is missing"])
        problems = validate_message(message)
        if problems:
            raise _bad_request(problems)
        options = {k: v for k, v in data.items() if k != "message"}
        tracked = self.sandbox.capture(message, endpoint="messages", options=options)
        return 200, _send_answer(tracked.captured.tracking_id, message)

    def _send_bulk(self, data: dict[str, Any]) -> tuple[int, Any]:
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad_request(["data.messages must be a non-empty list of messages"])
        problems = [
            f"messages[{index}]: {problem}"
            for index, message in enumerate(messages)
            for problem in validate_message(message)
        ]
        if problems:
            raise _bad_request(problems)
        answers = []
        for index, message in enumerate(messages):
            tracked = self.sandbox.capture(message, endpoint="bulk_messages", batch_index=index)
            answers.append(_send_answer(tracked.captured.tracking_id, message))
        return 200, {"messages": answers}

    def _receipt(self) -> tuple[int, Any]:
        query = parse_qs(urlsplit(self.path).query)
        tracking_id = (query.get("sourceTrackingId") or [""])[0]
        if not tracking_id:
            raise _bad_request(["sourceTrackingId is required"])
        tracked = self.sandbox.state.get(tracking_id)
        if tracked is None:
            body = paubox_error(
                404, "Message was not found", "Message with this tracking id was not found"
            )
            body["sourceTrackingId"] = tracking_id
            return 404, body
        return 200, tracked.receipt(time.monotonic())

    # -- the HTML pages -------------------------------------------------------------------
    def _ui(self, path: str) -> None:
        sandbox = self.sandbox
        now = time.monotonic()
        if path == "/":
            self._send_html(200, pages.render_index(sandbox.state.tracked(), now, sandbox.url))
            return
        tracked = sandbox.state.get(unquote(path[len("/message/") :]))
        if path.startswith("/message/") and tracked is not None:
            self._send_html(200, pages.render_detail(tracked, now))
            return
        self._send_html(404, pages.GATEWAY_404)

    # -- the control API ------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        from .control import handle_control  # the server-side half of SandboxControl

        try:
            status, answer = handle_control(self.sandbox, self.command, path, body)
        except (ValueError, TypeError, KeyError) as error:
            status, answer = 400, {"error": str(error)}
        self._send_json(status, answer)


def _parse_data(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _bad_request(["Request body is not valid JSON"]) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), dict):
        raise _bad_request(["data is missing"])
    return parsed["data"]  # type: ignore[no-any-return]


def _bad_request(problems: list[str]) -> _Answer:
    return _Answer(
        400, {"errors": [{"code": 400, "title": "Bad Request", "details": p} for p in problems]}
    )


def _send_answer(tracking_id: str, message: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"sourceTrackingId": tracking_id, "data": "Service OK"}
    headers = message.get("headers") or {}
    custom = {k: v for k, v in headers.items() if str(k).lower().startswith("x-")}
    if custom:
        answer["customHeaders"] = custom
    return answer
