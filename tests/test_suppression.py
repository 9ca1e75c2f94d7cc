"""The suppression list against the sandbox: hard bounces (receipt and webhook) suppress, later
sends leave suppressed addresses out (no request for them), bulk batches per message in a
fixed number of queries, the outbox, the admin and ``manage.py paubox_suppressions``."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_paubox import records, signals, tasks
from django_paubox.models import Delivery, Message, Suppression, WebhookEvent
from django_paubox.records import suppressions
from django_paubox.tracking.polling import poll_receipts
from django_paubox.tracking.statuses import Status
from tests.factories import email, sent_message
from tests.mailers import default_connection, new_connection
from tests.sandbox_support import wait_for_webhooks
from tests.test_metadata import SECRET

pytestmark = pytest.mark.django_db

CELERY_BACKEND = "django_paubox.backends.PauboxCeleryEmailBackend"


def api_posts(sandbox) -> list[str]:
    return [path for method, path in sandbox.requests if method == "POST"]


@pytest.fixture
def outcomes():
    """post_send outcomes, per message, as sent."""
    seen: list[dict[str, str]] = []

    def receiver(sender, outcomes, **kwargs):
        seen.append(outcomes)

    signals.post_send.connect(receiver, weak=False)
    yield seen
    signals.post_send.disconnect(receiver)


def bounce_by_receipt(sandbox, address: str = "bounce@example.com") -> Message:
    """Send to an address the sandbox hard bounces, and poll its receipt."""
    email(to=[address]).send()
    row = Message.objects.get(deliveries__recipient=address.lower())
    sandbox.finish_processing()
    poll_receipts([row])
    assert Delivery.objects.get(message=row).status == Status.HARD_BOUNCED
    return row


def test_a_hard_bounce_by_receipt_suppresses_and_the_next_send_makes_no_request(
    paubox_sandbox, outcomes
):
    bounced = bounce_by_receipt(paubox_sandbox, "Bounce@Example.com")
    row = Suppression.objects.get()
    assert (row.address, row.reason, row.message_id) == (
        "bounce@example.com",
        Suppression.Reason.HARD_BOUNCE,
        bounced.pk,
    )
    before = list(paubox_sandbox.requests)

    again = email(to=["BOUNCE@example.com"])
    assert again.send() == 0  # not sent, not raised
    assert paubox_sandbox.requests == before  # no HTTP at all
    failed = again.paubox_message
    failed.refresh_from_db()
    assert failed.state == Message.State.FAILED
    assert "every recipient is on the suppression list" in failed.error
    delivery = Delivery.objects.get(message=failed)
    assert (delivery.status, delivery.raw_status) == (Status.FAILED, "suppressed: hard_bounce")
    assert outcomes[-1] == {"bounce@example.com": "suppressed"}
    assert again.paubox_tracking_id is None


def test_a_send_mail_leaves_out_a_suppressed_cc_and_sends_to_the_rest(paubox_sandbox, outcomes):
    """One message: on PostgreSQL the lookup comes with the rows' INSERT (one statement)."""
    suppressions.add("gone@example.com")
    message = email(to=["a@example.com"], cc=["Gone@Example.com"])
    assert message.send() == 1
    assert paubox_sandbox.last_message.recipients == ["a@example.com"]
    row = message.paubox_message
    row.refresh_from_db()
    assert (row.state, row.recipient_count) == (Message.State.SENT, 2)
    assert dict(row.deliveries.values_list("recipient", "raw_status")) == {
        "a@example.com": "",
        "gone@example.com": "suppressed: manual",
    }
    assert outcomes[-1] == {"a@example.com": "sent", "gone@example.com": "suppressed"}


def test_a_repeated_hard_bounce_keeps_one_row(paubox_sandbox):
    bounce_by_receipt(paubox_sandbox)
    first = Suppression.objects.get()
    records.suppress_hard_bounces(
        [(Delivery.objects.get(), Status.SENT, Status.HARD_BOUNCED, "receipt")]
    )
    assert list(Suppression.objects.all()) == [first]


def test_a_hard_bounce_by_webhook_suppresses(paubox_sandbox, client: Client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    row = sent_message(["hard@example.com"], tracking_id="trk-hard")
    body = {
        "event_name": "api_mail_log_permanent_failure",
        "payload": {"id": 7, "source_tracking_id": "trk-hard", "to": "hard@example.com"},
    }
    with CaptureQueriesContext(connection) as queries:
        response = client.post(f"/paubox/webhook/{SECRET}/", body, content_type="application/json")
    assert response.status_code == 200
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.reason, suppression.message_id) == (
        "hard@example.com",
        "hard_bounce",
        row.pk,
    )
    inserts = [q for q in queries if "INSERT" in q["sql"] and "suppression" in q["sql"]]
    assert len(inserts) == 1
    # A replay changes nothing and writes nothing more.
    with CaptureQueriesContext(connection) as queries:
        client.post(f"/paubox/webhook/{SECRET}/", body, content_type="application/json")
    assert not [q for q in queries if "suppression" in q["sql"]]


def test_other_events_touch_no_suppression(paubox_sandbox, client: Client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    sent_message(["soft@example.com"], tracking_id="trk-soft")
    body = {
        "event_name": "api_mail_log_temporary_failure",
        "payload": {"id": 8, "source_tracking_id": "trk-soft", "to": "soft@example.com"},
    }
    with CaptureQueriesContext(connection) as queries:
        client.post(f"/paubox/webhook/{SECRET}/", body, content_type="application/json")
    assert not [q for q in queries if "suppression" in q["sql"]]
    assert not Suppression.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_hard_bounce_webhook_from_the_sandbox_suppresses(paubox_sandbox, live_server, settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    paubox_sandbox.processing_seconds = 3600  # the event fires at finish_processing()
    paubox_sandbox.webhook_url = f"{live_server.url}/paubox/webhook/{SECRET}/"
    email(to=["hard@example.com"]).send()
    paubox_sandbox.finish_processing()
    # Not polling the database meanwhile: see wait_for_webhooks.
    wait_for_webhooks(paubox_sandbox, 1)
    assert WebhookEvent.objects.exists()
    row = Suppression.objects.get()
    assert (row.address, row.reason) == ("hard@example.com", "hard_bounce")
    sent = len(api_posts(paubox_sandbox))
    assert email(to=["hard@example.com"]).send() == 0
    assert len(api_posts(paubox_sandbox)) == sent


def test_partial_suppression_inside_a_bulk_batch(paubox_sandbox, outcomes):
    suppressions.add("gone@example.com")
    suppressions.add("left@example.com", "unsubscribed")
    messages = [
        email(to=["a@example.com"]),
        email(to=["gone@example.com"]),  # nobody left: not sent
        email(to=["b@example.com"], cc=["gone@example.com", "c@example.com"]),
        email(to=["left@example.com"], cc=["d@example.com"]),  # cc becomes to
        email(to=["left@example.com"], bcc=["e@example.com"]),  # only bcc left: not sent
    ]
    with default_connection() as backend:
        assert backend.send_messages(messages) == 3
    [bulk] = [p for p in api_posts(paubox_sandbox)]
    assert bulk.endswith("/bulk_messages")
    sent = {tuple(m.recipients): m.message for m in paubox_sandbox.messages}
    assert set(sent) == {("a@example.com",), ("b@example.com", "c@example.com"), ("d@example.com",)}
    assert sent[("b@example.com", "c@example.com")]["cc"] == ["c@example.com"]
    assert sent[("d@example.com",)]["recipients"] == ["d@example.com"]
    assert "cc" not in sent[("d@example.com",)]

    rows = [m.paubox_message for m in messages]
    for row in rows:
        row.refresh_from_db()
    assert [r.state for r in rows] == ["sent", "failed", "sent", "sent", "failed"]
    assert "only bcc recipients were left" in rows[4].error
    raw = dict(Delivery.objects.filter(message=rows[2]).values_list("recipient", "raw_status"))
    assert raw["gone@example.com"] == "suppressed: manual"
    assert Delivery.objects.get(message=rows[2], recipient="c@example.com").status == Status.SENT
    assert Delivery.objects.get(message=rows[3], recipient="left@example.com").raw_status == (
        "suppressed: unsubscribed"
    )
    assert Delivery.objects.get(message=rows[4], recipient="e@example.com").status == Status.FAILED
    assert outcomes == [
        {"gone@example.com": "suppressed"},
        {"left@example.com": "suppressed", "e@example.com": "suppressed"},
        {"a@example.com": "sent"},
        {"b@example.com": "sent", "gone@example.com": "suppressed", "c@example.com": "sent"},
        {"left@example.com": "suppressed", "d@example.com": "sent"},
    ]


def _batch(n: int) -> list[mail.EmailMessage]:
    """``n`` messages, every other one to a suppressed address, with a suppressed cc on all."""
    return [
        email(
            to=[f"x{i}@example.com" if i % 2 else f"ok{i}@example.com"],
            cc=["gone@example.com", f"cc{i}@example.com"],
        )
        for i in range(n)
    ]


def test_a_bulk_send_costs_the_same_queries_however_many_are_suppressed(paubox_sandbox):
    suppressions.add("gone@example.com")
    for i in range(12):
        suppressions.add(f"x{i}@example.com")
    counts = []
    for n in (4, 12):  # (more would split SQLite's bulk inserts, suppressed or not)
        with default_connection() as backend, CaptureQueriesContext(connection) as queries:
            assert backend.send_messages(_batch(n)) == n
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_suppression_off_sends_to_everyone_and_adds_nothing(paubox_sandbox, settings):
    suppressions.add("gone@example.com")
    settings.PAUBOX = {**settings.PAUBOX, "SUPPRESSION": False}
    assert email(to=["gone@example.com"]).send() == 1
    assert paubox_sandbox.last_message.recipients == ["gone@example.com"]
    email(to=["bounce@example.com"]).send()
    paubox_sandbox.finish_processing()
    poll_receipts(Message.objects.all())
    assert list(Suppression.objects.values_list("address", flat=True)) == ["gone@example.com"]


def test_the_outbox_stores_the_payload_without_suppressed_addresses(paubox_sandbox, monkeypatch):
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **k: None)
    seen: list[dict[str, str]] = []

    def receiver(sender, outcomes, **kwargs):
        seen.append(outcomes)

    suppressions.add("gone@example.com")
    messages = [
        email(to=["a@example.com"], cc=["gone@example.com"]),
        email(to=["gone@example.com"]),
    ]
    assert new_connection(CELERY_BACKEND).send_messages(messages) == 1
    queued = messages[0].paubox_message
    queued.refresh_from_db()
    assert "cc" not in queued.payload["message"]
    assert messages[1].paubox_message.state == Message.State.FAILED
    signals.post_send.connect(receiver, weak=False)
    try:
        assert tasks.send_queued([queued.pk])["sent"] == 1
    finally:
        signals.post_send.disconnect(receiver)
    assert paubox_sandbox.last_message.recipients == ["a@example.com"]
    assert seen == [{"a@example.com": "sent", "gone@example.com": "suppressed"}]


# --- The admin ------------------------------------------------------------------------------

CHANGELIST = "admin:django_paubox_suppression_changelist"


def test_the_worker_leaves_out_addresses_suppressed_since_they_were_queued(
    paubox_sandbox, monkeypatch, outcomes
):
    """An address that bounced or unsubscribed between queueing and sending (a retry can come
    hours later) is left out when the worker sends; a message left with nobody is failed."""
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **k: None)
    both = email(to=["a@example.com"], cc=["late@example.com"])
    alone = email(to=["late@example.com"])
    assert new_connection(CELERY_BACKEND).send_messages([both, alone]) == 2
    suppressions.add("late@example.com", Suppression.Reason.UNSUBSCRIBED)
    before = len(paubox_sandbox.messages)

    result = tasks.send_queued([both.paubox_message.pk, alone.paubox_message.pk])
    assert (result["sent"], result["failed"]) == (1, 1)
    assert len(paubox_sandbox.messages) == before + 1
    assert paubox_sandbox.last_message.recipients == ["a@example.com"]  # to, cc and bcc
    late = Delivery.objects.get(message=both.paubox_message, recipient="late@example.com")
    assert (late.status, late.raw_status) == (Status.FAILED, "suppressed: unsubscribed")
    failed = Message.objects.get(pk=alone.paubox_message.pk)
    assert failed.state == Message.State.FAILED
    assert "every recipient is on the suppression list" in failed.error
    assert {"late@example.com": "suppressed"} in outcomes
    # The stored payload is as it was queued: the next attempt checks the list again.
    stored = Message.objects.get(pk=both.paubox_message.pk)
    assert stored.state == Message.State.SENT


def test_the_worker_sends_to_everyone_with_suppression_off(paubox_sandbox, monkeypatch, settings):
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **k: None)
    message = email(to=["a@example.com"], cc=["late@example.com"])
    assert new_connection(CELERY_BACKEND).send_messages([message]) == 1
    suppressions.add("late@example.com")
    settings.PAUBOX = {**settings.PAUBOX, "SUPPRESSION": False}
    assert tasks.send_queued([message.paubox_message.pk])["sent"] == 1
    assert paubox_sandbox.last_message.recipients == ["a@example.com", "late@example.com"]


def test_admin_lists_searches_and_filters_suppressions(admin_client: Client):
    suppressions.add("one@example.com")
    suppressions.add("two@clinic.example", "unsubscribed")
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "one@example.com" in html and "two@clinic.example" in html
    html = admin_client.get(reverse(CHANGELIST), {"q": "clinic"}).content.decode()
    assert "two@clinic.example" in html and "one@example.com" not in html
    html = admin_client.get(reverse(CHANGELIST), {"reason__exact": "manual"}).content.decode()
    assert "one@example.com" in html and "two@clinic.example" not in html


def test_staff_with_the_permission_add_and_remove_one(client: Client, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("desk", password="pw", is_staff=True)
    client.force_login(user)
    add_url = reverse("admin:django_paubox_suppression_add")
    assert client.get(add_url).status_code == 403
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_suppression", "view_suppression", "delete_suppression"]
        )
    )
    response = client.post(add_url, {"address": " Patient@Example.COM ", "note": "asked by phone"})
    assert response.status_code == 302
    row = Suppression.objects.get()
    assert (row.address, row.reason, row.note) == (
        "patient@example.com",
        "manual",
        "asked by phone",
    )
    again = client.post(add_url, {"address": "patient@example.com"})
    assert again.status_code == 200 and Suppression.objects.count() == 1  # already there
    delete = reverse("admin:django_paubox_suppression_delete", args=[row.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not Suppression.objects.exists()


def test_message_page_shows_metadata_tags_and_when_a_recipient_was_suppressed(
    paubox_sandbox, admin_client: Client
):
    suppressions.add("gone@example.com")
    message = email(to=["a@example.com"], cc=["gone@example.com"])
    message.paubox_metadata = {"appointment_id": "A-17"}
    message.paubox_tags = ["reminder"]
    message.send()
    row = message.paubox_message
    html = admin_client.get(
        reverse("admin:django_paubox_message_change", args=[row.pk])
    ).content.decode()
    assert "appointment_id" in html and "A-17" in html
    assert 'class="paubox-tag">reminder<' in html
    assert "suppressed: manual" in html
    assert "gone@example.com</a> — Added by staff since" in html


def test_message_list_filters_by_tag(paubox_sandbox, admin_client: Client):
    for tags, to in ((["reminder", "cardiology"], "a"), (["reminders"], "b"), ([], "c")):
        message = email(to=[f"{to}@example.com"])
        message.paubox_tags = tags
        message.send()
    url = reverse("admin:django_paubox_message_changelist")
    html = admin_client.get(url).content.decode()
    assert "?tag=cardiology" in html and "?tag=reminders" in html
    html = admin_client.get(url, {"tag": "reminder"}).content.decode()
    assert "a@example.com" in html
    assert "b@example.com" not in html and "c@example.com" not in html


# --- The command ----------------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("paubox_suppressions", *args, stdout=out)
    return out.getvalue()


def test_command_adds_lists_exports_and_removes(paubox_sandbox):
    bounced = bounce_by_receipt(paubox_sandbox)
    assert run("add", "A@Example.com", "b@example.com", "--note", "by phone") == (
        "a@example.com: added\nb@example.com: added\n"
    )
    assert "already suppressed (manual)" in run("add", "a@example.com")
    listed = run("list").splitlines()
    assert {line.split("\t")[0] for line in listed} == {
        "a@example.com",
        "b@example.com",
        "bounce@example.com",
    }
    assert run("list", "--reason", "hard_bounce").split("\t")[0] == "bounce@example.com"
    rows = list(csv.DictReader(io.StringIO(run("export"))))
    by_address: dict[str, Any] = {r["address"]: r for r in rows}
    assert by_address["bounce@example.com"]["message_tracking_id"] == bounced.tracking_id
    assert by_address["a@example.com"]["note"] == "by phone"
    assert run("remove", "a@example.com", "nobody@example.com") == "Removed 1 of 2 address(es).\n"
    assert not Suppression.objects.filter(address="a@example.com").exists()
    with pytest.raises(CommandError, match="Not an email address"):
        run("add", "not-an-address")


def test_a_resend_leaves_out_the_recipients_a_suppression_left_out(paubox_sandbox, settings):
    from django_paubox.sending.dispatch import resend_stored

    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True}
    suppressions.add("gone@example.com")
    message = email(to=["a@example.com"], cc=["gone@example.com"])
    message.send()
    again = resend_stored(message.paubox_message)
    assert paubox_sandbox.last_message.recipients == ["a@example.com"]
    assert list(again.deliveries.values_list("recipient", "status")) == [("a@example.com", "sent")]


def test_a_resend_leaves_out_recipients_suppressed_since_the_send(paubox_sandbox, settings):
    from django_paubox.exceptions import RecipientsSuppressed
    from django_paubox.sending.dispatch import resend_stored

    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True}
    message = email(to=["a@example.com"], cc=["late@example.com"])
    message.send()
    alone = email(to=["late@example.com"])
    alone.send()
    suppressions.add("late@example.com", Suppression.Reason.HARD_BOUNCE)
    again = resend_stored(message.paubox_message)
    assert paubox_sandbox.last_message.recipients == ["a@example.com"]
    assert list(again.deliveries.values_list("recipient", flat=True)) == ["a@example.com"]
    before = (len(paubox_sandbox.messages), Message.objects.count())
    with pytest.raises(RecipientsSuppressed):
        resend_stored(alone.paubox_message)
    assert (len(paubox_sandbox.messages), Message.objects.count()) == before  # nothing at all


def test_command_exit_statuses_in_a_real_process():
    from tests.commands import manage

    assert manage("paubox_suppressions", "add", "not-an-address").returncode == 1
    assert manage("paubox_suppressions").returncode == 2  # no action
    assert manage("paubox_suppressions", "list", "--reason", "nope").returncode == 2
