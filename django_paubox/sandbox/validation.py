"""Validate a Paubox message the way the service does, so clients meet realistic 400s here.

Pure functions: each returns the list of problems found (empty when the message is valid).
The texts name fields, never their values: they may end up in logs.
"""

from __future__ import annotations

import base64
import binascii
from email.utils import getaddresses
from typing import Any

MAX_RECIPIENTS = 100
_ADDRESS_FIELDS = ("recipients", "cc", "bcc")


def parse_addresses(values: Any) -> list[str]:
    """Bare addresses of a recipients/cc/bcc list (display names dropped, order kept)."""
    if not isinstance(values, list):
        return []
    strings = [v for v in values if isinstance(v, str)]
    return [address for _name, address in getaddresses(strings) if address]


def all_recipients(message: dict[str, Any]) -> list[str]:
    """Every distinct address of to, cc and bcc, case-insensitively de-duplicated, in order."""
    seen: set[str] = set()
    found: list[str] = []
    for key in _ADDRESS_FIELDS:
        for address in parse_addresses(message.get(key)):
            if address.lower() not in seen:
                seen.add(address.lower())
                found.append(address)
    return found


def validate_message(message: Any, *, content_required: bool = True) -> list[str]:
    """Problems with one ``data.message`` (or one entry of ``data.messages``).

    ``content_required=False`` is for ``/templated_messages``, whose template is the content:
    a ``content`` there is a problem.
    """
    if not isinstance(message, dict):
        return ["message must be a JSON object"]
    problems: list[str] = []
    problems += _check_addresses(message)
    problems += _check_headers(message.get("headers"))
    if content_required:
        problems += _check_content(message.get("content"))
    elif message.get("content") is not None:
        problems.append("content must not be given with a template (the template is the content)")
    if "attachments" in message:  # null is not a list either
        problems += _check_attachments(message["attachments"])
    for flag in ("allowNonTLS", "forceSecureNotification"):
        if flag in message and not isinstance(message[flag], bool):
            problems.append(f"{flag} must be true or false")
    return problems


def _check_addresses(message: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    recipients = message.get("recipients")
    if recipients is None:
        problems.append("recipients is missing")
    elif not isinstance(recipients, list) or not recipients:
        problems.append("recipients must be a non-empty list of addresses")
    total = 0
    for key in _ADDRESS_FIELDS:
        values = message.get(key)
        if key not in message or (key == "recipients" and not isinstance(values, list)):
            continue  # a null cc/bcc is not a list (the OpenAPI file says arrays)
        if not isinstance(values, list):
            problems.append(f"{key} must be a list of addresses")
            continue
        for index, value in enumerate(values):
            if not isinstance(value, str) or not _is_address(value):
                problems.append(f"{key}[{index}] is not a valid email address")
        total += len(values)
    if total > MAX_RECIPIENTS:
        problems.append(
            f"too many recipients: {total} in recipients, cc and bcc (at most {MAX_RECIPIENTS})"
        )
    return problems


def _is_address(value: str) -> bool:
    parsed = getaddresses([value])
    if len(parsed) != 1:
        return False
    local, _, domain = parsed[0][1].rpartition("@")
    return bool(local) and "." in domain and " " not in parsed[0][1]


def _check_headers(headers: Any) -> list[str]:
    if headers is None:
        return ["headers is missing (headers.from and headers.subject are required)"]
    if not isinstance(headers, dict):
        return ["headers must be a JSON object"]
    problems: list[str] = []
    sender = headers.get("from")
    if not isinstance(sender, str) or not sender.strip():
        problems.append("headers.from is missing")
    elif not _is_address(sender):
        problems.append("headers.from is not a valid email address")
    subject = headers.get("subject")
    if not isinstance(subject, str) or not subject:
        problems.append("headers.subject is missing")
    for name, value in headers.items():
        if name not in ("from", "subject") and not isinstance(value, str):
            problems.append(f"headers.{name} must be a string")
    return problems


def _check_content(content: Any) -> list[str]:
    if not isinstance(content, dict):
        return ["content is missing (text/plain or text/html is required)"]
    parts = [content.get(key) for key in ("text/plain", "text/html")]
    if not any(isinstance(part, str) and part for part in parts):
        return ["content must have text/plain or text/html"]
    return [
        f"content.{key} must be a string"
        for key in ("text/plain", "text/html")
        if key in content and content[key] is not None and not isinstance(content[key], str)
    ]


def _check_attachments(attachments: Any) -> list[str]:
    if not isinstance(attachments, list):
        return ["attachments must be a list"]
    problems: list[str] = []
    for index, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            problems.append(f"attachments[{index}] must be a JSON object")
            continue
        for key in ("fileName", "contentType", "content"):
            value = attachment.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"attachments[{index}].{key} is missing")
        content = attachment.get("content")
        if isinstance(content, str) and content and decode_base64(content) is None:
            problems.append(f"attachments[{index}].content is not valid base64")
    return problems


def decode_base64(value: str) -> bytes | None:
    """Strict base64 decoding (line breaks allowed); None when ``value`` is not base64."""
    compact = "".join(value.split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
