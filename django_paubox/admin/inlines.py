"""A message's deliveries and webhook events, shown on its page."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import (
    QuerySet,
)
from django.http import HttpRequest
from django.utils.safestring import SafeString

from ..models import Delivery, WebhookEvent
from ..tracking.statuses import desk_status
from .base import ReadOnlyInline
from .display import (
    DeliveryTimes,
    admin_link,
    desk_badge,
    engagement,
    event_name,
    full_datetime,
    person,
)


class DeliveryInline(DeliveryTimes, ReadOnlyInline):
    """Every recipient of the message: the answer to "did they get it, and when?"."""

    model = Delivery
    fields = (
        "who",
        "kind",
        "status_badge",
        "raw_status",
        "via_secure_portal",
        "delivered",
        "opened",
        "engagement",
    )
    readonly_fields = fields

    @admin.display(description="Recipient")
    def who(self, obj: Delivery) -> SafeString | str:
        return person(obj.recipient, obj.display_name)

    @admin.display(description="Status")
    def status_badge(self, obj: Delivery) -> SafeString:
        return desk_badge(desk_status(obj.status, opened=obj.opened_at is not None), raw=obj.status)

    @admin.display(description="Opens, clicks")
    def engagement(self, obj: Delivery) -> SafeString | str:
        return engagement(obj)


class WebhookEventInline(ReadOnlyInline):
    model = WebhookEvent
    fields = ("event", "recipient", "occurred", "received")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        return super().get_queryset(request).defer("payload")

    @admin.display(description="Event")
    def event(self, obj: WebhookEvent) -> SafeString:
        return admin_link(WebhookEvent, obj.pk, event_name(obj.event_name))

    @admin.display(description="Occurred")
    def occurred(self, obj: WebhookEvent) -> SafeString | str:
        return full_datetime(obj.occurred_at)

    @admin.display(description="Received")
    def received(self, obj: WebhookEvent) -> SafeString | str:
        return full_datetime(obj.received_at)


# --- Scheduled sends ---------------------------------------------------------------------------
