"""Per-message options beyond the message itself: a dynamic template and its values, and a
send time (``/schedule``). Pure, and refused before any HTTP when wrong."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from django.core.mail import EmailMessage

from ..exceptions import PauboxPayloadError
from .text import is_control, text_of

logger = logging.getLogger(__name__)


#: Longest template name accepted (Paubox documents none; names are short identifiers).
MAX_TEMPLATE_NAME_LENGTH = 255
#: How deep template values may nest (a guard against self-referencing structures).
MAX_TEMPLATE_VALUES_DEPTH = 32


def template_of(email: EmailMessage) -> tuple[str, str] | None:
    """``(template name, JSON-encoded values)`` for a templated message, else ``None``.

    From ``email.paubox_template_name`` (a non-empty string) and
    ``email.paubox_template_values``: a dict of JSON values (``None`` means ``{}``), or a
    string already holding a JSON object. Paubox wants the values as a JSON-encoded *string*.
    Refused with :class:`PauboxPayloadError` (naming the offending key, never its value):
    values that are not JSON (a ``datetime``, a ``Decimal``, a set, NaN...): format them as the
    recipient should read them, since the template cannot; and a body or alternative
    parts, since Paubox takes a templated message's content from the template only.
    """
    name = getattr(email, "paubox_template_name", None)
    values = getattr(email, "paubox_template_values", None)
    if name is None:
        if values is not None:
            raise PauboxPayloadError(
                "Paubox: message.paubox_template_values is set but paubox_template_name is not."
            )
        return None
    if not isinstance(name, str) or not name.strip():
        raise PauboxPayloadError("Paubox: message.paubox_template_name must be a non-empty string.")
    if len(name) > MAX_TEMPLATE_NAME_LENGTH or any(is_control(c) for c in name):
        raise PauboxPayloadError(
            "Paubox: message.paubox_template_name must be at most "
            f"{MAX_TEMPLATE_NAME_LENGTH} characters without control characters."
        )
    if text_of(email.body, "the body") or getattr(email, "alternatives", None):
        raise PauboxPayloadError(
            f"Paubox: the message uses the dynamic template {name!r}, which is its content; "
            "leave the body empty and attach no alternative parts."
        )
    return name, encode_template_values(values)


def encode_template_values(values: Any) -> str:
    """``paubox_template_values`` as the JSON text Paubox wants (see :func:`template_of`)."""
    attr = "message.paubox_template_values"
    if values is None:
        return "{}"
    if isinstance(values, (str, bytes)):
        try:
            decoded = json.loads(values)
        except ValueError:
            raise PauboxPayloadError(f"Paubox: {attr} is a string that is not JSON.") from None
        if not isinstance(decoded, dict):
            raise PauboxPayloadError(f"Paubox: {attr} must be a JSON object.")
        values = decoded
    if not isinstance(values, Mapping):
        raise PauboxPayloadError(
            f"Paubox: {attr} must be a dict (the template's variables), not a "
            f"{type(values).__name__}."
        )
    problem = _json_problem(values, "", set(), 0)
    if problem is not None:
        raise PauboxPayloadError(
            f"Paubox: {attr}{problem}; template values must be JSON (str, int, float, bool, "
            "None, lists and dicts with string keys). Format dates and amounts as the "
            "recipient should read them."
        )
    return json.dumps(values, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _json_problem(value: Any, where: str, active: set[int], depth: int) -> str | None:
    """Why ``value`` is not plain JSON (naming where, never what), or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is not a finite number"
    if depth >= MAX_TEMPLATE_VALUES_DEPTH:
        return f"{where} nests deeper than {MAX_TEMPLATE_VALUES_DEPTH} levels"
    if isinstance(value, (Mapping, list, tuple)):
        if id(value) in active:
            return f"{where} contains itself"
        active.add(id(value))
        try:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if not isinstance(key, str):
                        return f"{where} has a key that is a {type(key).__name__}, not a string"
                    problem = _json_problem(item, f"{where}[{key!r}]", active, depth + 1)
                    if problem:
                        return problem
            else:
                for index, item in enumerate(value):
                    problem = _json_problem(item, f"{where}[{index}]", active, depth + 1)
                    if problem:
                        return problem
        finally:
            active.discard(id(value))
        return None
    return f"{where} is a {type(value).__name__}, which is not JSON-serialisable"


def send_at_of(email: EmailMessage, *, now: datetime | None = None) -> datetime | None:
    """When a scheduled message should go out (``email.paubox_send_at``), else ``None``.

    Refused with :class:`PauboxPayloadError`: anything but a ``datetime``, a naive datetime
    (its instant would depend on a server's time zone), and a time that is not in the future.
    """
    send_at = getattr(email, "paubox_send_at", None)
    if send_at is None:
        return None
    if not isinstance(send_at, datetime):
        raise PauboxPayloadError(
            "Paubox: message.paubox_send_at must be a timezone-aware datetime, not a "
            f"{type(send_at).__name__}."
        )
    if send_at.tzinfo is None or send_at.utcoffset() is None:
        raise PauboxPayloadError(
            "Paubox: message.paubox_send_at is a naive datetime; give it a time zone (for "
            "example with django.utils.timezone.make_aware) so that it names one instant."
        )
    now = now or datetime.now(timezone.utc)
    if send_at <= now:
        ago = int((now - send_at).total_seconds())
        raise PauboxPayloadError(
            f"Paubox: message.paubox_send_at is in the past ({format_send_at(send_at)}, "
            f"{ago} seconds ago); a scheduled send needs a future time."
        )
    return send_at


def format_send_at(moment: datetime) -> str:
    """``2026-09-14T09:00:00Z``: the ``scheduled_at`` sent to Paubox (ISO 8601, UTC, seconds).

    Paubox documents no format for ``scheduled_at``; ISO 8601 with an explicit offset names
    one instant unambiguously, as its webhooks' times do.
    """
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_send_at(text: str) -> datetime:
    """The aware datetime of a :func:`format_send_at` string (any ISO 8601 with an offset)."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("scheduled time without a time zone")
    return moment


def send_options(email: EmailMessage, *, now: datetime | None = None) -> dict[str, Any]:
    """What, beside ``message`` and ``extras``, routes a send to another endpoint.

    ``{"template": {"name": ..., "values": <JSON text>}}`` for ``/templated_messages``,
    ``{"send_at": "<ISO 8601>"}`` for ``/schedule``, or ``{}``. Both at once are refused:
    Paubox documents no scheduled templated send.
    """
    options: dict[str, Any] = {}
    template = template_of(email)
    send_at = send_at_of(email, now=now)
    if template is not None and send_at is not None:
        raise PauboxPayloadError(
            "Paubox: a message cannot both use a dynamic template and be scheduled "
            "(paubox_template_name with paubox_send_at): Paubox's /schedule takes no template."
        )
    if template is not None:
        options["template"] = {"name": template[0], "values": template[1]}
    if send_at is not None:
        options["send_at"] = format_send_at(send_at)
    return options


#: A scheduled time closer than this when the message is actually sent is sent at once instead.
SCHEDULE_MARGIN = timedelta(seconds=5)
