"""Dynamic templates in the sandbox: ``/dynamic_templates`` (CRUD) and ``/templated_messages``.

What Paubox documents: templates are Handlebars files uploaded as multipart ``data[name]`` and
``data[body]``; ids are integers; the list is a bare array; ``POST /templated_messages`` takes
``data.template_name``, ``data.template_values`` (a JSON-encoded *string*) and ``data.message``
without ``content``; an unknown template name is answered ``{"error": "..."}``, sometimes with
status 200. Choices where Paubox documents nothing (so the client is made to cope):

- the list omits ``body`` (``GET /dynamic_templates/{id}`` has it); a created, fetched or
  updated template is ``{"id", "name", "body", "created_at", "updated_at"}``;
- a duplicate name, a missing name or body, or a body this sandbox cannot render is a 400;
  the sandbox renders the subset of Handlebars in :mod:`django_paubox.handlebars` and refuses
  anything else at upload, so a template that works here renders the same at Paubox;
- an unknown template name is answered with ``SandboxServer.unknown_template_status``
  (200 by default, as Paubox sometimes does; 400, 404 or 422 otherwise) and ``{"error": ...}``;
- ``DELETE`` answers ``{"message": "Template deleted successfully"}`` (Paubox's spec);
- a templated message is captured (endpoint ``templated_messages``) as Paubox would deliver
  it: the subject rendered as plain text (unescaped), the body rendered as HTML and kept as
  base64 ``content["text/html"]`` like the client's own HTML; ``options`` hold
  ``template_name`` and the decoded ``template_values``.

Standard library only: multipart bodies are parsed with :mod:`email` (``cgi`` is gone).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..handlebars import HandlebarsError, check, render
from .validation import validate_message

if TYPE_CHECKING:
    from .server import SandboxServer

#: Endpoints this module answers (the first path segment after the username).
ENDPOINTS = frozenset({"dynamic_templates", "templated_messages"})
#: Statuses ``unknown_template_status`` may take: 200 with an error body, or a 4xx.
UNKNOWN_TEMPLATE_STATUSES = (200, 400, 404, 422)
MAX_TEMPLATE_BYTES = 1024 * 1024


class ApiAnswer(Exception):
    """Answer at once with ``status`` and ``body`` (caught by :func:`handle`)."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def errors(status: int, title: str, *details: str) -> ApiAnswer:
    """Paubox's usual error shape: ``{"errors": [{"code", "title", "details"}, ...]}``."""
    return ApiAnswer(
        status, {"errors": [{"code": status, "title": title, "details": d} for d in details]}
    )


def bad_request(*details: str) -> ApiAnswer:
    return errors(400, "Bad Request", *details)


def iso(moment: datetime) -> str:
    """``2024-05-01T10:00:00.000Z``."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


# --- State ------------------------------------------------------------------------------------


@dataclass
class SandboxTemplate:
    """One uploaded template."""

    id: int
    name: str
    body: str
    created_at: datetime
    updated_at: datetime

    def to_dict(self, *, with_body: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "name": self.name}
        if with_body:
            data["body"] = self.body
        data["created_at"] = iso(self.created_at)
        data["updated_at"] = iso(self.updated_at)
        return data


class TemplateStore:
    """The sandbox's templates; thread-safe. Names are unique and matched exactly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._templates: dict[int, SandboxTemplate] = {}
        self._ids = itertools.count(1)

    def all(self) -> list[SandboxTemplate]:
        with self._lock:
            return sorted(self._templates.values(), key=lambda t: t.id)

    def get(self, template_id: int) -> SandboxTemplate | None:
        with self._lock:
            return self._templates.get(template_id)

    def by_name(self, name: str) -> SandboxTemplate | None:
        with self._lock:
            return next((t for t in self._templates.values() if t.name == name), None)

    def create(self, name: str, body: str) -> SandboxTemplate:
        """Store a template; ``ValueError`` for a bad name or body (checked first)."""
        _check_template(name, body)
        now = datetime.now(timezone.utc)
        with self._lock:
            self._check_unique(name, None)
            template = SandboxTemplate(next(self._ids), name, body, now, now)
            self._templates[template.id] = template
            return template

    def update(
        self, template_id: int, name: str | None = None, body: str | None = None
    ) -> SandboxTemplate | None:
        """Change a template; None for an unknown id, ``ValueError`` for a bad name or body."""
        with self._lock:
            template = self._templates.get(template_id)
            if template is None:
                return None
            new_name = template.name if name is None else name
            new_body = template.body if body is None else body
            _check_template(new_name, new_body)
            self._check_unique(new_name, template_id)
            template.name, template.body = new_name, new_body
            template.updated_at = datetime.now(timezone.utc)
            return template

    def delete(self, template_id: int) -> bool:
        with self._lock:
            return self._templates.pop(template_id, None) is not None

    def reset(self) -> None:
        with self._lock:
            self._templates.clear()
            self._ids = itertools.count(1)

    def _check_unique(self, name: str, own_id: int | None) -> None:
        if any(t.name == name and t.id != own_id for t in self._templates.values()):
            raise ValueError("name has already been taken")


def _check_template(name: str, body: str) -> None:
    if not name.strip():
        raise ValueError("data[name] must not be blank")
    if len(name) > 255:
        raise ValueError("data[name] is too long (at most 255 characters)")
    if not body.strip():
        raise ValueError("data[body] must not be blank")
    try:
        check(body)
    except HandlebarsError as error:
        raise ValueError(f"data[body] is not a template the sandbox can render: {error}") from None


# --- Routing ----------------------------------------------------------------------------------


def allows(method: str, endpoint: str, rest: str) -> bool:
    """Whether ``method /endpoint{rest}`` is one of this module's routes."""
    if endpoint == "templated_messages":
        return method == "POST" and not rest
    if endpoint == "dynamic_templates":
        if not rest:
            return method in ("GET", "POST")
        return rest.count("/") == 1 and method in ("GET", "PATCH", "DELETE")
    return False


def handle(
    sandbox: SandboxServer, method: str, endpoint: str, rest: str, body: bytes, content_type: str
) -> tuple[int, Any]:
    """Answer one authorised request: ``(status, JSON body)``."""
    try:
        if endpoint == "templated_messages":
            return _send(sandbox, body)
        if not rest:
            if method == "GET":
                return 200, [t.to_dict(with_body=False) for t in sandbox.template_store.all()]
            return _create(sandbox, body, content_type)
        template_id = _template_id(rest)
        if method == "GET":
            return 200, _found(sandbox, template_id).to_dict()
        if method == "DELETE":
            if not sandbox.template_store.delete(template_id):
                raise _not_found()
            return 200, {"message": "Template deleted successfully"}
        return _update(sandbox, template_id, body, content_type)
    except ApiAnswer as answer:
        return answer.status, answer.body


def _template_id(rest: str) -> int:
    text = rest.strip("/")
    if not text.isdigit():
        raise _not_found()
    return int(text)


def _not_found() -> ApiAnswer:
    return errors(404, "Not Found", "Dynamic template not found")


def _found(sandbox: SandboxServer, template_id: int) -> SandboxTemplate:
    template = sandbox.template_store.get(template_id)
    if template is None:
        raise _not_found()
    return template


def _create(sandbox: SandboxServer, body: bytes, content_type: str) -> tuple[int, Any]:
    form = parse_form(body, content_type)
    missing = [f"{key} is required" for key in ("data[name]", "data[body]") if key not in form]
    if missing:
        raise bad_request(*missing)
    try:
        template = sandbox.template_store.create(
            _form_text(form, "data[name]"), _form_text(form, "data[body]")
        )
    except ValueError as error:
        raise bad_request(str(error)) from None
    return 200, template.to_dict()


def _update(
    sandbox: SandboxServer, template_id: int, body: bytes, content_type: str
) -> tuple[int, Any]:
    _found(sandbox, template_id)
    form = parse_form(body, content_type)
    if "data[name]" not in form and "data[body]" not in form:
        raise bad_request("data[name] or data[body] is required")
    name = _form_text(form, "data[name]") if "data[name]" in form else None
    text = _form_text(form, "data[body]") if "data[body]" in form else None
    try:
        template = sandbox.template_store.update(template_id, name, text)
    except ValueError as error:
        raise bad_request(str(error)) from None
    if template is None:  # deleted meanwhile
        raise _not_found()
    return 200, template.to_dict()


def _send(sandbox: SandboxServer, body: bytes) -> tuple[int, Any]:
    data = json_data(body)
    problems = []
    name = data.get("template_name")
    raw_values = data.get("template_values")
    if not isinstance(name, str) or not name:
        problems.append("data.template_name is missing")
    if raw_values is None:
        problems.append("data.template_values is missing")
    elif not isinstance(raw_values, str):
        problems.append("data.template_values must be a JSON-encoded string")
    message = data.get("message")
    if message is None:
        problems.append("data.message is missing")
    else:
        problems += validate_message(message, content_required=False)
    if problems:
        raise bad_request(*problems)
    assert isinstance(name, str) and isinstance(raw_values, str) and isinstance(message, dict)
    try:
        values = json.loads(raw_values)
    except ValueError:
        raise bad_request("data.template_values is not valid JSON") from None
    if not isinstance(values, dict):
        raise bad_request("data.template_values must encode a JSON object")
    template = sandbox.template_store.by_name(name)
    if template is None:
        raise ApiAnswer(sandbox.unknown_template_status, {"error": f"Template {name} not found"})
    headers = dict(message.get("headers") or {})
    try:
        html = render(template.body, values)
        headers["subject"] = render(str(headers.get("subject") or ""), values, html=False)
    except HandlebarsError as error:
        raise bad_request(f"the subject cannot be rendered: {error}") from None
    delivered = {
        **message,
        "headers": headers,
        "content": {"text/html": base64.b64encode(html.encode("utf-8")).decode("ascii")},
    }
    options = {k: v for k, v in data.items() if k not in ("message", "template_values")}
    options["template_values"] = values
    tracked = sandbox.capture(delivered, endpoint="templated_messages", options=options)
    return 200, {"sourceTrackingId": tracked.captured.tracking_id, "data": "Service OK"}


def json_data(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("Request body is not valid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), dict):
        raise bad_request("data is missing")
    return parsed["data"]  # type: ignore[no-any-return]


# --- Forms ------------------------------------------------------------------------------------


def parse_form(body: bytes, content_type: str) -> dict[str, bytes]:
    """The fields of a ``multipart/form-data`` (or urlencoded) body: name -> raw bytes.

    Multipart is read with the :mod:`email` parser given the request's Content-Type (with its
    boundary); a file field's content is its bytes, whatever its file name.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise bad_request("The form is not UTF-8") from None
        return {name: values[-1].encode("utf-8") for name, values in fields.items()}
    if kind != "multipart/form-data":
        raise bad_request("The request must be multipart/form-data (data[name], data[body])")
    if len(body) > MAX_TEMPLATE_BYTES * 2:
        raise bad_request("The template is too large")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    parsed = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not parsed.is_multipart():
        raise bad_request("The multipart body could not be read (boundary?)")
    form: dict[str, bytes] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        form[name] = payload if isinstance(payload, bytes) else b""
    return form


def _form_text(form: dict[str, bytes], key: str) -> str:
    try:
        return form[key].decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"{key} is not UTF-8 text") from None
