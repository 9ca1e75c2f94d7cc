"""Webhook events as Paubox sent them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import (
    QuerySet,
)
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..conf import get_settings
from ..models import Message, WebhookEvent
from ..tracking.statuses import EVENT_LABELS
from .base import RecordAdminMixin
from .display import (
    CSS,
    EMPTY,
    admin_link,
    event_name,
    full_datetime,
    person,
    pretty_json,
    redact_subjects,
    short_datetime,
    with_zone,
)


class EventNameFilter(admin.SimpleListFilter):
    """Paubox's four events in words; anything else Paubox may add, as "other"."""

    title = "event"
    parameter_name = "event"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [*EVENT_LABELS.items(), ("other", "Other")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "other":
            return queryset.exclude(event_name__in=list(EVENT_LABELS))
        if value in EVENT_LABELS:
            return queryset.filter(event_name=value)
        return queryset


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


class WebhookEventAdmin(RecordAdminMixin, admin.ModelAdmin):
    list_display = (
        "event",
        "to",
        "occurred_short",
        "message_link",
    )
    list_display_links = ("event",)
    list_filter = (EventNameFilter, LinkedFilter, "received_at")
    search_fields = ("source_tracking_id", "recipient", "event_name")
    search_help_text = "Tracking id, recipient address or event name."
    date_hierarchy = "received_at"
    fields = (
        "event",
        "source_tracking_id",
        "message_link",
        "recipient",
        "occurred",
        "received",
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

    @admin.display(description="Event", ordering="event_name")
    def event(self, obj: WebhookEvent) -> SafeString:
        return event_name(obj.event_name)

    @admin.display(description="Recipient", ordering="recipient")
    def to(self, obj: WebhookEvent) -> SafeString | str:
        return person(obj.recipient) if obj.recipient else EMPTY

    @admin.display(description=with_zone("Occurred"), ordering="occurred_at")
    def occurred_short(self, obj: WebhookEvent) -> SafeString | str:
        """When it happened, by Paubox's clock; when it arrived if Paubox gave no time."""
        if obj.occurred_at is None:
            return format_html(
                '{} <span class="paubox-muted">{}</span>',
                short_datetime(obj.received_at),
                "(received)",
            )
        return short_datetime(obj.occurred_at)

    @admin.display(description="Occurred")
    def occurred(self, obj: WebhookEvent) -> SafeString | str:
        return full_datetime(obj.occurred_at)

    @admin.display(description="Received")
    def received(self, obj: WebhookEvent) -> SafeString | str:
        return full_datetime(obj.received_at)

    @admin.display(description="Message")
    def message_link(self, obj: WebhookEvent) -> SafeString | str:
        if obj.message_id is None:
            return format_html('<span class="paubox-muted">{}</span>', "not sent by this app")
        tracking_id = obj.source_tracking_id or f"#{obj.message_id}"
        short = f"{tracking_id[:8]}\u2026" if len(tracking_id) > 12 else tracking_id
        return admin_link(
            Message,
            obj.message_id,
            format_html('<span class="paubox-tracking" title="{}">{}</span>', tracking_id, short),
        )

    @admin.display(description="Payload")
    def payload_pretty(self, obj: WebhookEvent) -> SafeString:
        payload = obj.payload
        if not get_settings().store_subject:
            payload = redact_subjects(payload)
        return pretty_json(payload)


# --- Dynamic templates ----------------------------------------------------------------------
