"""Small display helpers the admin pages share: badges, times, links, JSON."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.functional import lazy
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import format_lazy

from ..models import Delivery, Message
from ..tracking.statuses import DESK_STATUSES, Status, desk_status, event_label

CSS = {"all": ("django_paubox/admin.css",)}
EMPTY = "—"
_KNOWN_STATUSES = frozenset(Status.values)
_STATUS_LABELS = dict(Status.choices)


# --- Small renderers shared by the admins ------------------------------------------------------


def status_badge(status: str) -> SafeString:
    """A coloured badge that also spells the status out, so colour is never the only cue."""
    css = status if status in _KNOWN_STATUSES else "unknown"
    label = _STATUS_LABELS.get(status, status or "Unknown")
    return format_html('<span class="paubox-badge paubox-badge--{}">{}</span>', css, label)


def short_datetime(value: Any) -> SafeString | str:
    """A compact local date and time for table cells; the full one is in the tooltip.

    This year's dates drop the year ("Nov 21 8:26 p.m."); older ones show the date only.
    """
    if not value:
        return EMPTY
    local = timezone.localtime(value)
    if local.year == timezone.localtime().year:
        text = f"{formats.date_format(local, 'M j')} {formats.time_format(local)}"
    else:
        text = formats.date_format(local, "SHORT_DATE_FORMAT")
    return format_html('<span class="paubox-nowrap" title="{}">{}</span>', _full(local), text)


def _full(local: Any) -> str:
    """The date, the time to the second and the time zone: "Nov. 21, 2026, 20:26:05 UTC"."""
    return f"{_date(local)}, {_time(local)}"


def _date(local: Any) -> str:
    return formats.date_format(local, "DATE_FORMAT")


def _time(local: Any) -> str:
    return f"{local:%H:%M:%S} {formats.date_format(local, 'T')}"


def full_datetime(value: Any) -> SafeString | str:
    """A date and time for detail pages: to the second, with the time zone (``TIME_ZONE``).

    In a narrow table cell the time goes under the date, never the zone under the time.
    """
    if not value:
        return EMPTY
    local = timezone.localtime(value)
    return format_html(
        '<span class="paubox-nowrap">{},</span> <span class="paubox-nowrap">{}</span>',
        _date(local),
        _time(local),
    )


def zone_name() -> str:
    """The abbreviation of the admin's current time zone now ("UTC", "EST")."""
    return formats.date_format(timezone.localtime(), "T")


def desk_badge(key: str, *, raw: str = "") -> SafeString:
    """The badge of one desk word (``tracking.statuses.DESK_STATUSES``); its meaning in the
    tooltip. ``raw`` (a status this version does not know) is shown as it is."""
    label, meaning = DESK_STATUSES.get(
        key, (raw or "Unknown", "A status this version does not know.")
    )
    css = key if key in DESK_STATUSES else "unknown"
    return format_html(
        '<span class="paubox-badge paubox-badge--{}" title="{}">{}</span>', css, meaning, label
    )


def message_desk_key(message: Message) -> str:
    """A message's one desk word; opens come from the admin's ``opened_count`` annotation."""
    return desk_status(
        message.status,
        state=message.state,
        opened=bool(getattr(message, "opened_count", 0)),
        scheduled_pending=bool(message.scheduled_at and message.scheduled_at > timezone.now()),
    )


def person(address: str, display_name: str = "") -> SafeString | str:
    """A recipient as a person: the name, with the address under it (or the address alone)."""
    if not display_name:
        return format_html('<span class="paubox-address" title="{}">{}</span>', address, address)
    return format_html(
        '<span class="paubox-person"><span class="paubox-name">{}</span> '
        '<span class="paubox-address paubox-muted" title="{}">{}</span></span>',
        display_name,
        address,
        address,
    )


def with_zone(label: str) -> Any:
    """A column heading naming the time zone its times are in ("Sent (UTC)"), worked out when
    the page is drawn (``TIME_ZONE``, or the zone a middleware activated)."""
    return format_lazy("{} ({})", label, lazy(zone_name, str)())


def event_name(name: str) -> SafeString:
    """A webhook event in words, with Paubox's raw name beside it."""
    label = event_label(name)
    if label == name:
        return format_html('<code class="paubox-raw">{}</code>', name)
    return format_html(
        '<span class="paubox-event">{}</span> <code class="paubox-raw">{}</code>', label, name
    )


def admin_link(model: type[Any], pk: Any, text: str) -> SafeString:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)


def pretty_json(value: Any) -> SafeString:
    """Indented, key-sorted JSON in a ``<pre>``; every character escaped."""
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return format_html('<pre class="paubox-json">{}</pre>', text)


def redact_subjects(value: Any) -> Any:
    """Replace every ``subject`` in a webhook payload: shown only when subjects are stored."""
    if isinstance(value, dict):
        return {
            k: "[hidden: STORE_SUBJECT is off]" if k == "subject" else redact_subjects(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_subjects(v) for v in value]
    return value


def clicks_list(clicks: Any) -> SafeString | str:
    """Paubox's ``clicks_per_link`` as a list; URLs are shown as text, never as live links."""
    if not clicks:
        return EMPTY
    if not isinstance(clicks, list):
        return pretty_json(clicks)
    rows = [
        (c.get("click_count", "?"), c.get("target_url", "")) for c in clicks if isinstance(c, dict)
    ]
    if not rows:
        return pretty_json(clicks)
    items = format_html_join("", "<li>{} &times; <code>{}</code></li>", rows)
    return format_html('<ul class="paubox-clicks">{}</ul>', items)


def engagement(obj: Delivery) -> SafeString | str:
    """Paubox's counters (single-recipient messages only) in one cell; a dash when absent."""
    parts = []
    if obj.total_opens is not None:
        distinct = f" ({obj.distinct_opens} distinct)" if obj.distinct_opens is not None else ""
        parts.append(f"{obj.total_opens} open{'s' if obj.total_opens != 1 else ''}{distinct}")
    if obj.total_click_count is not None:
        n = obj.total_click_count
        parts.append(f"{n} click{'s' if n != 1 else ''}")
    if obj.unsubscribed:
        parts.append("unsubscribed")
    if not parts and not obj.clicks_per_link:
        return EMPTY
    clicks = clicks_list(obj.clicks_per_link) if obj.clicks_per_link else ""
    return format_html("{}{}", ", ".join(parts), clicks)


class DeliveryTimes:
    """A delivery's times on its page and in its message's inline, in full, with the zone."""

    @admin.display(description="Delivered")
    def delivered(self, obj: Delivery) -> SafeString | str:
        return full_datetime(obj.delivered_at)

    @admin.display(description="Opened")
    def opened(self, obj: Delivery) -> SafeString | str:
        return full_datetime(obj.opened_at)
