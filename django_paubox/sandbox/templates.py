"""Dynamic templates in the sandbox: ``/dynamic_templates`` (CRUD) and ``/templated_messages``.

What Paubox documents: templates are Handlebars files uploaded as multipart ``data[name]`` and
``data[body]``; ``POST /templated_messages`` takes
``data.template_name``, ``data.template_values`` (a JSON-encoded *string*) and ``data.message``
without ``content``; an unknown template name is answered ``{"error": "..."}``, sometimes with
status 200. Where Paubox's OpenAPI file and its prose docs disagree, the sandbox follows the
OpenAPI file: template ids are strings (``"template_1"``; the number alone, ``1``, names the same
template in a path, as the prose docs show integer ids) and the list is
``{"templates": [...]}`` (the prose docs show a bare array). Choices where Paubox documents
nothing (so the client is made to cope):

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
import json
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs, unquote

from ..exceptions import SandboxAnswer
from ..handlebars import HandlebarsError, render
from .core import Sandbox
from .routing import ApiRequest, bad_request, errors, json_data
from .template_store import SandboxTemplate
from .validation import validate_message

#: Endpoints this module answers (the first path segment after the username).
ENDPOINTS = frozenset({"dynamic_templates", "templated_messages"})
MAX_TEMPLATE_BYTES = 1024 * 1024


def methods(endpoint: str, rest: str) -> frozenset[str]:
    """Methods defined for ``/endpoint{rest}`` (none: no such path)."""
    if endpoint == "templated_messages" and not rest:
        return frozenset({"POST"})
    if endpoint == "dynamic_templates":
        if not rest:
            return frozenset({"GET", "POST"})
        if rest.count("/") == 1:  # /dynamic_templates/{id}
            return frozenset({"GET", "PATCH", "DELETE"})
    return frozenset()


def handle(sandbox: Sandbox, request: ApiRequest) -> tuple[int, Any]:
    """Answer one authorised request: ``(status, JSON body)``."""
    if request.endpoint == "templated_messages":
        return _send(sandbox, request.body)
    if not request.rest:
        if request.method == "GET":
            listed = [t.to_dict(with_body=False) for t in sandbox.template_store.all()]
            return 200, {"templates": listed}
        return _create(sandbox, request.body, request.content_type)
    template_id = unquote_id(request.segments[0])
    if request.method == "GET":
        return 200, _found(sandbox, template_id).to_dict()
    if request.method == "DELETE":
        if not sandbox.template_store.delete(template_id):
            raise _not_found()
        return 200, {"message": "Template deleted successfully"}
    return _update(sandbox, template_id, request.body, request.content_type)


def unquote_id(segment: str) -> str:
    """The template id a path segment names (percent-decoded)."""
    return unquote(segment, errors="replace")


def _not_found() -> SandboxAnswer:
    return errors(404, "Not Found", "Dynamic template not found")


def _found(sandbox: Sandbox, template_id: str) -> SandboxTemplate:
    template = sandbox.template_store.get(template_id)
    if template is None:
        raise _not_found()
    return template


def _create(sandbox: Sandbox, body: bytes, content_type: str) -> tuple[int, Any]:
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


def _update(sandbox: Sandbox, template_id: str, body: bytes, content_type: str) -> tuple[int, Any]:
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


def _send(sandbox: Sandbox, body: bytes) -> tuple[int, Any]:
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
        raise SandboxAnswer(
            sandbox.unknown_template_status, {"error": f"Template {name} not found"}
        )
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
