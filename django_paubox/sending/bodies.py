"""The JSON bodies of Paubox's requests: the one place that knows their shape.

Pure; :mod:`django_paubox.client` posts what these return."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def single_send_body(message: Mapping[str, Any], extras: Mapping[str, Any] | None = None) -> dict:
    """The JSON body of ``POST /messages``."""
    return {"data": {"message": message, **(extras or {})}}


def bulk_send_body(messages: Sequence[Mapping[str, Any]]) -> dict:
    """The JSON body of ``POST /bulk_messages`` (callers keep batches to 50 or fewer)."""
    return {"data": {"messages": list(messages)}}


def templated_send_body(
    message: Mapping[str, Any],
    template_name: str,
    template_values: str,
    extras: Mapping[str, Any] | None = None,
) -> dict:
    """The JSON body of ``POST /templated_messages`` (values already a JSON-encoded string)."""
    return {
        "data": {
            "template_name": template_name,
            "template_values": template_values,
            "message": message,
            **(extras or {}),
        }
    }


def schedule_body(
    message: Mapping[str, Any], scheduled_at: str, extras: Mapping[str, Any] | None = None
) -> dict:
    """The JSON body of ``POST /schedule``."""
    return {"data": {"message": message, "scheduled_at": scheduled_at, **(extras or {})}}


def reschedule_body(scheduled_at: str) -> dict:
    """The JSON body of ``PATCH /schedule/{sourceTrackingId}``."""
    return {"data": {"scheduled_at": scheduled_at}}
