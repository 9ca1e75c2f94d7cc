"""5. Admin: the message changelist and the dashboard over 100,000 messages / 300,000 deliveries.

Rows are bulk-loaded with COPY in two steps, and each page is measured after each step: once
with 1,000 messages and once with 100,000, so that a query count that grows with the rows (an
N+1, a per-row lookup) shows as a difference. Pages are rendered through Django's full stack
(middleware, session, templates) by the test client, logged in as a superuser.

Each page is also measured beside its baseline in the same run (bench/floor_admin.py): a stock
``ModelAdmin`` over the same table for the changelists (plain columns, the status filter, an
exact recipient search), and a plain view computing the dashboard's two aggregates. Page times
are reported as ratios of the baseline's; query counts as a ratio of the same page's at 1,000.
"""

from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from . import common, loaders
from .db import count_queries, empty_paubox_tables
from .report import Result

KEY = "admin"
TITLE = "5. Admin pages"
#: A page may cost at most this many times its stock-Django baseline over the same rows.
TARGET_RATIO = 2.0
SPAN_DAYS = 60
RECIPIENTS = 3
#: (status of each of the three deliveries, message status) by index % len.
MIX = (
    (("delivered", "delivered", "delivered"), "delivered"),
    (("delivered", "delivered", "delivered"), "delivered"),
    (("delivered", "delivered", "delivered"), "delivered"),
    (("delivered", "processing", "delivered"), "processing"),
    (("delivered", "soft_bounced", "delivered"), "soft_bounced"),
    (("hard_bounced", "delivered", "delivered"), "hard_bounced"),
    (("sent", "sent", "sent"), "sent"),
    (("delivered", "delivered", "delivered"), "delivered"),
    (("failed", "failed", "failed"), "failed"),
    (("delivered", "delivered", "delivered"), "delivered"),
)


FIRST_NAMES = ("Ada", "Alan", "Barbara", "Dorothy", "Edsger", "Frances", "Hedy", "Ivan", "Joan")
LAST_NAMES = ("Allen", "Liskov", "Ritchie", "Turing", "Lamarr", "Dijkstra", "Clarke", "Knuth")
#: One patient in this many messages is Grace Hopper (20 messages at 100,000), whom the name
#: search looks for, as a desk person looks for a patient who has had a few messages.
HOPPER_EVERY = 5000


def display_name(index: int, slot: int) -> str:
    if slot == 0 and index % HOPPER_EVERY == 17:
        return "Grace Hopper"
    return f"{FIRST_NAMES[(index + slot) % len(FIRST_NAMES)]} {LAST_NAMES[index % len(LAST_NAMES)]}"


def _rows(total: int) -> tuple[Any, Any]:
    now = timezone.now()
    span = timedelta(days=SPAN_DAYS)

    def created(index: int) -> Any:
        return now - span * (1 - index / total)

    def message(index: int) -> dict[str, Any]:
        _statuses, status = MIX[index % len(MIX)]
        at = created(index)
        failed = status == "failed"
        return {
            "tracking_id": None if failed else f"{index:08x}-7c1d-4e2a-9f00-{index:012x}",
            "state": "failed" if failed else "sent",
            "status": status,
            "subject": f"Appointment reminder #{index}",
            "from_email": "reminders@clinic.example",
            "sender_domain": "clinic.example" if index % 7 else "lab.example",
            "recipient_count": RECIPIENTS,
            "created_at": at,
            "sent_at": None if failed else at + timedelta(seconds=1),
            "error": "Paubox refused the message (400)" if failed else "",
            "error_status": 400 if failed else None,
            "attempts": 1,
        }

    def deliveries(index: int) -> list[dict[str, Any]]:
        statuses, _ = MIX[index % len(MIX)]
        at = created(index)
        rows = []
        for slot, status in enumerate(statuses):
            delivered = status == "delivered"
            rows.append(
                {
                    "recipient": f"patient{index}-{slot}@example.com",
                    "display_name": display_name(index, slot),
                    "kind": "to" if slot == 0 else "cc",
                    "status": status,
                    "raw_status": status.replace("_", " "),
                    "delivered_at": at + timedelta(minutes=1) if delivered else None,
                    "opened_at": at + timedelta(hours=2) if delivered and index % 3 == 0 else None,
                    "updated_at": at,
                }
            )
        return rows

    return message, deliveries


def _measure(client: Client, url: str, repeat: int) -> tuple[int, float, float]:
    """(queries, median ms, max ms) of rendering ``url``, after two warm-up renders."""
    for _ in range(2):
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    with count_queries() as counted:
        client.get(url)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return counted.count, statistics.median(times), max(times)


def run(quick: bool) -> Result:
    small, full = (200, 5000) if quick else (1000, 100_000)
    repeat = 3 if quick else 9
    result = Result(KEY, f"{TITLE}, {full:,} messages / {full * RECIPIENTS:,} deliveries")
    empty_paubox_tables()
    user_model = get_user_model()
    user_model.objects.filter(username="bench-admin").delete()
    user = user_model.objects.create_superuser("bench-admin", "admin@clinic.example", None)
    client = Client()
    client.force_login(user)
    changelist = reverse("admin:django_paubox_message_changelist")
    stock = reverse("bench_floor_admin:django_paubox_message_changelist")
    search = "?q=patient77-1%40example.com"
    #: name: (our page, its baseline)
    pages = {
        "message changelist": (changelist, stock),
        "changelist filtered by status": (
            changelist + "?desk_status=soft_bounced",
            stock + "?status__exact=soft_bounced",
        ),
        "changelist searched by a recipient's address": (changelist + search, stock + search),
        # A patient's name (Grace Hopper's 20 messages at 100,000): a LIKE over addresses,
        # display names and the messages' own fields, which no index serves; the stock admin
        # has no name to search, so its exact address search stands beside it.
        "changelist searched by name": (changelist + "?q=Hopper", stock + search),
        "dashboard": (
            reverse("admin:django_paubox_message_dashboard"),
            reverse("bench-floor-dashboard"),
        ),
    }
    message, deliveries = _rows(full)
    loaded = common.Timer()
    with loaded.measure():
        loaders.load(0, small, message=message, deliveries=deliveries)
    at_small = {name: _measure(client, ours, repeat) for name, (ours, _) in pages.items()}
    with loaded.measure():
        loaders.load(small, full - small, message=message, deliveries=deliveries)
    at_full: dict[str, tuple[int, float, float]] = {}
    base_full: dict[str, tuple[int, float, float]] = {}
    with common.profiled("admin-changelist"):
        for name, (ours, baseline) in pages.items():
            # Alternate page and baseline so that drift hits both alike.
            at_full[name] = _measure(client, ours, repeat)
            base_full[name] = _measure(client, baseline, repeat)

    page = client.get(changelist + "?q=Hopper").content.decode()
    counted = re.search(r"([\d,]+) results?", page)
    found = int(counted.group(1).replace(",", "")) if counted else -1
    expected = sum(1 for index in range(full) if index % HOPPER_EVERY == 17)
    for name in pages:
        queries_small, _, _ = at_small[name]
        queries_full, median, slowest = at_full[name]
        base_queries, base_median, _ = base_full[name]
        kind = "plain view" if name == "dashboard" else "stock admin"
        result.row(
            f"{name}: page time at {full:,} (median of {repeat})",
            f"{median:,.0f} ms",
            f"{base_median:,.0f} ms ({kind})",
            f"{median / base_median:.2f}×",
            f"≤ {TARGET_RATIO:.0f}× the baseline",
            median <= TARGET_RATIO * base_median,
        )
        result.row(
            f"{name}: queries at {full:,}, as a ratio of at {small:,}",
            f"{queries_full}",
            f"{queries_small} at {small:,}",
            f"{queries_full / queries_small:.2f}×",
            "1× (independent of rows)",
            queries_small == queries_full,
        )
        result.note(
            f"{name}: {queries_full} queries, median {median:,.0f} ms, slowest "
            f"{slowest:,.0f} ms at {full:,} messages ({queries_small} queries, median "
            f"{at_small[name][1]:,.0f} ms at {small:,}); baseline ({kind}) {base_queries} queries."
        )
    result.note(
        f"Loaded {full:,} messages and {full * RECIPIENTS:,} deliveries with COPY in "
        f"{loaded.seconds:,.1f} s, spread over {SPAN_DAYS} days (the dashboard shows 30); "
        "times include the session and user lookups of a logged-in admin, on both sides."
    )
    result.note(f"The name search found {found} messages (expected {expected}).")
    result.checks = {
        "name_search_found": {"found": found, "expected": expected},
    } | {
        name: {
            "queries_small": at_small[name][0],
            "queries_full": at_full[name][0],
            "baseline_queries": base_full[name][0],
        }
        for name in pages
    }
    return result
