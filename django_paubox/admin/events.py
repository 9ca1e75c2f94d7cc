"""Webhook events as Paubox sent them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import (
    QuerySet,
)
from django.http import HttpRequest
from django.utils.safestring import SafeString

from ..conf import get_settings
from ..models import Message, WebhookEvent
from .base import ReadOnlyAdminMixin
from .display import (
    CSS,
    EMPTY,
    admin_link,
    pretty_json,
    redact_subjects,
)


class LinkedFilter(admin.SimpleListFilter):
    """Paubox sends the whole organisation's events: tell ours from the others."""

    title = "sent by this app"
    parameter_name = "linked"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No (another system of the organisation)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(message__isnull=False)
        if self.value() == "no":
            return queryset.filter(message__isnull=True)
        return queryset


class WebhookEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "event_name",
        "source_tracking_id",
        "recipient",
        "occurred_at",
        "received_at",
        "message_link",
    )
    list_filter = ("event_name", LinkedFilter, "received_at")
    search_fields = ("source_tracking_id", "recipient", "event_name")
    search_help_text = "Tracking id, recipient address or event name."
    date_hierarchy = "received_at"
    fields = (
        "event_name",
        "source_tracking_id",
        "message_link",
        "recipient",
        "occurred_at",
        "received_at",
        "dedupe_key",
        "payload_pretty",
    )
    readonly_fields = fields

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        queryset = super().get_queryset(request)
        # Lists never need the payload; the detail page loads it.
        match = request.resolver_match
        if match and (match.url_name or "").endswith("changelist"):
            queryset = queryset.defer("payload")
        return queryset

    @admin.display(description="Message")
    def message_link(self, obj: WebhookEvent) -> SafeString | str:
        if obj.message_id is None:
            return EMPTY
        return admin_link(Message, obj.message_id, obj.source_tracking_id or f"#{obj.message_id}")

    @admin.display(description="Payload")
    def payload_pretty(self, obj: WebhookEvent) -> SafeString:
        payload = obj.payload
        if not get_settings().store_subject:
            payload = redact_subjects(payload)
        return pretty_json(payload)


# --- Dynamic templates ----------------------------------------------------------------------
