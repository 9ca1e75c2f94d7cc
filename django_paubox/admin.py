"""The Django admin for Paubox messages: who got what, and when they opened it.

Everything here is read-only: rows are written by :mod:`django_paubox.records` from sends,
receipts and webhooks, never by hand. ``Message.payload`` (bodies and attachments: PHI) is
never selected for a list and never rendered; the resend action hands it straight to the
backend. Changelists cost a fixed number of queries however many rows there are (annotations
and subqueries instead of per-row lookups; a test compares 10 rows with 500).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import ngettext

from . import scheduled_sends, templates_api
from .conf import get_settings
from .exceptions import PauboxConfigError, PauboxError
from .handlebars import HandlebarsError
from .models import Delivery, DynamicTemplate, Message, WebhookEvent
from .statuses import Status

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
    full = formats.date_format(local, "DATETIME_FORMAT")
    return format_html('<span class="paubox-nowrap" title="{}">{}</span>', full, text)


def _admin_link(model: type[Any], pk: Any, text: str) -> SafeString:
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


class ReadOnlyAdminMixin:
    """Rows come from Paubox, not from people: view them, never add or edit them.

    Deleting stays governed by Django's ordinary delete permission (and by ``paubox_purge``).
    """

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    """A table of related rows on the message page, for reading only."""

    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False
    classes = ("paubox-inline",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Inlines on the message page ---------------------------------------------------------------


class DeliveryInline(ReadOnlyInline):
    """Every recipient of the message: the answer to "did they get it, and when?"."""

    model = Delivery
    fields = (
        "recipient",
        "kind",
        "status_badge",
        "raw_status",
        "via_secure_portal",
        "delivered",
        "opened",
        "engagement",
    )
    readonly_fields = fields

    @admin.display(description="Status")
    def status_badge(self, obj: Delivery) -> SafeString:
        return status_badge(obj.status)

    @admin.display(description="Delivered")
    def delivered(self, obj: Delivery) -> SafeString | str:
        return short_datetime(obj.delivered_at)

    @admin.display(description="Opened")
    def opened(self, obj: Delivery) -> SafeString | str:
        return short_datetime(obj.opened_at)

    @admin.display(description="Opens, clicks")
    def engagement(self, obj: Delivery) -> SafeString | str:
        return engagement(obj)


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


class WebhookEventInline(ReadOnlyInline):
    model = WebhookEvent
    fields = ("event", "recipient", "occurred", "received")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookEvent]:
        return super().get_queryset(request).defer("payload")

    @admin.display(description="Event")
    def event(self, obj: WebhookEvent) -> SafeString:
        return _admin_link(WebhookEvent, obj.pk, obj.event_name)

    @admin.display(description="Occurred")
    def occurred(self, obj: WebhookEvent) -> SafeString | str:
        return short_datetime(obj.occurred_at)

    @admin.display(description="Received")
    def received(self, obj: WebhookEvent) -> SafeString | str:
        return short_datetime(obj.received_at)


# --- Scheduled sends ---------------------------------------------------------------------------


class ScheduledFilter(admin.SimpleListFilter):
    """Scheduled sends (``paubox_send_at``): still to come, gone out, or cancelled."""

    title = "scheduled send"
    parameter_name = "scheduled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("pending", "Still to come"),
            ("due", "Time has come"),
            ("cancelled", "Cancelled"),
            ("no", "Not scheduled"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        if self.value() == "pending":
            return queryset.filter(state=Message.State.SENT, scheduled_at__gt=now)
        if self.value() == "due":
            return queryset.filter(state=Message.State.SENT, scheduled_at__lte=now)
        if self.value() == "cancelled":
            return queryset.filter(state=Message.State.CANCELLED)
        if self.value() == "no":
            return queryset.filter(scheduled_at__isnull=True)
        return queryset


def _not_pending_text(count: int) -> str:
    return ngettext(
        "%(n)d selected message is not a scheduled send still to come; it was left alone.",
        "%(n)d selected messages are not scheduled sends still to come; they were left alone.",
        count,
    ) % {"n": count}


class RescheduleForm(forms.Form):
    """The new time of a scheduled send, in the admin's current time zone."""

    scheduled_at = forms.DateTimeField(
        label="New time",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"],
    )

    def clean_scheduled_at(self) -> Any:
        when = self.cleaned_data["scheduled_at"]
        if when <= timezone.now():
            raise forms.ValidationError("Choose a time in the future.")
        return when


# --- Messages ---------------------------------------------------------------------------------


#: A whole address (``local@domain.tld``), as opposed to part of one (``jane@``).
_WHOLE_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class MessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("disposition", "tracking", "sender", "recipients", "opened", "when")
    list_display_links = ("tracking",)
    list_filter = ("status", "state", ScheduledFilter, "created_at", "sender_domain")
    search_fields = ("tracking_id", "deliveries__recipient", "subject", "from_email")
    search_help_text = (
        "Tracking id, recipient address, sender or subject. A whole address finds the "
        "messages sent to it."
    )

    def get_search_results(
        self, request: HttpRequest, queryset: Any, search_term: str
    ) -> tuple[Any, bool]:
        """A whole address, the support desk's "did the patient get it?", finds the messages
        sent to it, exactly and through the recipient index: the default ``LIKE '%...%'``
        over a join scans every delivery (0.8 s at 300,000). Part of an address, a sender, a
        subject or a tracking id are searched the usual way."""
        term = search_term.strip()
        if _WHOLE_ADDRESS.fullmatch(term):
            to_them = Delivery.objects.filter(recipient=term.lower()).values("message_id")
            return queryset.filter(pk__in=to_them), False
        return super().get_search_results(request, queryset, search_term)

    date_hierarchy = "created_at"
    inlines = (DeliveryInline, WebhookEventInline)
    actions = ("refresh_receipts", "resend", "cancel_scheduled", "reschedule")
    change_list_template = "django_paubox/admin/message_change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("disposition", "state"),
                    "tracking_id",
                    "from_email",
                    "subject",
                    ("created_at", "sent_at", "scheduled_at"),
                )
            },
        ),
        (
            "Details",
            {
                "classes": ("collapse",),
                "fields": (
                    "sender_domain",
                    "recipient_count",
                    "content",
                    "attempts",
                    ("receipt_checked_at", "next_receipt_check_at"),
                ),
            },
        ),
    )
    #: Shown under the first fieldset when the message has an error.
    error_fieldset = ("Error", {"fields": ("error", "error_status")})
    readonly_fields = (
        "disposition",
        "state",
        "tracking_id",
        "error",
        "error_status",
        "subject",
        "from_email",
        "sender_domain",
        "recipient_count",
        "content",
        "created_at",
        "sent_at",
        "scheduled_at",
        "attempts",
        "receipt_checked_at",
        "next_receipt_check_at",
    )
    exclude = ("payload",)

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        """One query for the page: recipients and opens come from correlated subqueries."""
        deliveries = Delivery.objects.filter(message=OuterRef("pk")).order_by()
        opened = deliveries.filter(opened_at__isnull=False)
        return (
            super()
            .get_queryset(request)
            .defer("payload")
            .annotate(
                first_recipient=Subquery(deliveries.order_by("id").values("recipient")[:1]),
                opened_count=Coalesce(
                    Subquery(
                        opened.values("message").annotate(n=Count("id")).values("n"),
                        output_field=IntegerField(),
                    ),
                    Value(0),
                ),
                first_opened_at=Subquery(
                    opened.values("message").annotate(at=Min("opened_at")).values("at")
                ),
                has_content=ExpressionWrapper(
                    Q(payload__isnull=False), output_field=BooleanField()
                ),
            )
        )

    # Columns and fields.

    @admin.display(description="Status", ordering="status")
    def disposition(self, obj: Message) -> SafeString:
        if obj.state == Message.State.CANCELLED:
            return format_html(
                '<span class="paubox-badge paubox-badge--{}">Cancelled</span>', "cancelled"
            )
        return status_badge(obj.status)

    def get_fieldsets(self, request: HttpRequest, obj: Message | None = None) -> Any:
        """The error, when there is one, right under the status."""
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
        if obj is not None and (obj.error or obj.error_status):
            fieldsets.insert(1, self.error_fieldset)
        return fieldsets

    @admin.display(description="Tracking id", ordering="tracking_id")
    def tracking(self, obj: Message) -> SafeString:
        tracking_id = obj.tracking_id
        if tracking_id:
            # Paubox's ids are 36-character UUIDs: the first 8 tell rows apart; the full id is
            # in the tooltip, on the message page, and searchable.
            short = f"{tracking_id[:8]}\u2026" if len(tracking_id) > 12 else tracking_id
            return format_html(
                '<span class="paubox-tracking" title="{}">{}</span>', tracking_id, short
            )
        return format_html('#{} <span class="paubox-muted">(no tracking id)</span>', obj.pk)

    @admin.display(description="From", ordering="from_email")
    def sender(self, obj: Message) -> SafeString:
        return format_html('<span class="paubox-nowrap">{}</span>', obj.from_email)

    @admin.display(description="Sent", ordering="created_at")
    def when(self, obj: Message) -> SafeString | str:
        """When Paubox accepted it; for messages it never accepted, when they were created.

        A scheduled send shows its time, marked while it is still to come or once cancelled.
        """
        if obj.scheduled_at and obj.state == Message.State.CANCELLED:
            return format_html(
                '{} <span class="paubox-muted">(cancelled)</span>', short_datetime(obj.scheduled_at)
            )
        if obj.scheduled_at and obj.scheduled_at > timezone.now():
            return format_html(
                '{} <span class="paubox-scheduled">(scheduled)</span>',
                short_datetime(obj.scheduled_at),
            )
        if obj.sent_at:
            return short_datetime(obj.sent_at)
        return format_html(
            '{} <span class="paubox-muted">(not sent)</span>', short_datetime(obj.created_at)
        )

    @admin.display(description="Recipients", ordering="recipient_count")
    def recipients(self, obj: Message) -> SafeString | str:
        first = getattr(obj, "first_recipient", None)
        if not first:
            return str(obj.recipient_count) if obj.recipient_count else EMPTY
        more = obj.recipient_count - 1
        if more > 0:
            return format_html(
                '<span class="paubox-nowrap">{} <span class="paubox-muted">+{} more</span></span>',
                first,
                more,
            )
        return first

    @admin.display(description="First opened", ordering="first_opened_at")
    def opened(self, obj: Message) -> SafeString | str:
        at = getattr(obj, "first_opened_at", None)
        if at is None:
            return EMPTY
        count = getattr(obj, "opened_count", 0)
        if obj.recipient_count > 1:
            return format_html(
                '{} <span class="paubox-muted">({} of {})</span>',
                short_datetime(at),
                count,
                obj.recipient_count,
            )
        return short_datetime(at)

    @admin.display(description="Content stored")
    def content(self, obj: Message) -> str:
        stored = getattr(obj, "has_content", None)
        if stored is None:
            stored = Message.objects.filter(pk=obj.pk, payload__isnull=False).exists()
        if stored and obj.state in (Message.State.QUEUED, Message.State.SENDING):
            return "Yes, until it is sent (the outbox needs it); never shown here"
        if stored:
            return "Yes (it can be resent; it is never shown here)"
        return 'No (PAUBOX["STORE_CONTENT"] is off: bodies are not kept, for HIPAA)'

    # Permissions for the actions.

    def has_schedule_permission(self, request: HttpRequest) -> bool:
        """Cancelling or moving a scheduled send changes what is sent: the change right."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def has_resend_permission(self, request: HttpRequest) -> bool:
        """Resending sends email again: it needs the right to add messages."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.add_{opts.model_name}")

    # Actions.

    @admin.action(description="Refresh receipts now", permissions=["view"])
    def refresh_receipts(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Ask Paubox for the receipts of the selected messages now, not at the next poll."""
        from .receipts import refresh_receipts

        selected = list(queryset)
        sent = [m for m in selected if m.tracking_id]
        unsent = len(selected) - len(sent)
        if not sent:
            self.message_user(
                request,
                "None of the selected messages has a tracking id: Paubox never accepted them, "
                "so there is no receipt to ask for.",
                messages.WARNING,
            )
            return
        try:
            summary = refresh_receipts(sent, conf=get_settings())
        except PauboxConfigError as exc:
            self.message_user(request, f"Cannot refresh receipts: {exc}", messages.ERROR)
            return
        except PauboxError as exc:
            self.message_user(request, f"Refreshing receipts failed: {exc}", messages.ERROR)
            return
        errors = summary.errors
        parts = [
            ngettext(
                "Checked %(n)d message: ",
                "Checked %(n)d messages: ",
                summary.checked,
            )
            % {"n": summary.checked},
            f"{summary.changed} changed, {summary.not_found_yet} not known to Paubox yet, "
            f"{errors} {'error' if errors == 1 else 'errors'}.",
        ]
        if unsent:
            parts.append(
                ngettext(
                    " %(n)d was skipped: it was never accepted by Paubox.",
                    " %(n)d were skipped: they were never accepted by Paubox.",
                    unsent,
                )
                % {"n": unsent}
            )
        level = messages.WARNING if errors else messages.SUCCESS
        self.message_user(request, "".join(parts), level)

    @admin.action(description="Resend", permissions=["resend"])
    def resend(self, request: HttpRequest, queryset: QuerySet[Message]) -> HttpResponse | None:
        """Send stored messages again, after a confirmation page; say why others cannot be."""
        selected = list(queryset.order_by("pk"))
        resendable, refused = classify_for_resend(selected)
        if not resendable:
            self._report_refused(request, refused)
            return None
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Resend messages?",
                "opts": self.opts,
                "resendable": resendable,
                "refused": refused,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "media": self.media,
            }
            return TemplateResponse(
                request, "django_paubox/admin/resend_confirmation.html", context
            )
        self._report_refused(request, refused)
        self._resend(request, resendable)
        return None

    @admin.action(description="Cancel scheduled send", permissions=["schedule"])
    def cancel_scheduled(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        """Ask Paubox not to send the selected scheduled messages (those still to come)."""
        selected = list(queryset.order_by("pk"))
        pending = [m for m in selected if scheduled_sends.is_pending(m)]
        skipped = len(selected) - len(pending)
        done = 0
        for message in pending:
            try:
                scheduled_sends.cancel(message)
            except PauboxError as exc:
                self.message_user(request, f"Cancelling {message} failed: {exc}", messages.ERROR)
                continue
            done += 1
        if done:
            self.message_user(
                request,
                ngettext(
                    "Cancelled %(n)d scheduled send: Paubox will not send it.",
                    "Cancelled %(n)d scheduled sends: Paubox will not send them.",
                    done,
                )
                % {"n": done},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, _not_pending_text(skipped), messages.WARNING)

    @admin.action(description="Reschedule", permissions=["schedule"])
    def reschedule(self, request: HttpRequest, queryset: QuerySet[Message]) -> HttpResponse | None:
        """Move the selected scheduled sends to a new time, chosen on a small form."""
        selected = list(queryset.order_by("pk"))
        pending = [m for m in selected if scheduled_sends.is_pending(m)]
        skipped = len(selected) - len(pending)
        if not pending:
            self.message_user(request, _not_pending_text(skipped), messages.WARNING)
            return None
        form = RescheduleForm(request.POST if request.POST.get("post") == "yes" else None)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "title": "Reschedule scheduled sends",
                "opts": self.opts,
                "pending": pending,
                "skipped": skipped,
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "timezone": timezone.get_current_timezone_name(),
                "media": self.media,
            }
            return TemplateResponse(request, "django_paubox/admin/reschedule.html", context)
        when = form.cleaned_data["scheduled_at"]
        done = 0
        for message in pending:
            try:
                scheduled_sends.reschedule(message, when)
            except PauboxError as exc:
                self.message_user(request, f"Rescheduling {message} failed: {exc}", messages.ERROR)
                continue
            done += 1
        if done:
            shown = formats.date_format(timezone.localtime(when), "DATETIME_FORMAT")
            self.message_user(
                request,
                ngettext(
                    "Rescheduled %(n)d message to %(when)s.",
                    "Rescheduled %(n)d messages to %(when)s.",
                    done,
                )
                % {"n": done, "when": shown},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, _not_pending_text(skipped), messages.WARNING)
        return None

    def _report_refused(self, request: HttpRequest, refused: list[tuple[Message, str]]) -> None:
        for reason, group in _group_reasons(refused).items():
            names = ", ".join(str(m) for m in group[:10]) + (" …" if len(group) > 10 else "")
            self.message_user(
                request,
                ngettext(
                    "Cannot resend %(n)d message (%(names)s): %(reason)s",
                    "Cannot resend %(n)d messages (%(names)s): %(reason)s",
                    len(group),
                )
                % {"n": len(group), "names": names, "reason": reason},
                messages.WARNING,
            )

    def _resend(self, request: HttpRequest, resendable: list[Message]) -> None:
        from .backends import resend_stored

        done: list[Message] = []
        for old in resendable:
            # Loaded one at a time: the payload (PHI, maybe large) of a single message in memory.
            message = Message.objects.get(pk=old.pk)
            try:
                new = resend_stored(message)
            except PauboxError as exc:
                self.message_user(request, f"Resending {old} failed: {exc}", messages.ERROR)
                continue
            if new.state == Message.State.FAILED:
                self.message_user(
                    request,
                    format_html(
                        "Resending {} failed ({}): {}",
                        old,
                        _admin_link(Message, new.pk, str(new)),
                        new.error,
                    ),
                    messages.ERROR,
                )
                continue
            done.append(new)
        if done:
            links = format_html_join(
                ", ", "{}", ((_admin_link(Message, m.pk, str(m)),) for m in done)
            )
            self.message_user(
                request,
                format_html(
                    "{} {}",
                    ngettext("Resent %(n)d message:", "Resent %(n)d messages:", len(done))
                    % {"n": len(done)},
                    links,
                ),
                messages.SUCCESS,
            )

    # The dashboard.

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        return [
            path(
                "dashboard/",
                self.admin_site.admin_view(self.dashboard_view),
                name="{}_{}_dashboard".format(*info),
            ),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Sends per day by outcome, delivery/bounce/open rates, and this month's usage."""
        from .dashboard import build_dashboard

        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Paubox dashboard",
            "opts": self.opts,
            "dashboard": build_dashboard(get_settings()),
            "media": self.media,
        }
        return TemplateResponse(request, "django_paubox/admin/dashboard.html", context)


RESEND_REASONS = {
    "no_content": (
        'its content was not stored. PAUBOX["STORE_CONTENT"] is off, so bodies and attachments '
        "are not kept after sending (they are PHI, for HIPAA); send it again from the "
        "application instead."
    ),
    "in_flight": "it is still queued or being sent; wait for the outcome first.",
}


def classify_for_resend(
    selected: Iterable[Message],
) -> tuple[list[Message], list[tuple[Message, str]]]:
    """Split messages into those that can be resent and those that cannot, with the reason."""
    resendable: list[Message] = []
    refused: list[tuple[Message, str]] = []
    for message in selected:
        stored = getattr(message, "has_content", None)
        if stored is None:
            stored = Message.objects.filter(pk=message.pk, payload__isnull=False).exists()
        if message.state in (Message.State.QUEUED, Message.State.SENDING):
            refused.append((message, RESEND_REASONS["in_flight"]))
        elif not stored:
            refused.append((message, RESEND_REASONS["no_content"]))
        else:
            resendable.append(message)
    return resendable, refused


def _group_reasons(refused: list[tuple[Message, str]]) -> dict[str, list[Message]]:
    groups: dict[str, list[Message]] = {}
    for message, reason in refused:
        groups.setdefault(reason, []).append(message)
    return groups


# --- Deliveries and webhook events ------------------------------------------------------------


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
    fields = (
        "message_link",
        "recipient",
        "kind",
        "status_badge",
        "raw_status",
        "via_secure_portal",
        "delivered_at",
        "opened_at",
        "total_opens",
        "distinct_opens",
        "total_click_count",
        "clicks",
        "unsubscribed",
        "updated_at",
    )
    readonly_fields = fields

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
        return _admin_link(Message, obj.message_id, tracking_id or f"Message #{obj.message_id}")

    @admin.display(description="Clicks per link")
    def clicks(self, obj: Delivery) -> SafeString | str:
        return clicks_list(obj.clicks_per_link)


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
        return _admin_link(Message, obj.message_id, obj.source_tracking_id or f"#{obj.message_id}")

    @admin.display(description="Payload")
    def payload_pretty(self, obj: WebhookEvent) -> SafeString:
        payload = obj.payload
        if not get_settings().store_subject:
            payload = redact_subjects(payload)
        return pretty_json(payload)


# --- Dynamic templates ----------------------------------------------------------------------


class DynamicTemplateForm(forms.ModelForm):
    """Name, body and sample values; saving sends name and body to Paubox first.

    The API call happens in :meth:`clean`, so that Paubox's refusal (a duplicate name, a bad
    template) shows on the form instead of after a half-done save.
    """

    class Meta:
        model = DynamicTemplate
        fields = ("name", "body", "sample_values")
        widgets = {
            "body": forms.Textarea(
                attrs={"rows": 18, "class": "paubox-code", "spellcheck": "false"}
            ),
            "sample_values": forms.Textarea(attrs={"rows": 6, "class": "paubox-code"}),
        }

    #: Paubox's answer about the template, once it accepted the change.
    paubox_answer: dict[str, Any] | None = None

    def clean_sample_values(self) -> Any:
        values = self.cleaned_data.get("sample_values")
        if values in (None, ""):
            return {}
        if not isinstance(values, dict):
            raise forms.ValidationError('Give a JSON object, such as {"name": "Ada"}.')
        return values

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned
        name, body = cleaned.get("name", ""), cleaned.get("body", "")
        if not body.strip():
            self.add_error("body", "Paubox needs a template body.")
            return cleaned
        creating = self.instance.pk is None
        changed = set(self.changed_data) & {"name", "body"}
        if not creating and not changed:
            return cleaned  # only the sample values changed: nothing to tell Paubox
        try:
            with templates_api.paubox_client() as api:
                if creating:
                    self.paubox_answer = api.create_template(name, body)
                else:
                    self.paubox_answer = api.update_template(
                        self.instance.paubox_id,
                        name=name if "name" in changed else None,
                        body=body if "body" in changed else None,
                    )
        except PauboxError as exc:
            raise forms.ValidationError(f"Paubox refused the template: {exc}") from None
        return cleaned


class DynamicTemplateAdmin(admin.ModelAdmin):
    """Paubox's dynamic templates: every change goes to Paubox first, then to the mirror."""

    form = DynamicTemplateForm
    list_display = ("name", "paubox_id", "paubox_updated_at", "synced_at")
    search_fields = ("name",)
    search_help_text = "Template name."
    readonly_fields = (
        "preview",
        "paubox_id",
        "paubox_created_at",
        "paubox_updated_at",
        "synced_at",
    )
    fieldsets = (
        (None, {"fields": ("name", "body")}),
        (
            "Preview",
            {
                "fields": ("sample_values", "preview"),
                "description": (
                    "Rendered here from the sample values (made-up data only), with the "
                    "Handlebars subset Paubox's documentation uses."
                ),
            },
        ),
        (
            "Paubox",
            {
                "classes": ("collapse",),
                "fields": ("paubox_id", "paubox_created_at", "paubox_updated_at", "synced_at"),
            },
        ),
    )
    actions = ("sync_from_paubox",)
    change_list_template = "django_paubox/admin/dynamictemplate_change_list.html"

    class Media:
        css = CSS

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        context = {"paubox_can_sync": self.has_change_permission(request), **(extra_context or {})}
        return super().changelist_view(request, context)

    def get_actions(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # Bulk delete would report success for templates Paubox refused to delete: templates
        # are deleted one at a time, from their page, through Paubox. (*args: Django 6.1 adds
        # an action_location argument.)
        actions = super().get_actions(request, *args, **kwargs)
        actions.pop("delete_selected", None)
        return actions

    def save_model(
        self, request: HttpRequest, obj: DynamicTemplate, form: Any, change: bool
    ) -> None:
        answer = getattr(form, "paubox_answer", None)
        if answer is not None:
            name, body = obj.name, obj.body
            templates_api.apply_answer(obj, answer)
            obj.name = obj.name or name
            if answer.get("body") is None:
                obj.body = body
        super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: DynamicTemplate) -> None:
        try:
            templates_api.delete_template(obj)
        except PauboxError as exc:
            request._paubox_delete_error = str(exc)  # type: ignore[attr-defined]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        error = getattr(request, "_paubox_delete_error", None)
        if error is None:
            return super().response_delete(request, obj_display, obj_id)
        self.message_user(request, f"Paubox did not delete {obj_display}: {error}", messages.ERROR)
        info = (self.opts.app_label, self.opts.model_name)
        return HttpResponseRedirect(reverse("admin:{}_{}_change".format(*info), args=[obj_id]))

    @admin.display(description="Preview")
    def preview(self, obj: DynamicTemplate | None) -> SafeString | str:
        """The body rendered with the sample values, in a sandboxed frame (no scripts)."""
        if obj is None or obj.pk is None:
            return "Save the template to see a preview."
        try:
            html = templates_api.render_preview(obj.body, obj.sample_values or {})
        except HandlebarsError as exc:
            return f"No preview: {exc}. Paubox may still render it; the preview cannot."
        return format_html(
            '<iframe class="paubox-preview" sandbox="" srcdoc="{}" title="Preview"></iframe>'
            '<details class="paubox-preview-source"><summary>Rendered HTML</summary>'
            '<pre class="paubox-json">{}</pre></details>',
            html,
            html,
        )

    @admin.action(description="Sync all templates from Paubox", permissions=["change"])
    def sync_from_paubox(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        """Rebuild the whole mirror from Paubox (whatever is selected)."""
        self._sync(request)

    def _sync(self, request: HttpRequest) -> None:
        try:
            summary = templates_api.sync_templates()
        except PauboxError as exc:
            self.message_user(request, f"Syncing templates failed: {exc}", messages.ERROR)
            return
        self.message_user(request, f"Synced templates from Paubox: {summary}.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        return [
            path(
                "sync/",
                self.admin_site.admin_view(self.sync_view),
                name="{}_{}_sync".format(*info),
            ),
            *super().get_urls(),
        ]

    def sync_view(self, request: HttpRequest) -> HttpResponse:
        """POST only (it changes the mirror): the changelist's "Sync from Paubox" button."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        self._sync(request)
        info = (self.opts.app_label, self.opts.model_name)
        return HttpResponseRedirect(reverse("admin:{}_{}_changelist".format(*info)))


admin.site.register(Message, MessageAdmin)
admin.site.register(Delivery, DeliveryAdmin)
admin.site.register(WebhookEvent, WebhookEventAdmin)
admin.site.register(DynamicTemplate, DynamicTemplateAdmin)

__all__ = [
    "DeliveryAdmin",
    "DynamicTemplateAdmin",
    "MessageAdmin",
    "ScheduledFilter",
    "WebhookEventAdmin",
    "classify_for_resend",
    "status_badge",
]
