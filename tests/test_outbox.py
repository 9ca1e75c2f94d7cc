"""The Celery outbox without a worker: the backend's rows and on-commit enqueue, and the tasks
run in-process against the sandbox (the real-worker drills are in test_celery_worker.py)."""

from __future__ import annotations

import logging

import pytest
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone

from django_paubox import outbox, tasks
from django_paubox.models import Message
from django_paubox.tracking.statuses import Status
from tests.factories import emails as make
from tests.mailers import new_connection

CELERY_BACKEND = "django_paubox.backends.PauboxCeleryEmailBackend"
FROM = "reminders@clinic.example"
BODY = "Patient Jane Roe: lab results ready"

pytestmark = pytest.mark.django_db


def queue(n: int = 1, **kw) -> list[EmailMessage]:
    messages = make(
        n,
        subject="Reminder {i}",
        from_email=FROM,
        to=["p{i}@example.com"],
        body=kw.get("body", BODY),
    )
    assert new_connection(CELERY_BACKEND).send_messages(messages) == n
    return messages


def test_backend_writes_queued_rows_and_enqueues_on_commit(
    paubox_sandbox, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        messages = queue(120)
    rows = Message.objects.order_by("pk")
    assert {r.state for r in rows} == {"queued"}
    assert all(r.payload["message"]["content"]["text/plain"] == BODY for r in rows)
    assert [len(batch) for batch in enqueued] == [50, 50, 20]
    assert messages[0].paubox_message == rows[0] and messages[0].paubox_tracking_id is None
    assert paubox_sandbox.requests == []  # nothing is sent in the request


def test_rolled_back_transaction_sends_nothing(
    paubox_sandbox, enqueued, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            queue(3)
            raise RuntimeError("the view failed")
    assert callbacks == [] and enqueued == []
    assert Message.objects.count() == 0


def test_send_queued_sends_a_batch_and_clears_the_payload(paubox_sandbox):
    queue(3)
    ids = sorted(Message.objects.values_list("pk", flat=True))
    assert tasks.send_queued(ids) == {"sent": 3, "failed": 0, "requeued": 0, "skipped": 0}
    assert sum(path.endswith("/bulk_messages") for _, path in paubox_sandbox.requests) == 1
    for row in Message.objects.all():
        assert row.state == "sent" and row.tracking_id and row.payload is None
        assert row.deliveries.get().status == Status.SENT
    # A redelivered task finds nothing left to send.
    assert tasks.send_queued(ids)["skipped"] == 3
    assert len(paubox_sandbox.messages) == 3


def test_send_queued_bad_input_never_crashes(paubox_sandbox):
    assert tasks.send_queued([999_999, "x", None, -1, True])["sent"] == 0
    assert tasks.send_queued("not a list")["sent"] == 0
    queue(1)
    row = Message.objects.get()
    Message.objects.filter(pk=row.pk).update(payload={"oops": 1})
    assert tasks.send_queued([row.pk])["failed"] == 1
    row.refresh_from_db()
    assert row.state == "failed" and "payload" in row.error
    assert paubox_sandbox.requests == []


def test_permanent_failure_fails_at_once(paubox_sandbox):
    queue(1)
    paubox_sandbox.fail_next(422, count=1)
    row = Message.objects.get()
    assert tasks.send_queued([row.pk])["failed"] == 1
    row.refresh_from_db()
    assert (row.state, row.error_status, row.attempts) == ("failed", 422, 1)


def test_transient_failure_requeues_with_backoff(paubox_sandbox, enqueued, settings):
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_RETRY_DELAY": 30}
    queue(2)
    paubox_sandbox.fail_next(503, count=1)
    ids = sorted(Message.objects.values_list("pk", flat=True))
    assert tasks.send_queued(ids)["requeued"] == 2
    assert enqueued == [ids]  # the retry, scheduled with a countdown
    for row in Message.objects.all():
        assert (row.state, row.attempts, row.error_status) == ("queued", 1, 503)
        assert row.next_attempt_at > timezone.now() + timezone.timedelta(seconds=10)
        assert row.payload is not None  # still needed for the next attempt
    assert tasks.send_queued(ids)["sent"] == 2  # Paubox recovered


def test_gives_up_after_max_attempts(paubox_sandbox, enqueued, settings):
    settings.PAUBOX = {**settings.PAUBOX, "SEND_MAX_ATTEMPTS": 2}
    queue(1)
    row = Message.objects.get()
    for _ in range(2):
        paubox_sandbox.fail_next(503, count=1)
        tasks.send_queued([row.pk])
    row.refresh_from_db()
    assert row.state == "failed" and "gave up after 2 attempts" in row.error


def test_ambiguous_timeout_is_not_resent_by_default(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "TIMEOUT": (2, 0.3)}
    queue(1)
    paubox_sandbox.fail_next_with("timeout", count=1)
    row = Message.objects.get()
    assert tasks.send_queued([row.pk])["failed"] == 1
    row.refresh_from_db()
    assert row.state == "failed" and "may have reached Paubox" in row.error


def test_ambiguous_timeout_resent_with_resend_ambiguous(paubox_sandbox, settings, enqueued):
    settings.PAUBOX = {**settings.PAUBOX, "TIMEOUT": (2, 0.3), "RESEND_AMBIGUOUS": True}
    queue(1)
    paubox_sandbox.fail_next_with("timeout", count=1)
    row = Message.objects.get()
    assert tasks.send_queued([row.pk])["requeued"] == 1


def test_connection_refused_is_transient(db, settings, enqueued):
    settings.PAUBOX = {**settings.PAUBOX, "API_URL": "http://127.0.0.1:9/v1/", "MAX_RETRIES": 0}
    queue(1)
    row = Message.objects.get()
    assert tasks.send_queued([row.pk])["requeued"] == 1


def test_sweeper_reenqueues_stale_queued_and_settles_dead_claims(
    paubox_sandbox, enqueued, settings
):
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_STALE_SECONDS": 60}
    queue(3)
    old = timezone.now() - timezone.timedelta(minutes=5)
    a, b, c = Message.objects.order_by("pk")
    Message.objects.filter(pk=a.pk).update(next_attempt_at=old)  # its doorbell was lost
    Message.objects.filter(pk=b.pk).update(state="sending", claimed_at=old)  # worker died
    assert tasks.sweep_outbox() == {"reenqueued": 1, "stale_claims": 1}
    assert enqueued == [[a.pk]]
    b.refresh_from_db()
    assert b.state == "failed" and "may or may not have reached Paubox" in b.error
    c.refresh_from_db()
    assert c.state == "queued"  # fresh: left alone
    # The re-enqueued row's clock restarted: the next sweep does not enqueue it again.
    assert tasks.sweep_outbox() == {"reenqueued": 0, "stale_claims": 0}


def test_sweeper_requeues_dead_claims_with_resend_ambiguous(db, enqueued, settings):
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_STALE_SECONDS": 60, "RESEND_AMBIGUOUS": True}
    queue(1)
    old = timezone.now() - timezone.timedelta(minutes=5)
    Message.objects.update(state="sending", claimed_at=old)
    assert tasks.sweep_outbox()["reenqueued"] == 1
    assert Message.objects.get().state == "queued"


def test_broker_down_at_send_time_keeps_rows_queued(
    db, monkeypatch, caplog, django_capture_on_commit_callbacks
):
    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(tasks.send_queued, "apply_async", refuse)
    caplog.set_level(logging.WARNING)
    with django_capture_on_commit_callbacks(execute=True):
        queue(2)  # does not raise: the rows are safe
    assert set(Message.objects.values_list("state", flat=True)) == {"queued"}
    assert "stay queued" in caplog.text
    assert BODY not in caplog.text


def test_queue_messages_streams_a_generator(db, enqueued, django_capture_on_commit_callbacks):
    rows_when_yielded: list[int] = []

    def reminders():
        for i in range(1200):
            if i % 500 == 0:
                rows_when_yielded.append(Message.objects.count())
            yield EmailMessage("R", "b", FROM, [f"p{i}@example.com"])

    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.queue_messages(reminders(), chunk_size=500) == 1200
    assert rows_when_yielded == [0, 500, 1000]  # written chunk by chunk, not all at once
    assert sum(len(b) for b in enqueued) == 1200 and max(len(b) for b in enqueued) == 50


def test_refresh_and_purge_tasks(paubox_sandbox, settings):
    queue(1)
    tasks.send_queued(list(Message.objects.values_list("pk", flat=True)))
    paubox_sandbox.finish_processing()
    Message.objects.update(next_receipt_check_at=timezone.now())
    result = tasks.refresh_receipts()
    assert result["checked"] == 1
    assert Message.objects.get().deliveries.get().status == Status.DELIVERED
    Message.objects.update(created_at=timezone.now() - timezone.timedelta(days=100))
    assert tasks.purge(90)["messages"] == 1
    assert Message.objects.count() == 0
