"""The message list and page: the support desk's first stop."""

from __future__ import annotations

import re
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import smart_split, unescape_string_literal

from ..conf import get_settings
from ..models import Delivery, Message
from ..tracking.statuses import DESK_STATUSES, Status
from .base import RecordAdminMixin
from .display import (
    CSS,
    EMPTY,
    desk_badge,
    full_datetime,
    message_desk_key,
    person,
    short_datetime,
    with_zone,
)
from .inlines import DeliveryInline, WebhookEventInline
from .listing import ListingFields, SenderDomainFilter, TagFilter
from .message_actions import MessageActions


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


class DeskStatusFilter(admin.SimpleListFilter):
    """The desk's one vocabulary (``tracking.statuses.DESK_STATUSES``), not the two columns
    (``status`` and ``state``) it is made of."""

    title = "status"
    parameter_name = "desk_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in DESK_STATUSES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value not in DESK_STATUSES:
            return queryset
        now = timezone.now()
        opened = Exists(Delivery.objects.filter(message=OuterRef("pk"), opened_at__isnull=False))
        accepted_not_reported = Q(state=Message.State.SENT, status=Status.QUEUED)
        lookups = {
            "queued": Q(state__in=(Message.State.QUEUED, Message.State.SENDING)),
            "scheduled": accepted_not_reported & Q(scheduled_at__gt=now),
            "sent": Q(state=Message.State.SENT, status=Status.SENT)
            | (accepted_not_reported & ~Q(scheduled_at__gt=now)),
            "delivered": Q(status=Status.DELIVERED) & ~Q(opened),
            "opened": Q(status=Status.DELIVERED) & Q(opened),
            "failed": Q(status=Status.FAILED) & ~Q(state=Message.State.CANCELLED),
            "cancelled": Q(state=Message.State.CANCELLED),
        }
        where = lookups.get(value, Q(status=value))
        if value not in ("queued", "cancelled"):
            where &= ~Q(state__in=(Message.State.QUEUED, Message.State.SENDING))
        return queryset.filter(where)


_WHOLE_ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
#: A search word that matches at most this many messages is resolved to their ids once, so
#: that the page's queries (its count and its rows) look them up by primary key instead of
#: repeating a scan that no index serves. Small enough for any database's IN list.
SEARCH_IDS_AT_MOST = 500


class MessageAdmin(RecordAdminMixin, ListingFields, MessageActions):
    #: The subject leads (the link to the page); without ``STORE_SUBJECT`` the recipients do.
    list_display = ("subject_line", "recipients", "disposition", "when")
    list_display_links = ("subject_line",)
    #: No second COUNT(*) over every message for "(N total)" beside a filtered count: with the
    #: tag filter's choices, that keeps the page at 8 queries however many rows there are.
    show_full_result_count = False
    list_filter = (DeskStatusFilter, ScheduledFilter, TagFilter, "created_at", SenderDomainFilter)
    search_fields = ("tracking_id", "subject", "from_email")
    search_help_text = (
        "A patient's name or address, a subject, a sender or a tracking id. A whole address "
        "finds the messages sent to it."
    )

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = tuple(super().get_list_display(request))
        if not get_settings().store_subject:
            columns = tuple(c for c in columns if c != "subject_line")
        return columns

    def get_list_display_links(self, request: HttpRequest, list_display: Any) -> Any:
        if "subject_line" in list_display:
            return ("subject_line",)
        return ("recipients",)

    def get_search_fields(self, request: HttpRequest) -> Any:
        if get_settings().store_subject:
            return self.search_fields
        return tuple(f for f in self.search_fields if f != "subject")

    def get_search_results(
        self, request: HttpRequest, queryset: Any, search_term: str
    ) -> tuple[Any, bool]:
        """A whole address, the support desk's "did the patient get it?", finds the messages
        sent to it, exactly and through the recipient index: the default ``LIKE '%...%'``
        over a join scans every delivery (0.8 s at 300,000).

        Anything else is searched word by word (every word must match somewhere, as Django
        does) in the message's own fields and in its recipients' addresses and display names;
        recipients through a subquery, never a join, so a message is listed once. A patient's
        name matches few messages: one scan finds their ids (see
        :data:`SEARCH_IDS_AT_MOST`), and the page's count and rows are then lookups by primary
        key. A word matching more stays a subquery.
        """
        term = search_term.strip()
        if _WHOLE_ADDRESS.fullmatch(term):
            to_them = Delivery.objects.filter(recipient=term.lower()).values("message_id")
            return queryset.filter(pk__in=to_them), False
        fields = self.get_search_fields(request)
        for bit in smart_split(term):
            if bit.startswith(('"', "'")) and bit[0] == bit[-1]:
                bit = unescape_string_literal(bit)
            recipients = (
                Delivery.objects.filter(
                    Q(recipient__icontains=bit) | Q(display_name__icontains=bit)
                )
                .order_by()
                .values_list("message_id", flat=True)
            )
            own = Q()
            for name in fields:
                own |= Q(**{f"{name}__icontains": bit})
            messages = Message.objects.filter(own).order_by().values_list("pk", flat=True)
            # UNION ALL stops at the limit: more rows than that (a message can come more than
            # once) may mean more messages, and the word stays a subquery.
            rows = list(recipients.union(messages, all=True).order_by()[: SEARCH_IDS_AT_MOST + 1])
            if len(rows) <= SEARCH_IDS_AT_MOST:
                queryset = queryset.filter(pk__in=sorted(set(rows)))
            else:
                # One IN over a UNION, not "IN (...) OR LIKE ...": PostgreSQL estimates an OR
                # with a subquery at half the table, plans an index walk over every row and
                # compiles it (JIT) for seconds; a semi-join on the union is planned by its
                # real size.
                queryset = queryset.filter(pk__in=recipients.union(messages))
        return queryset, False

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """Search results come without the date bar: they are listed newest first, and the bar
        would cost two more queries over the matches on every page."""
        changelist = super().get_changelist_instance(request)
        if changelist.query:
            changelist.date_hierarchy = None
        return changelist

    date_hierarchy = "created_at"
    inlines = (DeliveryInline, WebhookEventInline)
    actions = ("refresh_receipts", "resend", "cancel_scheduled", "reschedule")
    change_list_template = "django_paubox/admin/message_change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status_detail",
                    "tracking_id",
                    "from_email",
                    "subject",
                    ("created", "sent", "scheduled"),
                    ("tag_list", "metadata_list"),
                    "suppressed_recipients",
                )
            },
        ),
        (
            "Details",
            {
                "classes": ("collapse",),
                "fields": (
                    "sender_domain",
                    "mailer",
                    "recipient_count",
                    "content",
                    "attempts",
                    ("receipt_checked", "next_receipt_check"),
                ),
            },
        ),
    )
    #: Shown under the first fieldset when the message has an error.
    error_fieldset = ("Error", {"fields": ("error", "error_status")})
    readonly_fields = (
        "status_detail",
        "tracking_id",
        "error",
        "error_status",
        "subject",
        "from_email",
        "sender_domain",
        "mailer",
        "recipient_count",
        "content",
        "created",
        "sent",
        "scheduled",
        "attempts",
        "receipt_checked",
        "next_receipt_check",
        "tag_list",
        "metadata_list",
        "suppressed_recipients",
    )
    exclude = ("payload",)

    class Media:
        css = CSS

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        """One query for the page: recipients and opens come from correlated subqueries."""
        deliveries = Delivery.objects.filter(message=OuterRef("pk")).order_by()
        first = deliveries.order_by("id")
        opened = deliveries.filter(opened_at__isnull=False)
        return (
            super()
            .get_queryset(request)
            .defer("payload")
            .annotate(
                first_recipient=Subquery(first.values("recipient")[:1]),
                first_display_name=Subquery(first.values("display_name")[:1]),
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

    @staticmethod
    def desk_key(obj: Message) -> str:
        """The message's one desk word (see ``tracking.statuses.desk_status``)."""
        return message_desk_key(obj)

    @admin.display(description="Subject", ordering="subject")
    def subject_line(self, obj: Message) -> SafeString:
        if not obj.subject:
            return format_html('<span class="paubox-muted">{}</span>', "(no subject)")
        return format_html(
            '<span class="paubox-subject" title="{}">{}</span>', obj.subject, obj.subject
        )

    @admin.display(description="Status", ordering="status")
    def disposition(self, obj: Message) -> SafeString:
        """The desk word, and under it when it was first opened (and by how many)."""
        key = self.desk_key(obj)
        badge = desk_badge(key, raw=obj.status)
        at = getattr(obj, "first_opened_at", None)
        count = getattr(obj, "opened_count", 0)
        if not at or not count:
            return badge
        share = f" ({count} of {obj.recipient_count})" if obj.recipient_count > 1 else ""
        prefix = "" if key == "opened" else "opened "
        return format_html(
            '{}<span class="paubox-opened">{}{}<span class="paubox-muted">{}</span></span>',
            badge,
            prefix,
            short_datetime(at),
            share,
        )

    @admin.display(description="Status")
    def status_detail(self, obj: Message) -> SafeString:
        """The detail page's status: the desk word, what it means, and the first open."""
        key = self.desk_key(obj)
        meaning = DESK_STATUSES.get(key, ("", ""))[1]
        at = getattr(obj, "first_opened_at", None)
        count = getattr(obj, "opened_count", 0)
        opened: SafeString | str = ""
        if at and count:
            opened = format_html(
                " First opened {}{}.",
                full_datetime(at),
                f" (by {count} of {obj.recipient_count} recipients)"
                if obj.recipient_count > 1
                else "",
            )
        return format_html(
            '{} <span class="paubox-muted">{}</span>{}',
            desk_badge(key, raw=obj.status),
            meaning,
            opened,
        )

    def get_fieldsets(self, request: HttpRequest, obj: Message | None = None) -> Any:
        """The error, when there is one, right under the status."""
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
        if obj is not None and (obj.error or obj.error_status):
            fieldsets.insert(1, self.error_fieldset)
        return fieldsets

    def heading(self, obj: Message) -> str:
        """The page's heading: the subject, or who it went to; never a bare tracking id."""
        if obj.subject:
            return obj.subject
        first = getattr(obj, "first_display_name", "") or getattr(obj, "first_recipient", "")
        if not first:
            return f"(no subject) #{obj.pk}"
        more = obj.recipient_count - 1
        return f"(no subject) to {first}" + (f" and {more} more" if more > 0 else "")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Message | None = None,
    ) -> Any:
        if obj is not None:
            context["subtitle"] = self.heading(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.display(description=with_zone("Sent"), ordering="created_at")
    def when(self, obj: Message) -> SafeString | str:
        """When Paubox accepted it; for messages it never accepted, when they were created.

        A scheduled send shows its time, marked while it is still to come or once cancelled.
        """
        if obj.scheduled_at and obj.state == Message.State.CANCELLED:
            return format_html(
                '{} <span class="paubox-muted paubox-more">(cancelled)</span>',
                short_datetime(obj.scheduled_at),
            )
        if obj.scheduled_at and obj.scheduled_at > timezone.now():
            return format_html(
                '{} <span class="paubox-scheduled paubox-more">(scheduled)</span>',
                short_datetime(obj.scheduled_at),
            )
        if obj.sent_at:
            return short_datetime(obj.sent_at)
        return format_html(
            '{} <span class="paubox-muted paubox-more">(not sent)</span>',
            short_datetime(obj.created_at),
        )

    @admin.display(description="Recipients", ordering="recipient_count")
    def recipients(self, obj: Message) -> SafeString | str:
        first = getattr(obj, "first_recipient", None)
        if not first:
            return str(obj.recipient_count) if obj.recipient_count else EMPTY
        shown = person(first, getattr(obj, "first_display_name", "") or "")
        more = obj.recipient_count - 1
        if more > 0:
            return format_html(
                '{}<span class="paubox-muted paubox-more">+{} more</span>', shown, more
            )
        return shown

    @admin.display(description="Created")
    def created(self, obj: Message) -> SafeString | str:
        return full_datetime(obj.created_at)

    @admin.display(description="Sent")
    def sent(self, obj: Message) -> SafeString | str:
        return full_datetime(obj.sent_at)

    @admin.display(description="Scheduled at")
    def scheduled(self, obj: Message) -> SafeString | str:
        return full_datetime(obj.scheduled_at)

    @admin.display(description="Receipt last checked")
    def receipt_checked(self, obj: Message) -> SafeString | str:
        return full_datetime(obj.receipt_checked_at)

    @admin.display(description="Next receipt check")
    def next_receipt_check(self, obj: Message) -> SafeString | str:
        return full_datetime(obj.next_receipt_check_at)

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
