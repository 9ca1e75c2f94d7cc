"""One row per recipient: the delivery list."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import (
    F,
    QuerySet,
)
from django.http import HttpRequest
from django.utils.safestring import SafeString

from ..models import Delivery, Message
from ..records import DISPOSITION_FIELDS
from .base import ReadOnlyAdminMixin
from .display import (
    CSS,
    admin_link,
    clicks_list,
    status_badge,
)

_SHOWN_AS = {"status": "status_badge", "clicks_per_link": "clicks"}
_FIELDS: tuple[str, ...] = (
    "message_link",
    "recipient",
    "kind",
    *(_SHOWN_AS.get(name, name) for name in DISPOSITION_FIELDS),
    "updated_at",
)


class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "recipient",
        "status_badge",
        "message_link",
        "kind",
        "via_secure_portal",
        "delivered_at",
        "opened_at",
    )
    list_filter = ("status", "via_secure_portal", "kind", "delivered_at", "opened_at")
    search_fields = ("recipient", "message__tracking_id", "raw_status")
    search_help_text = "Recipient address, tracking id or Paubox's raw status."
    #: Every field a receipt or an event may change (records.DISPOSITION_FIELDS).
    fields = _FIELDS
    readonly_fields = _FIELDS

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The tracking id by annotation: a join for one column, never the message's payload.
        return super().get_queryset(request).annotate(message_tracking_id=F("message__tracking_id"))

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Delivery) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="Message", ordering="message__tracking_id")
    def message_link(self, obj: Delivery) -> SafeString:
        tracking_id = getattr(obj, "message_tracking_id", None)
        return admin_link(Message, obj.message_id, tracking_id or f"Message #{obj.message_id}")

    @admin.display(description="Clicks per link")
    def clicks(self, obj: Delivery) -> SafeString | str:
        return clicks_list(obj.clicks_per_link)
