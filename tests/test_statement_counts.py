"""Statements and transactions per webhook event and per send_mail (issue #13's targets).

Counted as tests/statements.py explains: every statement, with each transaction's BEGIN and
COMMIT counted as one statement each (as the issue's figures do). Each test also checks what the
operation did, so that a count cannot be met by doing less.
"""

from __future__ import annotations

import json

import pytest
from django.core.mail import send_mail
from django.db import connection
from django.test import Client

from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking.statuses import Status
from tests.factories import sent_message
from tests.statements import Counted, counting

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "count-secret"
URL = f"/paubox/webhook/{SECRET}/"


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}


def event(name: str = "api_mail_log_delivered", to: str = "patient@example.com", **payload):
    return {
        "event_name": name,
        "payload": {
            "id": 77,
            "source_tracking_id": "track-1",
            "to": to,
            "time": "2024-04-18T20:27:25.379Z",
            "subject": "Reminder",
            **payload,
        },
    }


def post(body: dict) -> Counted:
    client = Client()
    with counting() as counted:
        response = client.post(URL, json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    return counted


def _reads_message_payload(counted: Counted) -> bool:
    table = Message._meta.db_table
    return any(
        s.lstrip().upper().startswith("SELECT") and table in s and '"payload"' in s.split("FROM")[0]
        for s in counted.sql
    )


def test_a_new_event_is_one_transaction_of_at_most_six_statements():
    message = sent_message()
    counted = post(event())
    # PostgreSQL locks and reads the deliveries in the event's INSERT (a WITH), and writes the
    # delivery and the message's status in one statement (a WITH): BEGIN, two, COMMIT.
    assert counted.statements <= (4 if connection.vendor == "postgresql" else 6), counted
    assert counted.transactions == 1, counted
    assert not any(s.startswith("SAVEPOINT") for s in counted.sql), counted
    assert not _reads_message_payload(counted), counted
    assert Delivery.objects.get().status == Status.DELIVERED
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert WebhookEvent.objects.get().message_id == message.pk


def test_an_event_that_leaves_the_message_status_as_it_was_writes_only_the_delivery():
    message = sent_message(["a@example.com", "b@example.com"])
    counted = post(event(to="a@example.com"))
    # On PostgreSQL a status change costs no statement of its own: no less here.
    assert counted.statements <= (4 if connection.vendor == "postgresql" else 5), counted
    message_update = f'UPDATE "{Message._meta.db_table}"'
    assert not any(message_update in s for s in counted.sql), counted  # the delivery's alone
    assert counted.transactions == 1, counted
    statuses = dict(Delivery.objects.values_list("recipient", "status"))
    assert statuses == {"a@example.com": Status.DELIVERED, "b@example.com": Status.SENT}
    message.refresh_from_db()
    assert message.status == Status.SENT  # the least advanced recipient


def test_a_replay_is_found_by_the_insert_and_changes_nothing():
    sent_message()
    post(event())
    counted = post(event())
    # BEGIN, the INSERT that found the stored row, the read of that row, COMMIT.
    assert counted.statements <= 4, counted
    assert counted.transactions == 1, counted
    assert WebhookEvent.objects.count() == 1


def test_an_event_for_a_message_we_did_not_send_is_one_statement_in_a_transaction():
    sent_message()
    counted = post(event(source_tracking_id="someone-else"))
    assert counted.statements <= 3, counted
    assert WebhookEvent.objects.get().message_id is None
    assert Delivery.objects.get().status == Status.SENT


def test_an_event_never_moves_a_delivery_back():
    message = sent_message()
    post(event("api_mail_log_permanent_failure", id=1))
    counted = post(event("api_mail_log_delivered", id=2))
    # No UPDATE: nothing to change (and on PostgreSQL no read of its own either).
    assert counted.statements <= (3 if connection.vendor == "postgresql" else 4), counted
    delivery = Delivery.objects.get()
    assert delivery.status == Status.HARD_BOUNCED
    assert delivery.delivered_at is None
    message.refresh_from_db()
    assert message.status == Status.HARD_BOUNCED


@pytest.mark.parametrize("suppression", [True, False])
def test_send_mail_is_two_transactions(paubox_sandbox, settings, suppression):
    settings.PAUBOX = {**settings.PAUBOX, "SUPPRESSION": suppression}
    with counting() as counted:
        assert send_mail("Reminder", "Body", "clinic@example.org", ["pat@example.com"]) == 1
    # A row (and its delivery) exists before Paubox is called, and the outcome is recorded
    # after it: two transactions. The first is an INSERT of the message and one of its
    # deliveries, with the suppression lookup (the default); the second an UPDATE of the
    # message and one of its deliveries. PostgreSQL runs each as one statement (the lookup and
    # the message's INSERT in a WITH), atomic without a BEGIN/COMMIT around it; SQLite has no
    # statement that writes two tables, so its first transaction holds the SELECT too.
    assert counted.transactions == 2, counted
    sqlite_limit = 9 if suppression else 8
    limit = 2 if connection.vendor == "postgresql" else sqlite_limit
    assert counted.statements <= limit, counted
    row = Message.objects.get()
    assert (row.state, row.status, row.attempts) == (Message.State.SENT, Status.SENT, 1)
    assert row.tracking_id == paubox_sandbox.last_message.tracking_id
    assert row.sent_at is not None and row.next_receipt_check_at is not None
    assert row.payload is None
    delivery = Delivery.objects.get()
    assert (delivery.message_id, delivery.recipient, delivery.kind) == (
        row.pk,
        "pat@example.com",
        "to",
    )
    assert delivery.status == Status.SENT
    assert row.recipient_count == 1 and row.from_email == "clinic@example.org"
    assert row.subject == "Reminder" and row.sender_domain == "example.org"


def test_the_one_statement_insert_writes_what_the_orm_writes(settings):
    """PostgreSQL writes a single message's rows by hand (elsewhere the ORM does): same rows."""
    from django_paubox import records
    from django_paubox.conf import get_settings

    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True}
    conf = get_settings()
    prepared = (
        "Subject é",
        "Clinic <c@clinic.example>",
        [("to", "a@x.example"), ("cc", "b@x.example")],
        {"message": {"n": [1, "ü"]}},
    )
    (one,) = records.create_messages([prepared], conf, state=Message.State.QUEUED)
    orm, _ = records.create_messages([prepared, prepared], conf, state=Message.State.QUEUED)

    def row(message: Message) -> dict:
        values = Message.objects.filter(pk=message.pk).values().get()
        deliveries = list(Delivery.objects.filter(message=message).order_by("recipient").values())
        for d in deliveries:
            del d["id"], d["message_id"], d["updated_at"]
        del values["id"], values["created_at"], values["next_attempt_at"]  # a call's own time
        assert message.created_at == message.next_attempt_at  # queued: may be sent at once
        return {**values, "deliveries": deliveries}

    assert row(one) == row(orm)
    assert one.pk is not None and one.deliveries.count() == 2
