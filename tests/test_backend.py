"""PauboxEmailBackend against the sandbox over real HTTP: Django's contract, bulk batching,
records, failure handling, and no secrets or PHI in errors and logs."""

from __future__ import annotations

import logging

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_paubox import signals
from django_paubox.backends import PauboxEmailBackend
from django_paubox.exceptions import (
    PauboxAPIError,
    PauboxConnectionError,
    PauboxPayloadError,
)
from django_paubox.models import Delivery, Message
from django_paubox.tracking.statuses import Status
from tests.factories import emails as make
from tests.mailers import DJANGO_61, PLAIN, default_connection, new_connection, use_backend

pytestmark = pytest.mark.django_db(transaction=False)

SECRET_BODY = "Patient Jane Roe, MRN 4411, HIV result"
FROM = "Clinic <reminders@clinic.example>"


def bulk_posts(sandbox) -> int:
    return sum(1 for method, path in sandbox.requests if path.endswith("/bulk_messages"))


def single_posts(sandbox) -> int:
    return sum(1 for method, path in sandbox.requests if path.endswith("/messages"))


def test_send_mail_sends_records_and_tags_the_message(paubox_sandbox):
    message = EmailMultiAlternatives(
        "Appointment",
        "Text body",
        FROM,
        ["Ada <ada@example.com>"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to=["desk@clinic.example"],
        headers={"X-Clinic": "north"},
    )
    message.attach_alternative("<p>Html</p>", "text/html")
    message.attach("note.txt", b"hello", "text/plain")
    assert message.send() == 1

    captured = paubox_sandbox.last_message
    assert message.paubox_tracking_id == captured.tracking_id
    assert captured.message["recipients"] == ["Ada <ada@example.com>"]
    assert captured.message["headers"]["X-Clinic"] == "north"
    assert captured.message["attachments"][0]["fileName"] == "note.txt"

    row = Message.objects.get()
    assert row == message.paubox_message
    assert (row.tracking_id, row.state, row.status) == (captured.tracking_id, "sent", "sent")
    assert row.subject == "Appointment"
    assert row.sender_domain == "clinic.example"
    assert row.recipient_count == 3
    assert row.payload is None  # no PHI at rest by default
    assert sorted(row.deliveries.values_list("kind", "recipient", "status")) == [
        ("bcc", "bcc@example.com", "sent"),
        ("cc", "cc@example.com", "sent"),
        ("to", "ada@example.com", "sent"),
    ]


def test_message_row_exists_before_paubox_is_called(paubox_sandbox):
    seen: list[int] = []

    class Spy(PauboxEmailBackend):
        def open(self):
            seen.append(Message.objects.filter(state=Message.State.SENDING).count())
            return super().open()

    Spy().send_messages(make(1))
    assert seen == [1]


def test_bulk_batches_of_fifty_in_order(paubox_sandbox):
    messages = make(120)
    assert new_connection().send_messages(messages) == 120
    assert bulk_posts(paubox_sandbox) == 3
    assert single_posts(paubox_sandbox) == 0
    captured = {m.tracking_id: m for m in paubox_sandbox.messages}
    for message in messages:  # ids assigned in order: each id belongs to its own message
        assert captured[message.paubox_tracking_id].recipients == [message.to[0]]
        assert message.paubox_message.tracking_id == message.paubox_tracking_id
    assert Message.objects.filter(state="sent").count() == 120
    assert Delivery.objects.filter(status=Status.SENT).count() == 120


def test_batch_size_is_a_setting(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 10}
    assert new_connection().send_messages(make(25)) == 25
    assert bulk_posts(paubox_sandbox) == 3


def queries_for(n: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert new_connection().send_messages(make(n)) == n
    return len(ctx.captured_queries)


def test_bulk_query_count_grows_with_batches_not_messages(paubox_sandbox):
    # 40, not 50: SQLite's 999 parameters per statement make bulk_create insert 50 Message rows
    # (21 columns) in two statements; that is Django's batching, not a query per message.
    assert queries_for(40) == queries_for(2)
    # Each further batch costs the same: growth is per batch (50), never per message.
    fifty, hundred, hundred_fifty = queries_for(50), queries_for(100), queries_for(150)
    assert hundred - fifty == hundred_fifty - hundred


def test_messages_without_recipients_are_skipped(paubox_sandbox):
    empty = EmailMessage("No one", "body", FROM, [])
    assert new_connection().send_messages([empty, *make(1)]) == 1
    assert Message.objects.count() == 1
    assert not hasattr(empty, "paubox_tracking_id")
    assert new_connection().send_messages([]) == 0


def test_rejected_batch_is_retried_one_by_one(paubox_sandbox):
    paubox_sandbox.fail_next(400, count=1)
    messages = make(3)
    assert new_connection().send_messages(messages) == 3
    assert bulk_posts(paubox_sandbox) == 1
    assert single_posts(paubox_sandbox) == 3
    assert all(m.paubox_tracking_id for m in messages)


def test_one_bad_message_in_a_rejected_batch_does_not_sink_the_others(paubox_sandbox):
    # The batch is refused, then the one-by-one retry of the second message is refused too.
    paubox_sandbox.fail_next(400, count=1, endpoint="bulk_messages")
    messages = make(3)
    paubox_sandbox.fail_next(422, count=1, endpoint="messages")
    backend = new_connection(fail_silently=True)
    assert backend.send_messages(messages) == 2
    failed = Message.objects.get(state="failed")
    assert failed.error_status == 422
    assert "422" in failed.error
    assert Message.objects.filter(state="sent").count() == 2


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_api_errors_fail_the_row_with_paubox_details(paubox_sandbox, status):
    paubox_sandbox.fail_next(status, count=1)
    with pytest.raises(PauboxAPIError) as info:
        mail.send_mail("s", SECRET_BODY, FROM, ["a@example.com"])
    assert info.value.status == status
    row = Message.objects.get()
    assert (row.state, row.status, row.error_status) == ("failed", "failed", status)
    assert str(info.value) == row.error
    assert row.deliveries.get().status == Status.FAILED


def test_fail_silently_swallows_and_still_records(paubox_sandbox, settings):
    paubox_sandbox.fail_next(503, count=1)
    if DJANGO_61:  # send_mail(fail_silently=) is deprecated: the mailer's OPTIONS say it
        use_backend(settings, PLAIN, {"fail_silently": True})
        assert mail.send_mail("s", "b", FROM, ["a@example.com"]) == 0
    else:
        assert mail.send_mail("s", "b", FROM, ["a@example.com"], fail_silently=True) == 0
    assert Message.objects.get().state == "failed"


def test_wrong_key_401_names_settings_never_the_key(paubox_sandbox, settings, caplog):
    settings.PAUBOX = {**settings.PAUBOX, "API_KEY": "wrong-key-xyz-123"}
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PauboxAPIError) as info:
        mail.send_mail("s", "b", FROM, ["a@example.com"])
    assert info.value.status == 401
    assert 'PAUBOX["API_KEY"]' in str(info.value)
    row = Message.objects.get()
    for text in (str(info.value), repr(info.value), row.error, caplog.text):
        assert "wrong-key-xyz-123" not in text


def test_5xx_on_bulk_fails_that_batch_and_the_rest_unattempted(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 10}
    paubox_sandbox.fail_next(503, count=1, endpoint="bulk_messages")
    messages = make(30)
    with pytest.raises(PauboxAPIError):
        new_connection().send_messages(messages)
    assert bulk_posts(paubox_sandbox) == 1  # no timeouts piled up while Paubox is down
    assert Message.objects.filter(state="failed").count() == 30
    assert Message.objects.filter(error__contains="not attempted").count() == 20
    assert all(m.paubox_tracking_id is None for m in messages)


def test_bulk_rows_are_written_batch_by_batch_while_the_previous_batch_is_sent(
    paubox_sandbox, settings
):
    """Streaming: a batch's rows are written when it is next, not all before the first request.

    Observed from ``post_send``, which fires as each batch's outcome is recorded: when the
    first batch is recorded, Paubox has it and the second batch's rows are written (while the
    first was on the wire), and the third's are not yet.
    """
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 10}
    seen: list[tuple[int, int]] = []  # (rows, messages Paubox has) at each post_send

    def receiver(sender, **kwargs):
        seen.append((Message.objects.count(), len(paubox_sandbox.messages)))

    signals.post_send.connect(receiver, weak=False)
    try:
        messages = make(30)
        assert default_connection().send_messages(messages) == 30
    finally:
        signals.post_send.disconnect(receiver)
    rows, at_paubox = seen[0]
    assert rows == 20
    assert at_paubox >= 10
    assert bulk_posts(paubox_sandbox) == 3
    for message in messages:
        assert message.paubox_message.tracking_id == message.paubox_tracking_id
    assert Message.objects.filter(state="sent").count() == 30
    assert Delivery.objects.filter(status=Status.SENT).count() == 30


def test_a_failing_pre_send_receiver_stops_a_bulk_send_before_anything_is_recorded(
    paubox_sandbox, settings
):
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 10}
    messages = make(30)

    def receiver(sender, message, **kwargs):
        if message is messages[25]:
            raise RuntimeError("receiver bug")

    signals.pre_send.connect(receiver, weak=False)
    try:
        with pytest.raises(RuntimeError):
            default_connection().send_messages(messages)
    finally:
        signals.pre_send.disconnect(receiver)
    assert Message.objects.count() == 0
    assert paubox_sandbox.messages == []


def test_a_message_refused_in_a_later_batch_is_recorded_and_the_batches_stay_full(
    paubox_sandbox, settings
):
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 10}
    messages = make(25)
    messages.insert(12, EmailMessage("s", "b", FROM, ["not-an-address"]))
    backend = new_connection(fail_silently=True)
    assert backend.send_messages(messages) == 25
    assert bulk_posts(paubox_sandbox) == 3  # 10, 10, 5: the refused one leaves no gap
    assert Message.objects.filter(state="sent").count() == 25
    assert Message.objects.get(state="failed").deliveries.get().recipient == "not-an-address"


def test_timeout_after_sending_is_reported_as_maybe_sent(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "TIMEOUT": (2, 0.3)}
    paubox_sandbox.fail_next_with("timeout", count=1)
    with pytest.raises(PauboxConnectionError) as info:
        mail.send_mail("s", "b", FROM, ["a@example.com"])
    assert info.value.may_have_been_sent
    row = Message.objects.get()
    assert row.state == "failed" and "may have reached Paubox" in row.error


def test_dropped_connection_fails_the_row(paubox_sandbox):
    paubox_sandbox.fail_next_with("drop", count=1)
    with pytest.raises(PauboxConnectionError):
        mail.send_mail("s", "b", FROM, ["a@example.com"])
    assert Message.objects.get().state == "failed"


def test_unreachable_paubox_fails_the_row_as_not_sent(db, settings):
    settings.PAUBOX = {
        "API_KEY": "k",
        "API_USERNAME": "u",
        "API_URL": "http://127.0.0.1:9/v1/",
        "MAX_RETRIES": 0,
    }
    with pytest.raises(PauboxConnectionError) as info:
        mail.send_mail("s", "b", FROM, ["a@example.com"])
    assert info.value.may_have_been_sent is False
    assert "did not reach Paubox" in Message.objects.get().error


def test_invalid_message_fails_before_any_http(paubox_sandbox):
    bad = EmailMessage("s", "", FROM, ["a@example.com"])  # no content at all
    with pytest.raises(PauboxPayloadError):
        new_connection().send_messages([bad])
    assert paubox_sandbox.requests == []
    row = Message.objects.get()
    assert row.state == "failed" and row.error and row.error_status is None
    assert bad.paubox_tracking_id is None


def test_invalid_message_in_a_bulk_send_does_not_stop_the_others(paubox_sandbox):
    bad = EmailMessage("s", "b", FROM, ["not-an-address"])
    good = make(2)
    backend = new_connection(fail_silently=True)
    assert backend.send_messages([good[0], bad, good[1]]) == 2
    assert len(paubox_sandbox.messages) == 2
    assert Message.objects.get(state="failed").deliveries.get().recipient == "not-an-address"


def test_connection_is_opened_and_closed_once(paubox_sandbox):
    with new_connection() as backend:
        client = backend.client
        backend.send_messages(make(1))
        backend.send_messages(make(2))
        assert backend.client is client
    assert backend.client is None


def test_store_content_and_store_subject_settings(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "STORE_CONTENT": True, "STORE_SUBJECT": False}
    mail.send_mail("Private subject", SECRET_BODY, FROM, ["a@example.com"])
    row = Message.objects.get()
    assert row.subject == ""
    assert row.payload["message"]["content"]["text/plain"] == SECRET_BODY


def test_no_phi_in_logs_or_errors(paubox_sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    paubox_sandbox.fail_next(500, count=1)
    messages = make(2, subject="Subject about HIV", body=SECRET_BODY)
    messages[0].attach("labs.pdf", SECRET_BODY.encode(), "application/pdf")
    backend = new_connection(fail_silently=True)
    backend.send_messages(messages)
    assert caplog.records, "the failure should have been logged"
    for record in caplog.records:
        assert SECRET_BODY not in record.getMessage()
        assert "HIV" not in record.getMessage()
    assert all(SECRET_BODY not in m.error for m in Message.objects.all())


def test_per_message_paubox_options_reach_paubox(paubox_sandbox):
    message = make(1)[0]
    message.paubox_force_secure_notification = True
    message.paubox_allow_non_tls = True
    message.send()
    sent = paubox_sandbox.last_message.message
    assert sent["forceSecureNotification"] is True
    assert sent["allowNonTLS"] is True


def test_per_connection_credentials(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "API_KEY": "wrong"}
    connection = new_connection(api_key=paubox_sandbox.api_key)
    assert connection.send_messages(make(1)) == 1


def test_send_mail_calls_share_the_process_pooled_client(paubox_sandbox, monkeypatch):
    """send_mail() opens a new backend each call; they borrow one pooled client, which
    close() lets go of without closing, so kept-alive connections serve the next call."""
    with new_connection() as first:
        client = first.client
        first.send_messages(make(1))
    with new_connection() as second:
        assert second.client is client
        second.send_messages(make(1))
    assert client._session is not None  # still open for the next send
    # A forked worker (another process id) never shares the parent's sockets.
    monkeypatch.setattr("django_paubox.client.os.getpid", lambda: -1)
    with new_connection() as in_child:
        assert in_child.client is not client
