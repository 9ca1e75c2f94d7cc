"""On the message list and page: the tag and sender-domain filters, metadata and tags, and
suppressed recipients."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..models import Message, Suppression
from ..records import sql
from .display import EMPTY, admin_link, short_datetime

#: The tag choices come from this many of the latest tagged messages (one query).
TAG_SAMPLE = 1000


class TagFilter(admin.SimpleListFilter):
    """Messages by ``paubox_tags``; works on SQLite and PostgreSQL alike."""

    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        seen: set[str] = set()
        latest = Message.objects.exclude(tags=[]).order_by("-pk").values_list("tags", flat=True)
        for tags in latest[:TAG_SAMPLE]:
            seen.update(t for t in tags or () if isinstance(t, str))
        wanted = self.value()
        if wanted:
            seen.add(wanted)  # a tag from a link stays selectable
        return [(tag, tag) for tag in sorted(seen)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        tag = self.value()
        if not tag:
            return queryset
        # Tags hold no quotes or backslashes (sending/metadata.py), so the quoted tag matches
        # exactly one element of the stored JSON list.
        return queryset.annotate(paubox_tags_text=Cast("tags", TextField())).filter(
            paubox_tags_text__contains=json.dumps(tag)
        )


class SenderDomainFilter(admin.SimpleListFilter):
    """Messages by sender domain; its choices without reading every message (an index walk
    on PostgreSQL: :func:`~django_paubox.records.sql.sender_domains`)."""

    title = "sender domain"
    parameter_name = "sender_domain"  # the links of Django's own field filter still work

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(domain, domain) for domain in sql.sender_domains()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        domain = self.value()
        return queryset.filter(sender_domain=domain) if domain else queryset


class ListingFields:
    """Read-only fields for the message page (mixed into ``MessageAdmin``)."""

    @admin.display(description="Tags")
    def tag_list(self, obj: Message) -> SafeString | str:
        if not obj.tags:
            return EMPTY
        return format_html_join(" ", '<span class="paubox-tag">{}</span>', ((t,) for t in obj.tags))

    @admin.display(description="Metadata")
    def metadata_list(self, obj: Message) -> SafeString | str:
        if not obj.metadata:
            return EMPTY
        rows = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", sorted(obj.metadata.items()))
        return format_html('<table class="paubox-metadata">{}</table>', rows)

    @admin.display(description="Suppressed recipients")
    def suppressed_recipients(self, obj: Message) -> SafeString | str:
        """Recipients of this message on the suppression list: why and since when (one query)."""
        rows = Suppression.objects.filter(address__in=obj.deliveries.values("recipient")).order_by(
            "address"
        )
        items = [
            format_html(
                "<li>{} — {} since {}{}</li>",
                admin_link(Suppression, row.pk, row.address),
                row.get_reason_display(),
                short_datetime(row.created_at),
                " (caused by this message)" if row.message_id == obj.pk else "",
            )
            for row in rows
        ]
        if not items:
            return EMPTY
        return format_html("<ul>{}</ul>", format_html_join("", "{}", ((i,) for i in items)))
