"""Answers Paubox gives with success but that cannot be used (issue #10, items 1 and 4).

A 2xx whose body we cannot read means Paubox probably took the request: it must end like a read
timeout (failed, "may have reached Paubox"; resent only with ``RESEND_AMBIGUOUS``), never like a
refusal, which would send every message of a batch again one by one. Every answer we cannot use
is a ``PauboxAPIError`` and every row is settled. Real sockets: a canned server answers.
"""

from __future__ import annotations

import json

import pytest

from django_paubox import tasks
from django_paubox.exceptions import (
    BulkItemError,
    PauboxAmbiguousResponse,
    PauboxAPIError,
)
from django_paubox.models import Message
from tests.factories import emails as make
from tests.factories import sent_message
from tests.mailers import default_connection, new_connection

from .canned_server import CannedServer
from .test_client import MESSAGE, client_for

pytestmark = pytest.mark.django_db

CELERY_BACKEND = "django_paubox.backends.PauboxCeleryEmailBackend"
DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON that Python's parser cannot read

UNREADABLE_BULK = {
    "no-messages": ("application/json", json.dumps({"messages": []})),
    "service-ok": ("application/json", json.dumps({"data": "Service OK"})),
    "html": ("text/html", "<html><body>OK</body></html>"),
    "fewer-ids": (
        "application/json",
        json.dumps({"messages": [{"sourceTrackingId": "a"}, {"sourceTrackingId": "b"}]}),
    ),
    "error-body": ("application/json", json.dumps({"error": "Something went wrong"})),
    "deeply-nested": ("application/json", DEEP),
}


@pytest.fixture
def canned(settings):
    with CannedServer() as server:
        settings.PAUBOX = {
            "API_KEY": "k",
            "API_USERNAME": "clinic",
            "API_URL": server.url,
            "MAX_RETRIES": 0,
            "RETRY_BACKOFF": 0,
        }
        yield server


def assert_all_settled() -> None:
    assert not Message.objects.filter(state__in=["sending", "queued"]).exists()


# --- The client -------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body"), UNREADABLE_BULK.values(), ids=UNREADABLE_BULK)
def test_unreadable_bulk_success_is_ambiguous_never_a_refusal(canned, content_type, body):
    canned.add(200, body, content_type=content_type)
    with client_for(canned.url) as client, pytest.raises(PauboxAmbiguousResponse) as info:
        client.send_bulk([MESSAGE, MESSAGE, MESSAGE])
    assert info.value.may_have_been_sent
    assert "may have reached Paubox" in str(info.value)


@pytest.mark.parametrize(
    "answer",
    [
        {"data": "Service OK"},
        {"sourceTrackingId": ""},
        {"sourceTrackingId": 42},
        {"sourceTrackingId": "x" * 256},
        [],
    ],
)
def test_single_success_without_a_usable_id_is_ambiguous(canned, answer):
    canned.add(200, json.dumps(answer))
    with client_for(canned.url) as client, pytest.raises(PauboxAmbiguousResponse) as info:
        client.send_message(MESSAGE)
    assert info.value.may_have_been_sent


@pytest.mark.parametrize("status", [302, 307])
def test_a_redirected_send_is_not_followed(canned, status):
    canned.add(status, "", Location=canned.url + "clinic/messages")
    canned.add(200, json.dumps({"sourceTrackingId": "followed"}))
    with client_for(canned.url) as client, pytest.raises(PauboxAmbiguousResponse):
        client.send_message(MESSAGE)
    assert len(canned.requests) == 1


def test_error_body_with_status_200_stays_a_refusal(canned):
    canned.add(200, json.dumps({"error": "Template 'x' not found"}))
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    assert not info.value.may_have_been_sent


@pytest.mark.parametrize("status", [200, 422])
def test_deeply_nested_json_is_a_paubox_error(canned, status):
    canned.add(status, DEEP)
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    assert info.value.status == status
    assert info.value.may_have_been_sent is (status == 200)
    canned.add(200, DEEP)
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError):
        client.get_receipt("t")


def test_bulk_items_with_a_repeated_or_too_long_id_are_ambiguous(canned):
    ids = ["dup", "ok", "dup", "y" * 256]
    canned.add(200, json.dumps({"messages": [{"sourceTrackingId": i} for i in ids]}))
    with client_for(canned.url) as client:
        results = client.send_bulk([MESSAGE] * 4)
    assert results[1] == "ok"
    for index in (0, 2, 3):
        assert isinstance(results[index], BulkItemError)
        assert results[index].may_have_been_sent


# --- The plain backend ------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body"), UNREADABLE_BULK.values(), ids=UNREADABLE_BULK)
def test_unreadable_bulk_answer_is_not_sent_again_one_by_one(canned, content_type, body):
    canned.add(200, body, content_type=content_type)
    for n in range(3):  # what the one-by-one retry would get: it must not happen
        canned.add(200, json.dumps({"sourceTrackingId": f"again-{n}"}))
    messages = make(3)
    with pytest.raises(PauboxAmbiguousResponse):
        default_connection().send_messages(messages)
    assert [path for _, path, _, _ in canned.requests] == ["/v1/clinic/bulk_messages"]
    assert_all_settled()
    for row in Message.objects.all():
        assert row.state == "failed" and "may have reached Paubox" in row.error
        assert row.tracking_id is None
    assert all(m.paubox_tracking_id is None for m in messages)


def test_next_batches_still_go_after_an_ambiguous_one(canned, settings):
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 2}
    canned.add(200, json.dumps({"messages": []}))
    second = {"messages": [{"sourceTrackingId": "c"}, {"sourceTrackingId": "d"}]}
    canned.add(200, json.dumps(second))
    assert new_connection(fail_silently=True).send_messages(make(4)) == 2
    assert len(canned.requests) == 2
    assert sorted(Message.objects.values_list("state", flat=True)) == [
        "failed",
        "failed",
        "sent",
        "sent",
    ]


def test_a_4xx_refusal_of_a_batch_is_still_retried_one_by_one(canned):
    canned.add(400, json.dumps({"errors": [{"code": 400, "title": "Invalid request"}]}))
    for n in range(2):
        canned.add(200, json.dumps({"sourceTrackingId": f"one-{n}"}))
    assert default_connection().send_messages(make(2)) == 2
    assert [p for _, p, _, _ in canned.requests][1:] == ["/v1/clinic/messages"] * 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_batch_refused_for_credentials_or_url_is_not_retried_one_by_one(canned, status):
    canned.add(status, json.dumps({"errors": [{"code": status, "title": "No"}]}))
    with pytest.raises(PauboxAPIError) as info:
        default_connection().send_messages(make(3))
    assert info.value.status == status
    assert len(canned.requests) == 1
    assert set(Message.objects.values_list("state", "error_status")) == {("failed", status)}


def test_deeply_nested_answer_fails_the_row_with_a_reason(canned):
    canned.add(200, DEEP)
    messages = make(1)
    with pytest.raises(PauboxAmbiguousResponse):
        default_connection().send_messages(messages)
    row = Message.objects.get()
    assert row.state == "failed" and "not JSON" in row.error
    assert "may have reached Paubox" in row.error


def test_tracking_id_longer_than_the_column_fails_the_row_with_a_reason(canned):
    canned.add(200, json.dumps({"sourceTrackingId": "z" * 300}))
    with pytest.raises(PauboxAmbiguousResponse):
        default_connection().send_messages(make(1))
    row = Message.objects.get()
    assert row.state == "failed" and row.tracking_id is None
    assert "300 characters" in row.error and "may have reached Paubox" in row.error


def test_a_tracking_id_of_255_characters_is_recorded(canned):
    canned.add(200, json.dumps({"sourceTrackingId": "z" * 255}))
    assert default_connection().send_messages(make(1)) == 1
    assert Message.objects.get().tracking_id == "z" * 255


def test_duplicate_ids_in_one_bulk_answer_fail_those_rows_and_keep_the_others(canned):
    answer = {"messages": [{"sourceTrackingId": i} for i in ("same", "other", "same")]}
    canned.add(200, json.dumps(answer))
    messages = make(3)
    assert new_connection(fail_silently=True).send_messages(messages) == 1
    assert_all_settled()
    assert messages[1].paubox_tracking_id == "other"
    first, _, third = (m.paubox_message for m in messages)
    for row in (first, third):
        row.refresh_from_db()
        assert row.state == "failed" and "may have reached Paubox" in row.error


def test_a_tracking_id_another_message_has_fails_the_row_with_a_reason(canned):
    sent_message(tracking_id="taken")
    canned.add(200, json.dumps({"sourceTrackingId": "taken"}))
    messages = make(1)
    with pytest.raises(PauboxAmbiguousResponse):
        default_connection().send_messages(messages)
    row = messages[0].paubox_message
    row.refresh_from_db()
    assert row.state == "failed" and "another message already has" in row.error
    assert Message.objects.filter(tracking_id="taken").count() == 1


# --- The Celery worker ------------------------------------------------------------------------


def queue(n: int) -> list[int]:
    assert new_connection(CELERY_BACKEND).send_messages(make(n)) == n
    return sorted(Message.objects.values_list("pk", flat=True))


@pytest.mark.parametrize(("content_type", "body"), UNREADABLE_BULK.values(), ids=UNREADABLE_BULK)
def test_worker_fails_an_unreadable_bulk_answer_without_resending(
    canned, enqueued, content_type, body
):
    ids = queue(3)
    canned.add(200, body, content_type=content_type)
    assert tasks.send_queued(ids) == {"sent": 0, "failed": 3, "requeued": 0, "skipped": 0}
    assert len(canned.requests) == 1 and enqueued == []
    assert_all_settled()
    errors = Message.objects.values_list("error", flat=True)
    assert all("may have reached Paubox" in error for error in errors)


def test_worker_requeues_an_unreadable_bulk_answer_only_with_resend_ambiguous(
    canned, enqueued, settings
):
    settings.PAUBOX = {**settings.PAUBOX, "RESEND_AMBIGUOUS": True}
    ids = queue(3)
    canned.add(200, json.dumps({"data": "Service OK"}))
    assert tasks.send_queued(ids)["requeued"] == 3
    assert len(canned.requests) == 1 and enqueued == [ids]
    assert set(Message.objects.values_list("state", flat=True)) == {"queued"}


def test_worker_settles_rows_of_odd_answers(canned, enqueued):
    ids = queue(3)
    answer = {"messages": [{"sourceTrackingId": i} for i in ("dup", "w" * 300, "dup")]}
    canned.add(200, json.dumps(answer))
    assert tasks.send_queued(ids)["failed"] == 3
    assert_all_settled()
