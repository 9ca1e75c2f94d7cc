"""Webhook events the support desk must survive (issue #10, items 3 and 6).

An event whose time the database cannot hold, or that is implausibly far from now, is stored
with its time unknown (``received_at`` stands in): Paubox never sends an event twice, so refusing
it would lose it. No admin page may answer 500 because of a stored row. And the webhook answers
Paubox's anonymous POSTs under Django 5.1's ``LoginRequiredMiddleware``.
"""

from __future__ import annotations

import importlib
import json
from datetime import datetime, timedelta, timezone

import django
import pytest
from django.apps import apps as global_apps
from django.db import connection
from django.test import Client
from django.urls import reverse

from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking.parsing import parse_iso8601, parse_rfc2822
from tests.factories import sent_message

SECRET = "hook-secret"
URL = f"/paubox/webhook/{SECRET}/"

pytestmark = pytest.mark.django_db

EXTREME_TIMES = [
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59Z",
    "1999-12-31T23:59:59Z",
]


@pytest.fixture(autouse=True)
def paubox_settings(settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}


def post_event(client: Client, time: str, name: str = "api_mail_log_delivered", **kw):
    body = {
        "event_name": name,
        "payload": {
            "id": hash((time, name)) % 10**9,
            "source_tracking_id": "track-1",
            "to": "patient@example.com",
            "time": time,
        },
    }
    return client.post(URL, data=json.dumps(body), content_type="application/json", **kw)


@pytest.mark.parametrize("time", EXTREME_TIMES)
def test_an_extreme_time_is_stored_as_unknown_and_every_admin_page_works(
    client: Client, admin_client: Client, time: str
):
    message = sent_message(("patient@example.com",), tracking_id="track-1")
    response = post_event(client, time)
    assert response.status_code == 200
    event = WebhookEvent.objects.get()
    assert event.occurred_at is None
    assert event.payload["payload"]["time"] == time  # Paubox's words are kept
    delivery = Delivery.objects.get()
    assert delivery.status == "delivered"
    assert delivery.delivered_at is not None
    assert abs(delivery.delivered_at - event.received_at) < timedelta(minutes=1)
    post_event(client, time, name="api_mail_log_opened")
    pages = [
        reverse("admin:django_paubox_webhookevent_changelist"),
        reverse("admin:django_paubox_webhookevent_change", args=[event.pk]),
        reverse("admin:django_paubox_delivery_changelist"),
        reverse("admin:django_paubox_delivery_change", args=[delivery.pk]),
        reverse("admin:django_paubox_message_changelist"),
        reverse("admin:django_paubox_message_change", args=[message.pk]),
    ]
    for page in pages:
        assert admin_client.get(page).status_code == 200, page


def test_plausible_times_are_kept():
    now = datetime.now(timezone.utc)
    soon = (now + timedelta(hours=1)).isoformat()
    assert parse_iso8601(soon) == datetime.fromisoformat(soon)
    assert parse_iso8601("2000-01-01T00:00:00Z") == datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert parse_iso8601("2022-04-18T22:27:25+02:00") == datetime(
        2022, 4, 18, 20, 27, 25, tzinfo=timezone.utc
    )
    assert parse_iso8601((now + timedelta(days=2)).isoformat()) is None


@pytest.mark.parametrize(
    "text",
    [
        "Mon, 01 Jan 1000 00:00:00 +1400",
        "Fri, 31 Dec 9999 23:59:59 -1400",
        "Sun, 31 Dec 1989 13:00:00 GMT",
    ],
)
def test_receipt_times_out_of_range_are_unknown(text):
    assert parse_rfc2822(text) is None


@pytest.mark.skipif(django.VERSION < (5, 1), reason="LoginRequiredMiddleware is Django 5.1+")
def test_webhook_answers_paubox_under_login_required_middleware(client: Client, settings):
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    sent_message(("patient@example.com",), tracking_id="track-1")
    response = post_event(client, "2022-04-18T20:27:25.379Z")
    assert response.status_code == 200, response.get("Location")
    assert WebhookEvent.objects.count() == 1
    assert Message.objects.get().deliveries.get().status == "delivered"
    # The admin still asks staff to log in: only Paubox's endpoint is exempt.
    admin = client.get(reverse("admin:django_paubox_message_changelist"))
    assert admin.status_code == 302


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="only PostgreSQL could store such a time"
)
def test_migration_forgets_times_stored_before_the_fix(admin_client: Client):
    """Rows a 0.1 webhook stored on PostgreSQL: the admin answered 500 until they were purged."""
    sent_message(("patient@example.com",), tracking_id="track-1")
    post_event(Client(), "2022-04-18T20:27:25.379Z")
    event, delivery = WebhookEvent.objects.get(), Delivery.objects.get()
    with connection.cursor() as cursor:
        for table, column, pk, value in [
            (WebhookEvent._meta.db_table, "occurred_at", event.pk, "0001-01-01 00:00:00+14"),
            (Delivery._meta.db_table, "delivered_at", delivery.pk, "9999-12-31 23:59:59-14"),
        ]:
            cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])  # noqa: S608
    event_page = reverse("admin:django_paubox_webhookevent_change", args=[event.pk])
    migration = importlib.import_module("django_paubox.migrations.0003_clear_implausible_times")
    migration.forget_implausible_times(global_apps, None)
    assert admin_client.get(event_page).status_code == 200
    assert admin_client.get(reverse("admin:django_paubox_delivery_changelist")).status_code == 200
    assert WebhookEvent.objects.get().occurred_at is None
    assert Delivery.objects.get().delivered_at is None
