"""The time formats of Paubox's answers and events, and reading ``scheduled_at``. Pure."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime


def rfc2822(moment: datetime) -> str:
    """``Mon, 23 Apr 2018 13:27:34 +0000``: the date format of Paubox receipts."""
    return format_datetime(moment.astimezone(timezone.utc).replace(microsecond=0))


def iso_z(moment: datetime) -> str:
    """``2022-04-18T20:27:25.379Z``: the time format of webhook payloads and templates."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 (or RFC 2822) time with a zone; None when unreadable or naive."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except (ValueError, IndexError):
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    return moment.astimezone(timezone.utc)
