"""One row per recipient: the delivery list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import (
    F,
    QuerySet,
)
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..conf import get_settings
from ..models import Delivery, Message
from ..records import DISPOSITION_FIELDS
from ..tracking.statuses import DESK_STATUSES, Status, desk_status
from .base import RecordAdminMixin
from .display import (
    CSS,
    EMPTY,
    DeliveryTimes,
    admin_link,
    clicks_list,
    desk_badge,
    full_datetime,
    person,
    short_datetime,
    with_zone,
)

#: Times are shown to the second, with the time zone.
_SHOWN_AS = {
    "status": "status_badge",
    "clicks_per_link": "clicks",
    "delivered_at": "delivered",
    "opened_at": "opened",
}
_FIELDS: tuple[str, ...] = (
    "message_link",
    "recipient",
    "display_name",
    "kind",
    *(_SHOWN_AS.get(name, name) for name in DISPOSITION_FIELDS),
    "updated",
)
#: The desk words a delivery can have (a scheduled or cancelled send is the message's word).
_DELIVERY_WORDS = ("queued", "sent", "processing", "soft_bounced", "delivered", "opened")


class DeliveryStatusFilter(admin.SimpleListFilter):
    """The desk's words (``tracking.statuses.DESK_STATUSES``), as on the message list."""

    title = "status"
    parameter_name = "desk_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        keys = (*_DELIVERY_WORDS, "hard_bounced", "failed")
        return [(key, DESK_STATUSES[key][0]) for key in keys]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "opened":
            return queryset.filter(status=Status.DELIVERED, opened_at__isnull=False)
        if value == "delivered":
            return queryset.filter(status=Status.DELIVERED, opened_at__isnull=True)
        if value in Status.values:
            return queryset.filter(status=value)
        return queryset


class DeliveryAdmin(RecordAdminMixin, DeliveryTimes, admin.ModelAdmin):
    list_display = (
        "who",
        "status_badge",
        "message_link",
        "kind",
        "delivered_short",
    )
    list_filter = (DeliveryStatusFilter, "via_secure_portal", "kind", "delivered_at", "opened_at")
    search_fields = ("recipient", "display_name", "message__tracking_id", "raw_status")
    search_help_text = "A patient's name or address, a tracking id or Paubox's raw status."
    #: Every field a receipt or an event may change (records.DISPOSITION_FIELDS).
    fields = _FIELDS
    readonly_fields = _FIELDS

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The message's subject and tracking id by annotation: a join for two columns, never
        # the message's payload.
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_tracking_id=F("message__tracking_id"),
                message_subject=F("message__subject"),
            )
        )

    def get_search_fields(self, request: HttpRequest) -> Any:
        if get_settings().store_subject:
            return self.search_fields
        return tuple(f for f in self.search_fields if f != "display_name")

    @admin.display(description="Recipient", ordering="recipient")
    def who(self, obj: Delivery) -> SafeString | str:
        return person(obj.recipient, obj.display_name)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Delivery) -> SafeString:
        """The desk word; under it when it was opened, and the secure portal when used."""
        key = desk_status(obj.status, opened=obj.opened_at is not None)
        notes = []
        if obj.opened_at is not None:
            prefix = "" if key == "opened" else "opened "
            notes.append(format_html("{}{}", prefix, short_datetime(obj.opened_at)))
        if obj.via_secure_portal:
            notes.append(format_html('<span class="paubox-muted">{}</span>', "via secure portal"))
        return format_html(
            "{}{}",
            desk_badge(key, raw=obj.status),
            format_html_join("", '<span class="paubox-opened">{}</span>', ((n,) for n in notes)),
        )

    @admin.display(description="Message", ordering="message__subject")
    def message_link(self, obj: Delivery) -> SafeString:
        subject = getattr(obj, "message_subject", "") if get_settings().store_subject else ""
        tracking_id = getattr(obj, "message_tracking_id", None)
        text = subject or tracking_id or f"Message #{obj.message_id}"
        return admin_link(
            Message, obj.message_id, format_html('<span class="paubox-subject">{}</span>', text)
        )

    @admin.display(description=with_zone("Delivered"), ordering="delivered_at")
    def delivered_short(self, obj: Delivery) -> SafeString | str:
        return short_datetime(obj.delivered_at)

    @admin.display(description="Updated")
    def updated(self, obj: Delivery) -> SafeString | str:
        return full_datetime(obj.updated_at) if obj.updated_at else EMPTY

    @admin.display(description="Clicks per link")
    def clicks(self, obj: Delivery) -> SafeString | str:
        return clicks_list(obj.clicks_per_link)
