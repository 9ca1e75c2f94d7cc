"""Retention: ``retention.purge`` and ``manage.py paubox_purge``."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_paubox import records
from django_paubox.conf import get_settings
from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking.retention import PurgeSummary, parse_age, purge

from .commands import manage

pytestmark = pytest.mark.django_db


def message(age: timedelta, recipients: int = 2, events: int = 1) -> Message:
    """A sent message ``age`` old with ``recipients`` deliveries and ``events`` webhook events."""
    conf = get_settings()
    addresses = [("to", f"p{i}@example.com") for i in range(recipients)]
    [row] = records.create_messages([("Results ready", "clinic@example.com", addresses, {})], conf)
    records.mark_sent([(row, str(uuid.uuid4()))], conf)
    for i in range(events):
        event(row.tracking_id, f"p{i % recipients}@example.com", age)
    when = timezone.now() - age
    Message.objects.filter(pk=row.pk).update(created_at=when, sent_at=when)
    return row


def event(tracking_id: str, to: str, age: timedelta) -> WebhookEvent:
    body = {
        "event_name": "api_mail_log_delivered",
        "payload": {
            "id": uuid.uuid4().int % 10**10,
            "subject": "Results ready",
            "source_tracking_id": tracking_id,
            "time": "2024-04-18T20:27:25.379Z",
            "from": "clinic@example.com",
            "to": to,
        },
    }
    stored, created = records.apply_webhook_event(body)
    assert created
    WebhookEvent.objects.filter(pk=stored.pk).update(received_at=timezone.now() - age)
    return stored


def orphan_event(age: timedelta) -> WebhookEvent:
    """An event for a message this app did not send (same organisation, other system)."""
    return event(str(uuid.uuid4()), "someone@example.com", age)


@pytest.fixture
def rows():
    old = [message(timedelta(days=100)) for _ in range(5)]
    young = [message(timedelta(days=10)) for _ in range(2)]
    old_orphans = [orphan_event(timedelta(days=95)) for _ in range(3)]
    young_orphan = orphan_event(timedelta(days=1))
    return {"old": old, "young": young, "old_orphans": old_orphans, "young_orphan": young_orphan}


def counts() -> tuple[int, int, int]:
    return Message.objects.count(), Delivery.objects.count(), WebhookEvent.objects.count()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_parse_age(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "90", "d", "-1d", "0d", "1.5d", "3m", "90 days", "1y"])
def test_parse_age_refuses_what_it_would_have_to_guess(text):
    with pytest.raises(ValueError):
        parse_age(text)


def test_dry_run_counts_and_deletes_nothing(rows):
    before = counts()
    summary = purge(timedelta(days=90), dry_run=True)
    assert (summary.messages, summary.deliveries, summary.webhook_events) == (5, 10, 5 + 3)
    assert summary.dry_run and summary.batches == 0
    assert counts() == before


def test_purge_deletes_old_rows_in_batches(rows):
    with CaptureQueriesContext(connection) as queries:
        summary = purge(timedelta(days=90), batch_size=2)
    assert summary == PurgeSummary(
        cutoff=summary.cutoff,
        dry_run=False,
        messages=5,
        deliveries=10,
        webhook_events=8,
        batches=3 + 2,  # 5 messages by 2, then 3 orphan events by 2
    )
    assert set(Message.objects.all()) == set(rows["young"])
    assert Delivery.objects.count() == 4
    assert set(WebhookEvent.objects.filter(message__isnull=True)) == {rows["young_orphan"]}
    assert WebhookEvent.objects.filter(message__in=rows["young"]).count() == 2
    # One DELETE per model per batch, each by a list of primary keys: never one giant DELETE.
    message_deletes = [
        q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "django_paubox_message"')
    ]
    assert len(message_deletes) == 3
    assert all(" IN (" in sql for sql in message_deletes)


def test_dry_run_matches_the_real_run(rows):
    dry = purge(timedelta(days=90), dry_run=True)
    real = purge(timedelta(days=90))
    assert (dry.messages, dry.deliveries, dry.webhook_events) == (
        real.messages,
        real.deliveries,
        real.webhook_events,
    )
    assert purge(timedelta(days=90)).messages == 0  # nothing left to do


def test_purge_refuses_nonsense():
    with pytest.raises(ValueError):
        purge(timedelta(0))
    with pytest.raises(ValueError):
        purge(timedelta(days=1), batch_size=0)


def test_messages_still_queued_are_purged_too():
    """Retention is about age: a message stuck in the outbox for months holds PHI as well."""
    conf = get_settings()
    [row] = records.create_messages(
        [("s", "clinic@example.com", [("to", "a@example.com")], {"content": "x"})],
        conf,
        state=Message.State.QUEUED,
        keep_payload=True,
    )
    Message.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(days=400))
    assert purge(timedelta(days=365)).messages == 1


# --- The command ----------------------------------------------------------------------------


def run(*args: str, **options) -> str:
    out = io.StringIO()
    call_command("paubox_purge", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def test_command_purges_and_reports(rows):
    out = run("--older-than", "90d", "--batch-size", "2")
    assert "Deleted 5 messages, 10 deliveries and 8 webhook events" in out
    assert "in 5 batches" in out
    assert Message.objects.count() == 2


def test_command_dry_run(rows):
    before = counts()
    out = run("--older-than", "12w", "--dry-run")
    assert out.startswith("Would delete 5 messages, 10 deliveries and 8 webhook events")
    assert counts() == before


def test_command_accepts_hours_and_keyword_strings(rows):
    assert "Would delete 7 messages" in run("--older-than", "1h", "--dry-run")
    assert "Would delete 5 messages" in run(older_than="2160h", dry_run=True)


def test_command_defaults_to_purge_after_days(rows, settings):
    settings.PAUBOX = {**settings.PAUBOX, "PURGE_AFTER_DAYS": 30}
    assert "Deleted 5 messages" in run()
    settings.PAUBOX = {**settings.PAUBOX, "PURGE_AFTER_DAYS": 5}
    assert "Deleted 2 messages" in run()


def test_command_without_an_age_is_bad_usage(rows, settings):
    settings.PAUBOX = {k: v for k, v in settings.PAUBOX.items() if k != "PURGE_AFTER_DAYS"}
    with pytest.raises(CommandError) as raised:
        run()
    assert raised.value.returncode == 2
    assert "--older-than" in str(raised.value)
    for bad in ("soon", "0"):
        settings.PAUBOX = {**settings.PAUBOX, "PURGE_AFTER_DAYS": bad}
        with pytest.raises(CommandError) as raised:
            run()
        assert raised.value.returncode == 2
    with pytest.raises(CommandError) as raised:
        run(older_than="ninety days")
    assert raised.value.returncode == 2
    assert Message.objects.count() == 7


def test_command_help_and_usage_errors():
    shown = manage("paubox_purge", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for words in ("--older-than", "--dry-run", "--batch-size", "90d", "PURGE_AFTER_DAYS"):
        assert words in text
    for args in (("--older-than", "90"), ("--older-than", "90x"), ("--batch-size", "0")):
        result = manage("paubox_purge", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert "error" in result.stderr.lower()


def test_purge_reports_progress_after_each_batch():
    from django_paubox.tracking.retention import purge as run_purge

    for _ in range(5):
        Message.objects.create(
            from_email="d@clinic.example", created_at=timezone.now() - timedelta(days=100)
        )
    seen = []
    run_purge(timedelta(days=90), batch_size=2, progress=lambda s: seen.append(s.messages))
    assert seen == [2, 4, 5]
