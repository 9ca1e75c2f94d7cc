"""A plain-backend send whose process dies mid-request is settled (issue #10, item 2).

gunicorn's default worker timeout (30 s) is shorter than our connect + read timeouts: it aborts
the worker (its SIGABRT handler raises ``SystemExit``) while the request to Paubox is under way.
The row must then carry what the sweeper needs to find it, and ``sweep_outbox`` and
``manage.py paubox_settle_stale`` (no Celery needed) must fail it with a reason.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.db.models import F
from django.utils import timezone

from django_paubox import tasks
from django_paubox.models import Message
from tests.factories import emails as make
from tests.mailers import default_connection, new_connection

from .canned_server import CannedServer
from .commands import manage

pytestmark = pytest.mark.django_db

FROM = "Clinic <reminders@clinic.example>"


@pytest.fixture
def canned(settings) -> Iterator[CannedServer]:
    with CannedServer() as server:
        settings.PAUBOX = {
            "API_KEY": "k",
            "API_USERNAME": "clinic",
            "API_URL": server.url,
            "MAX_RETRIES": 0,
            "TIMEOUT": (2, 10),
            "OUTBOX_STALE_SECONDS": 60,
        }
        yield server


def _abort(signum: int, frame: object) -> None:
    raise SystemExit(1)  # what gunicorn's worker does on the arbiter's SIGABRT


def killed_mid_send(canned: CannedServer) -> Message:
    """Send one message while Paubox hangs, and abort the "worker" during the request."""
    canned.add(200, json.dumps({"sourceTrackingId": "too-late"}), delay=2)
    before = len(canned.requests)
    previous = signal.signal(signal.SIGALRM, _abort)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(SystemExit):
            mail.send_mail("s", "b", FROM, ["a@example.com"])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(canned.requests) == before + 1  # the request had reached "Paubox"
    return Message.objects.latest("pk")


def age(message: Message, seconds: float = 120) -> None:
    """Let time pass for a claim (a row without one stays without)."""
    Message.objects.filter(pk=message.pk).update(
        claimed_at=F("claimed_at") - timedelta(seconds=seconds)
    )


def assert_failed_may_have_been_sent(message: Message) -> None:
    message.refresh_from_db()
    assert message.state == "failed" and message.status == "failed"
    assert "may or may not have reached Paubox" in message.error
    assert message.error_status is None
    assert set(message.deliveries.values_list("status", flat=True)) == {"failed"}


def test_a_row_left_sending_carries_its_claim_time(canned):
    row = killed_mid_send(canned)
    assert row.state == "sending" and not row.error
    assert row.claimed_at is not None


def test_sweep_outbox_settles_a_killed_plain_send(canned, enqueued):
    row = killed_mid_send(canned)
    assert tasks.sweep_outbox() == {"reenqueued": 0, "stale_claims": 0}  # not stale yet
    age(row)
    assert tasks.sweep_outbox() == {"reenqueued": 0, "stale_claims": 1}
    assert_failed_may_have_been_sent(row)
    assert enqueued == []


def test_a_killed_plain_send_is_not_resent_even_with_resend_ambiguous(canned, enqueued, settings):
    settings.PAUBOX = {**settings.PAUBOX, "RESEND_AMBIGUOUS": True, "STORE_CONTENT": True}
    row = killed_mid_send(canned)
    age(row)
    assert tasks.sweep_outbox() == {"reenqueued": 0, "stale_claims": 1}
    assert_failed_may_have_been_sent(row)
    assert enqueued == []


def test_settle_command_fails_stale_sends_without_celery(canned, capsys):
    row = killed_mid_send(canned)
    fresh = killed_mid_send(canned)
    age(row)
    call_command("paubox_settle_stale", "--dry-run")
    assert "1 message(s) stale" in capsys.readouterr().out
    assert Message.objects.get(pk=row.pk).state == "sending"
    call_command("paubox_settle_stale")
    assert "Settled 1 stale message(s): 1 failed" in capsys.readouterr().out
    assert_failed_may_have_been_sent(row)
    fresh.refresh_from_db()
    assert fresh.state == "sending"  # still within OUTBOX_STALE_SECONDS: left alone


def test_settle_command_requeues_outbox_claims_with_resend_ambiguous(db, settings, enqueued):
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_STALE_SECONDS": 60, "RESEND_AMBIGUOUS": True}
    assert new_connection("django_paubox.backends.PauboxCeleryEmailBackend").send_messages(make(1))
    row = Message.objects.get()
    Message.objects.filter(pk=row.pk).update(
        state="sending", claimed_at=timezone.now() - timedelta(minutes=5)
    )
    call_command("paubox_settle_stale")
    row.refresh_from_db()
    assert row.state == "queued"
    assert enqueued == [[row.pk]]


def test_a_sending_row_without_a_claim_time_is_settled_once_old(db, settings):
    """Rows the plain backend wrote before 0.2 have no claim time: their age counts."""
    settings.PAUBOX = {**settings.PAUBOX, "OUTBOX_STALE_SECONDS": 60}
    assert new_connection("django_paubox.backends.PauboxCeleryEmailBackend").send_messages(make(2))
    old, new = Message.objects.order_by("pk")
    Message.objects.update(state="sending", claimed_at=None, next_attempt_at=None)
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    call_command("paubox_settle_stale")
    assert_failed_may_have_been_sent(old)
    new.refresh_from_db()
    assert new.state == "sending"


def test_a_long_send_renews_the_claim_of_each_batch(paubox_sandbox, settings):
    """Rows wait for their batch's turn: each batch's claim starts when it leaves, after the
    batch before it was answered (so at least the sandbox's latency after the first's)."""
    settings.PAUBOX = {**settings.PAUBOX, "BATCH_SIZE": 2}
    paubox_sandbox.set_latency(0.3)
    messages = make(4)
    assert default_connection().send_messages(messages) == 4
    first, _, third, _ = (Message.objects.get(pk=m.paubox_message.pk) for m in messages)
    assert first.claimed_at is not None and third.claimed_at is not None
    assert third.claimed_at - first.claimed_at >= timedelta(seconds=0.3)


def test_settle_command_is_in_help():
    result = manage("paubox_settle_stale", "--help")
    assert result.returncode == 0
    assert "OUTBOX_STALE_SECONDS" in result.stdout
