"""Baselines for the admin benchmark: what stock Django does over the same tables.

- ``site``: an admin site of its own (``bench/floor/admin/``) with ``Message`` registered through
  a stock ``ModelAdmin``: four plain columns, one filter, and an exact search on a recipient
  (``=deliveries__recipient``, through the same index). The app's changelist is measured as a
  ratio of this one: what its badges, recipients column, filters and actions cost on top.
- ``dashboard``: the least a dashboard over the last 30 days must compute, as a plain view: one
  ``GROUP BY`` of messages per day and status and one aggregate of their recipients'
  dispositions, written out as a bare table (no chart, no template).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from django_paubox.models import Delivery, Message

DAYS = 30

site = admin.AdminSite(name="bench_floor_admin")


@admin.register(Message, site=site)
class StockMessageAdmin(admin.ModelAdmin):
    list_display = ("tracking_id", "status", "from_email", "created_at")
    list_filter = ("status",)
    search_fields = ("=deliveries__recipient",)


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(days=DAYS)
    per_day = (
        Message.objects.filter(created_at__gte=since)
        .annotate(day=TruncDate("created_at"))
        .values_list("day", "status")
        .annotate(n=Count("id"))
        .order_by("day", "status")
    )
    rates = Delivery.objects.filter(message__created_at__gte=since).aggregate(
        recipients=Count("id"),
        delivered=Count("id", filter=Q(status="delivered")),
        bounced=Count("id", filter=Q(status__in=["soft_bounced", "hard_bounced"])),
        failed=Count("id", filter=Q(status="failed")),
        opened=Count("id", filter=Q(opened_at__isnull=False)),
    )
    rows = "".join(f"<tr><td>{d}</td><td>{s}</td><td>{n}</td></tr>" for d, s, n in per_day)
    totals = "".join(f"<li>{k}: {v}</li>" for k, v in rates.items())
    return HttpResponse(f"<ul>{totals}</ul><table>{rows}</table>")
