"""Paubox receipts and webhook events, read into plain validated values (pure; no database).

:mod:`django_paubox.records` writes what these functions read. Receipts come from Paubox through
our own client, so they are read *tolerantly*: anything missing, of the wrong type or unknown
is skipped or kept raw, never an error. Webhook bodies come from the internet, so they are read
*strictly*: anything that is not a plausible Paubox event raises :class:`InvalidWebhookEvent`
(the view answers 400), and nothing that reaches the database can make it fail (NUL
characters, lone surrogates, NaN, absurd nesting or lengths are refused here).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr, parsedate_to_datetime
from typing import Any

from django.utils.dateparse import parse_datetime

from ..exceptions import InvalidWebhookEvent
from .statuses import Outcome, from_delivery_status, from_webhook_event

#: Field sizes of the models (an over-long value would fail on PostgreSQL).
MAX_EVENT_NAME = 100
MAX_TRACKING_ID = 255  # Message.tracking_id and WebhookEvent.source_tracking_id
MAX_ADDRESS = 320
#: Paubox's events nest three levels deep; anything much deeper is not from Paubox.
MAX_DEPTH = 32


#: A bare address (dot-atoms around one ``@``): ``parseaddr`` would return it as it is.
_BARE_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def normalise_address(text: str) -> str:
    """``"Name <A@Host>"`` or ``"a@host"`` -> ``"a@host"``: how ``Delivery.recipient`` is kept.

    A bare address skips ``parseaddr``, the costliest step of a webhook event's parsing.
    """
    stripped = text.strip()
    if _BARE_ADDRESS.fullmatch(stripped):
        return stripped.lower()
    _, address = parseaddr(text)
    return (address or text).strip().lower()


#: Times outside these bounds are taken as unknown: Paubox started in 2015, and a clock a day
#: ahead is broken. This also keeps every stored time inside what any database (and Python,
#: once converted to UTC) can hold: year 1 or 9999 would break pages that show the row.
EARLIEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST_PLAUSIBLE_AHEAD = timedelta(days=1)


def plausible(value: datetime | None, now: datetime | None = None) -> datetime | None:
    """``value`` in UTC if it is a plausible event time (2000 to a day from now), else None."""
    if value is None:
        return None
    try:
        value = value.astimezone(timezone.utc)
    except (OverflowError, ValueError):  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        return None
    latest = (now or datetime.now(timezone.utc)) + LATEST_PLAUSIBLE_AHEAD
    return value if EARLIEST_PLAUSIBLE <= value <= latest else None


def parse_rfc2822(text: object) -> datetime | None:
    """Paubox's receipt times (``Mon, 23 Apr 2018 13:27:34 -0700``) -> aware datetime or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if value is None:  # Python 3.10 returns None for some garbage instead of raising
        return None
    if value.tzinfo is None:  # "-0000" means "UTC, source zone unknown"
        value = value.replace(tzinfo=timezone.utc)
    return plausible(value)


def parse_iso8601(text: object) -> datetime | None:
    """Webhook ``time`` (``2022-04-18T20:27:25.379Z``) -> aware datetime or None.

    None also for a time that is not :func:`plausible`: the event is stored all the same, with
    its time unknown (its ``received_at`` stands in), since Paubox never sends it again.
    """
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = parse_datetime(text.strip())
    except (ValueError, OverflowError):
        return None
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return plausible(value)


def _count(value: object) -> int | None:
    """A non-negative whole number, or None (counters are optional and loosely typed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value < 2**31 else None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 10:
        return int(value.strip())
    return None


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _clicks(value: object) -> list[dict[str, Any]] | None:
    """``clicks_per_link``, keeping only well-formed ``{target_url, click_count}`` items."""
    if not isinstance(value, list):
        return None
    clicks = []
    for item in value:
        if not isinstance(item, dict):
            continue
        url, count = item.get("target_url"), _count(item.get("click_count"))
        if isinstance(url, str) and count is not None:
            clicks.append({"target_url": url, "click_count": count})
    return clicks


# --- Receipts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """Open and click counters of a single-recipient receipt; None where Paubox said nothing."""

    total_opens: int | None = None
    distinct_opens: int | None = None
    total_click_count: int | None = None
    clicks_per_link: list[dict[str, Any]] | None = None
    unsubscribed: bool | None = None

    @classmethod
    def read(cls, *sources: object) -> Counters:
        """The first usable value of each counter among ``sources`` (dicts, others ignored)."""
        found: dict[str, Any] = {}
        readers = {
            "total_opens": _count,
            "distinct_opens": _count,
            "total_click_count": _count,
            "clicks_per_link": _clicks,
            "unsubscribed": _flag,
        }
        for source in sources:
            if not isinstance(source, dict):
                continue
            for name, reader in readers.items():
                if name not in found and name in source:
                    value = reader(source[name])
                    if value is not None:
                        found[name] = value
        return cls(**found)

    def merged(self, other: Counters) -> Counters:
        """These counters, with ``other``'s filling the gaps."""
        return Counters(
            **{
                name: getattr(other, name) if getattr(self, name) is None else getattr(self, name)
                for name in self.__dataclass_fields__
            }
        )


@dataclass(frozen=True)
class ReceiptDelivery:
    """One ``message_deliveries[]`` entry of a receipt."""

    recipient: str
    #: None when the entry carried no ``deliveryStatus`` at all.
    outcome: Outcome | None
    delivered_at: datetime | None = None
    opened: bool = False
    opened_at: datetime | None = None
    counters: Counters = field(default_factory=Counters)


@dataclass(frozen=True)
class Receipt:
    """A ``GET /message_receipt`` answer, read tolerantly."""

    tracking_id: str
    deliveries: tuple[ReceiptDelivery, ...]
    #: Message-level counters (where Paubox's spec puts them; single-recipient messages only).
    counters: Counters = field(default_factory=Counters)


def parse_receipt(receipt: object) -> Receipt:
    """Read a receipt; never raises. Entries without a usable ``recipient`` are skipped."""
    body = receipt if isinstance(receipt, dict) else {}
    tracking_id = body.get("sourceTrackingId")
    data = body.get("data")
    message = data.get("message") if isinstance(data, dict) else None
    message = message if isinstance(message, dict) else {}
    entries = message.get("message_deliveries")
    deliveries = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("recipient"), str):
            continue
        recipient = normalise_address(entry["recipient"])
        if not recipient:
            continue
        status = entry.get("status")
        status = status if isinstance(status, dict) else {}
        raw = status.get("deliveryStatus")
        outcome = from_delivery_status(raw) if isinstance(raw, str) and raw.strip() else None
        opened_status = status.get("openedStatus")
        opened = isinstance(opened_status, str) and opened_status.strip().lower() == "opened"
        deliveries.append(
            ReceiptDelivery(
                recipient=recipient,
                outcome=outcome,
                delivered_at=parse_rfc2822(status.get("deliveryTime")),
                opened=opened,
                opened_at=parse_rfc2822(status.get("openedTime")) if opened else None,
                counters=Counters.read(status, entry),
            )
        )
    return Receipt(
        tracking_id=tracking_id if isinstance(tracking_id, str) else "",
        deliveries=tuple(deliveries),
        counters=Counters.read(message),
    )


# --- Webhook events -------------------------------------------------------------------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_value(value: object, depth: int = 0) -> None:
    """Refuse what a database cannot store: NUL, lone surrogates, NaN/inf, deep nesting."""
    if depth > MAX_DEPTH:
        raise InvalidWebhookEvent("JSON nested too deeply.")
    if isinstance(value, str):
        if "\x00" in value or _SURROGATE.search(value):
            raise InvalidWebhookEvent("JSON strings may not hold NUL or lone surrogates.")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidWebhookEvent("JSON numbers must be finite.")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidWebhookEvent("JSON object keys must be strings.")
            _check_value(key, depth + 1)
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    elif value is not None and not isinstance(value, (bool, int)):
        raise InvalidWebhookEvent("Not a JSON value.")


def _optional_str(payload: dict[str, Any], key: str, max_length: int | None = None) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidWebhookEvent(f"payload.{key} must be a string.")
    value = value.strip()
    if max_length is not None and len(value) > max_length:
        raise InvalidWebhookEvent(f"payload.{key} is too long.")
    return value


def canonical_json(value: object) -> str:
    """One spelling per JSON value, so equal bodies hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class WebhookEventData:
    """A validated webhook body and what it means."""

    event_name: str
    outcome: Outcome
    source_tracking_id: str
    recipient: str
    occurred_at: datetime | None
    dedupe_key: str
    body: dict[str, Any]
    #: ``payload.custom_headers``: the message's ``X-`` headers, echoed by Paubox.
    custom_headers: dict[str, Any] = field(default_factory=dict)


def dedupe_key(event_name: str, payload: dict[str, Any], body: dict[str, Any]) -> str:
    """Identify an event so that a replay is stored once.

    With Paubox's ``payload.id`` the key hashes the event name, that id, and the event's
    ``time``, ``source_tracking_id`` and ``to``: the id alone may be shared by the events of one
    message (its delivery and each open), and a replay repeats all of them. Storing one event
    twice is harmless (updates are forward-only); merging two distinct ones loses one, so the
    key errs on the side of telling events apart. Without an id it is the whole body in
    canonical JSON.
    """
    event_id = payload.get("id")
    if event_id is not None and event_id != "":
        fields = [payload.get(k) for k in ("time", "source_tracking_id", "to")]
        basis = canonical_json(["paubox-event", event_name, event_id, *fields])
    else:
        basis = canonical_json(body)
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()


def parse_webhook_event(data: object) -> WebhookEventData:
    """Validate a parsed webhook body; raise :class:`InvalidWebhookEvent` if it is not one.

    Required: an object with a non-empty string ``event_name`` and an object ``payload``.
    Paubox's known payload fields must have their documented types when present; unknown
    event names and extra fields are accepted (they are stored and acknowledged).
    """
    if not isinstance(data, dict):
        raise InvalidWebhookEvent("The body must be a JSON object.")
    _check_value(data)
    event_name = data.get("event_name")
    if not isinstance(event_name, str) or not event_name.strip():
        raise InvalidWebhookEvent("event_name must be a non-empty string.")
    event_name = event_name.strip()
    if len(event_name) > MAX_EVENT_NAME:
        raise InvalidWebhookEvent("event_name is too long.")
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise InvalidWebhookEvent("payload must be a JSON object.")
    event_id = payload.get("id")
    if event_id is not None and not (
        (isinstance(event_id, int) and not isinstance(event_id, bool) and abs(event_id) < 2**63)
        or (isinstance(event_id, str) and len(event_id) <= 255)
    ):
        raise InvalidWebhookEvent("payload.id must be a number or a string.")
    tracking_id = _optional_str(payload, "source_tracking_id", MAX_TRACKING_ID)
    to = _optional_str(payload, "to")
    recipient = normalise_address(to) if to else ""
    if len(recipient) > MAX_ADDRESS:
        raise InvalidWebhookEvent("payload.to is too long.")
    time = _optional_str(payload, "time", 100)
    for key in ("from", "subject", "header_message_id", "outbound_queue_id"):
        _optional_str(payload, key)
    custom_headers = payload.get("custom_headers")
    if custom_headers is not None and not isinstance(custom_headers, dict):
        raise InvalidWebhookEvent("payload.custom_headers must be an object.")
    return WebhookEventData(
        event_name=event_name,
        outcome=from_webhook_event(event_name),
        source_tracking_id=tracking_id,
        recipient=recipient,
        occurred_at=parse_iso8601(time),
        dedupe_key=dedupe_key(event_name, payload, data),
        body=data,
        custom_headers=custom_headers or {},
    )
