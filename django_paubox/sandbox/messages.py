"""Sending and receipts: ``POST /messages``, ``POST /bulk_messages``, ``GET /message_receipt``.

Validation is Paubox's (see :mod:`.validation`); a bulk request with one invalid message is
refused whole, naming its index; tracking ids come back in request order.
"""

from __future__ import annotations

import time
from typing import Any

from .core import Sandbox
from .routing import ApiRequest, bad_request, errors, json_data
from .validation import validate_message

ENDPOINTS = frozenset({"messages", "bulk_messages", "message_receipt"})
_METHODS = {
    "messages": frozenset({"POST"}),
    "bulk_messages": frozenset({"POST"}),
    "message_receipt": frozenset({"GET"}),
}


def methods(endpoint: str, rest: str) -> frozenset[str]:
    """Methods defined for ``/endpoint{rest}`` (none: no such path)."""
    return _METHODS.get(endpoint, frozenset()) if not rest else frozenset()


def handle(sandbox: Sandbox, request: ApiRequest) -> tuple[int, Any]:
    if request.endpoint == "message_receipt":
        return _receipt(sandbox, request.param("sourceTrackingId"))
    data = json_data(request.body)
    if request.endpoint == "messages":
        return _send_one(sandbox, data)
    return _send_bulk(sandbox, data)


def _send_one(sandbox: Sandbox, data: dict[str, Any]) -> tuple[int, Any]:
    message = data.get("message")
    if message is None:
        raise bad_request("data.message is missing")
    problems = validate_message(message)
    if problems:
        raise bad_request(*problems)
    options = {k: v for k, v in data.items() if k != "message"}
    tracked = sandbox.capture(message, endpoint="messages", options=options)
    return 200, send_answer(tracked.captured.tracking_id, message)


def _send_bulk(sandbox: Sandbox, data: dict[str, Any]) -> tuple[int, Any]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("data.messages must be a non-empty list of messages")
    problems = [
        f"messages[{index}]: {problem}"
        for index, message in enumerate(messages)
        for problem in validate_message(message)
    ]
    if problems:
        raise bad_request(*problems)
    answers = []
    for index, message in enumerate(messages):
        tracked = sandbox.capture(message, endpoint="bulk_messages", batch_index=index)
        answers.append(send_answer(tracked.captured.tracking_id, message))
    return 200, {"messages": answers}


def _receipt(sandbox: Sandbox, tracking_id: str) -> tuple[int, Any]:
    if not tracking_id:
        raise bad_request("sourceTrackingId is required")
    tracked = sandbox.state.get(tracking_id)
    if tracked is None:
        raise errors(
            404,
            "Message was not found",
            "Message with this tracking id was not found",
            sourceTrackingId=tracking_id,
        )
    return 200, tracked.receipt(time.monotonic())


def send_answer(tracking_id: str, message: dict[str, Any]) -> dict[str, Any]:
    """Paubox's answer to one accepted message: its tracking id and its ``X-`` headers."""
    answer: dict[str, Any] = {"sourceTrackingId": tracking_id, "data": "Service OK"}
    headers = message.get("headers") or {}
    custom = {k: v for k, v in headers.items() if str(k).lower().startswith("x-")}
    if custom:
        answer["customHeaders"] = custom
    return answer
