"""records.sql.update_rows: ``bulk_update``'s contract in one statement on PostgreSQL."""

from __future__ import annotations

import datetime

import pytest

from django_paubox.models import Delivery, Message
from django_paubox.records import sql
from django_paubox.tracking.statuses import Status
from tests.factories import stored_message

pytestmark = pytest.mark.django_db

WHEN = datetime.datetime(2026, 3, 1, 9, 30, tzinfo=datetime.timezone.utc)


def test_each_row_gets_its_own_values_of_the_named_fields_and_nothing_else():
    message = stored_message(
        status=Status.SENT, recipients=["a@example.com", "b@example.com", "c@example.com"]
    )
    a, b, c = Delivery.objects.filter(message=message).order_by("pk")
    a.status, a.delivered_at, a.clicks_per_link = Status.DELIVERED, WHEN, {"https://x.test": 2}
    a.via_secure_portal, a.unsubscribed, a.total_opens = True, None, 3
    b.status, b.delivered_at, b.clicks_per_link = Status.HARD_BOUNCED, None, {}
    b.via_secure_portal, b.unsubscribed, b.total_opens = False, True, 0
    c.raw_status = "not written: not named"
    fields = ["status", "delivered_at", "clicks_per_link", "via_secure_portal", "unsubscribed"]
    sql.update_rows(Delivery, [a, b], [*fields, "total_opens"])

    rows = {d.pk: d for d in Delivery.objects.filter(message=message)}
    assert (rows[a.pk].status, rows[a.pk].delivered_at) == (Status.DELIVERED, WHEN)
    assert rows[a.pk].clicks_per_link == {"https://x.test": 2}
    assert (rows[a.pk].via_secure_portal, rows[a.pk].unsubscribed) == (True, None)
    assert rows[a.pk].total_opens == 3
    assert (rows[b.pk].status, rows[b.pk].delivered_at) == (Status.HARD_BOUNCED, None)
    assert rows[b.pk].clicks_per_link == {}
    assert (rows[b.pk].via_secure_portal, rows[b.pk].unsubscribed) == (False, True)
    assert rows[c.pk].status == Status.SENT and rows[c.pk].raw_status != c.raw_status


def test_a_null_in_the_first_row_keeps_the_column_type():
    first, second = stored_message(), stored_message()
    first.next_receipt_check_at, second.next_receipt_check_at = None, WHEN
    first.status, second.status = Status.FAILED, Status.PROCESSING
    sql.update_rows(Message, [first, second], ["next_receipt_check_at", "status"])
    stored = dict(Message.objects.values_list("pk", "next_receipt_check_at"))
    assert stored == {first.pk: None, second.pk: WHEN}
    statuses = set(Message.objects.values_list("status", flat=True))
    assert statuses == {Status.FAILED, Status.PROCESSING}


def test_nothing_to_write_is_no_statement(django_assert_num_queries):
    with django_assert_num_queries(0):
        sql.update_rows(Message, [], ["status"])


def test_one_row_gets_the_named_fields_and_nothing_else():
    message = stored_message(status=Status.SENT)
    message.status, message.next_receipt_check_at = Status.DELIVERED, WHEN
    message.subject = "not written: not named"
    sql.update_rows(Message, [message], ["status", "next_receipt_check_at"])
    stored = Message.objects.get(pk=message.pk)
    assert (stored.status, stored.next_receipt_check_at) == (Status.DELIVERED, WHEN)
    assert stored.subject != message.subject
