"""Receipt polling over real HTTP against the sandbox: poll_receipts, due_messages, the
back-off schedule and ``manage.py paubox_refresh_receipts``."""

from __future__ import annotations

import io
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_paubox import records
from django_paubox.client import PauboxClient
from django_paubox.conf import get_settings
from django_paubox.models import Delivery, Message
from django_paubox.tracking import polling, schedule
from django_paubox.tracking.polling import NOT_FOUND_GRACE, RefreshSummary, poll_receipts
from django_paubox.tracking.schedule import due_messages, next_check_at, stop_expired
from django_paubox.tracking.statuses import Status

from .commands import manage

pytestmark = pytest.mark.django_db


def _payload(recipients: list[str]) -> dict:
    return {
        "recipients": recipients,
        "headers": {"subject": "Appointment reminder", "from": "clinic@example.com"},
        "content": {"text/plain": "See you on Tuesday."},
    }


def send(*recipients: str) -> Message:
    """Send one message through the sandbox and record it as the backend would."""
    conf = get_settings()
    payload = _payload(list(recipients))
    [message] = records.create_messages(
        [("Appointment reminder", "clinic@example.com", [("to", r) for r in recipients], payload)],
        conf,
    )
    with PauboxClient(conf) as client:
        tracking_id = client.send_message(payload)
    records.mark_sent([(message, tracking_id)], conf)
    message.refresh_from_db()
    return message


def unknown_to_paubox(*, sent_ago: timedelta = timedelta(0)) -> Message:
    """A sent message whose tracking id the sandbox has never seen (answers 404)."""
    conf = get_settings()
    [message] = records.create_messages(
        [("Hi", "clinic@example.com", [("to", "someone@example.com")], {})], conf
    )
    records.mark_sent([(message, str(uuid.uuid4()))], conf)
    backdate(message, sent_ago)
    message.refresh_from_db()
    return message


def backdate(message: Message, ago: timedelta, *, due: bool = True) -> None:
    when = timezone.now() - ago
    Message.objects.filter(pk=message.pk).update(
        created_at=when,
        sent_at=when,
        next_receipt_check_at=timezone.now() - timedelta(seconds=1) if due else None,
    )


def make_due(*messages: Message) -> None:
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(
        next_receipt_check_at=timezone.now() - timedelta(seconds=1)
    )


def statuses_of(message: Message) -> dict[str, str]:
    return dict(message.deliveries.values_list("recipient", "status"))


def receipt_requests(sandbox) -> int:
    return sum(1 for _, path in sandbox.requests if path.split("?")[0].endswith("/message_receipt"))


@pytest.fixture
def no_retries(settings):
    """The client retries 5xx on GETs; these tests want to see the error itself."""
    settings.PAUBOX = {**settings.PAUBOX, "MAX_RETRIES": 0, "TIMEOUT": (2, 2)}


# --- The schedule ---------------------------------------------------------------------------


def test_schedule_backs_off_with_age_and_stops_at_max_age(settings):
    settings.PAUBOX = {**settings.PAUBOX, "RECEIPT_MAX_AGE_HOURS": 72}
    conf = get_settings()
    sent = timezone.now()
    gaps = [
        next_check_at(sent, sent + age, conf) - (sent + age)
        for age in (
            timedelta(seconds=30),
            timedelta(minutes=20),
            timedelta(hours=2),
            timedelta(hours=12),
            timedelta(hours=30),
        )
    ]
    assert gaps == [
        timedelta(minutes=1),
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=6),
    ]
    assert next_check_at(sent, sent + timedelta(hours=67), conf) is None
    assert next_check_at(sent, sent + timedelta(hours=80), conf) is None


def test_due_messages_respects_schedule_age_and_finality(paubox_sandbox):
    due = send("a@example.com")
    not_yet = send("b@example.com")  # mark_sent schedules the first check a minute ahead
    old = send("c@example.com")
    done = send("d@example.com")
    make_due(due, done)
    backdate(old, timedelta(hours=100))
    Delivery.objects.filter(message=done).update(status=Status.DELIVERED)

    assert list(due_messages()) == [due]
    assert set(due_messages(include_all=True)) == {due, not_yet}
    # Named messages are polled whatever their schedule, age or status.
    named = [old.tracking_id, done.tracking_id]
    assert set(due_messages(tracking_ids=named)) == {old, done}
    assert due_messages(include_all=True, limit=1).count() == 1


# --- Refreshing -----------------------------------------------------------------------------


def test_refresh_moves_deliveries_to_their_final_statuses(paubox_sandbox):
    bounce = send("bounce@example.com")
    soft = send("soft@example.com")
    portal = send("portal@example.com")
    opened = send("open@example.com")
    plain = send("patient@example.com", "carer@example.com")
    paubox_sandbox.finish_processing()
    messages = [bounce, soft, portal, opened, plain]

    summary = poll_receipts(Message.objects.filter(pk__in=[m.pk for m in messages]))

    assert summary.checked == 5
    assert summary.errors == 0
    assert summary.changed == 6  # every delivery moved
    assert summary.finished == 4  # a soft bounce may still end either way: polled again
    assert statuses_of(bounce) == {"bounce@example.com": Status.HARD_BOUNCED}
    assert statuses_of(soft) == {"soft@example.com": Status.SOFT_BOUNCED}
    assert statuses_of(plain) == {
        "patient@example.com": Status.DELIVERED,
        "carer@example.com": Status.DELIVERED,
    }
    portal_delivery = portal.deliveries.get()
    assert (portal_delivery.status, portal_delivery.via_secure_portal) == (Status.DELIVERED, True)
    opened_delivery = opened.deliveries.get()
    assert opened_delivery.status == Status.DELIVERED
    assert opened_delivery.opened_at is not None
    assert opened_delivery.delivered_at is not None

    for message in messages:
        message.refresh_from_db()
        assert message.receipt_checked_at is not None
    assert [m.next_receipt_check_at for m in (bounce, portal, opened, plain)] == [None] * 4
    assert soft.next_receipt_check_at > timezone.now()
    assert receipt_requests(paubox_sandbox) == 5


def test_a_second_refresh_changes_nothing(paubox_sandbox):
    message = send("bounce@example.com")
    paubox_sandbox.finish_processing()
    assert poll_receipts([message]).changed == 1
    again = poll_receipts([message])
    assert (again.checked, again.changed, again.errors) == (1, 0, 0)
    assert statuses_of(message) == {"bounce@example.com": Status.HARD_BOUNCED}


def test_processing_stays_pending_and_is_rescheduled(paubox_sandbox):
    paubox_sandbox.processing_seconds = 60
    message = send("patient@example.com")
    summary = poll_receipts([message])
    assert (summary.checked, summary.errors, summary.finished) == (1, 0, 0)
    message.refresh_from_db()
    assert message.deliveries.get().status == Status.PROCESSING
    assert (
        timedelta(seconds=30)
        < message.next_receipt_check_at - timezone.now()
        <= timedelta(minutes=1)
    )


def test_404_just_after_sending_means_ask_again_later(paubox_sandbox):
    message = unknown_to_paubox()
    summary = poll_receipts([message])
    assert summary == RefreshSummary(checked=1, not_found_yet=1)
    message.refresh_from_db()
    assert message.deliveries.get().status == Status.SENT
    assert message.receipt_checked_at is not None
    assert message.next_receipt_check_at > timezone.now()
    assert receipt_requests(paubox_sandbox) == 1


def test_404_long_after_sending_is_an_error(paubox_sandbox):
    message = unknown_to_paubox(sent_ago=NOT_FOUND_GRACE + timedelta(minutes=5))
    summary = poll_receipts([message])
    assert (summary.checked, summary.not_found_yet, summary.errors) == (1, 0, 1)
    assert summary.error_tracking_ids == [message.tracking_id]
    message.refresh_from_db()
    assert message.next_receipt_check_at > timezone.now()  # still asked again later


def test_internal_error_means_ask_again_later(paubox_sandbox):
    message = send("error@example.com")
    paubox_sandbox.finish_processing()
    summary = poll_receipts([message])
    assert (summary.not_found_yet, summary.errors, summary.finished) == (1, 0, 0)
    delivery = message.deliveries.get()
    assert delivery.status == Status.SENT
    assert "check back later" in delivery.raw_status.lower()
    message.refresh_from_db()
    assert message.next_receipt_check_at > timezone.now()


def test_internal_error_as_an_http_answer_means_ask_again_later(paubox_sandbox, no_retries):
    message = send("patient@example.com")
    body = {"errors": [{"code": 500, "title": "Internal error. Please check back later."}]}
    paubox_sandbox.fail_next(500, body=body, endpoint="message_receipt")
    summary = poll_receipts([message])
    assert (summary.not_found_yet, summary.errors) == (1, 0)


def test_server_errors_and_dropped_connections_are_counted_and_rescheduled(
    paubox_sandbox, no_retries
):
    failing = [send(f"patient{i}@example.com") for i in range(3)]
    paubox_sandbox.finish_processing()
    paubox_sandbox.fail_next(503, count=2, endpoint="message_receipt")
    paubox_sandbox.fail_next_with("drop", endpoint="message_receipt")
    with PauboxClient(get_settings(receipt_concurrency=1)) as client:
        summary = poll_receipts(failing, conf=get_settings(receipt_concurrency=1), client=client)
    assert (summary.checked, summary.errors, summary.finished) == (3, 3, 0)
    assert sorted(summary.error_tracking_ids) == sorted(m.tracking_id for m in failing)
    for message in failing:
        message.refresh_from_db()
        assert message.deliveries.get().status == Status.SENT
        assert message.next_receipt_check_at > timezone.now()
    # Next time round Paubox answers, and they finish.
    assert poll_receipts(failing).finished == 3


def test_unreachable_paubox_counts_every_message_as_an_error(paubox_sandbox, settings):
    messages = [send("patient@example.com"), send("carer@example.com")]
    settings.PAUBOX = {**settings.PAUBOX, "API_URL": "http://127.0.0.1:9/v1/", "MAX_RETRIES": 0}
    summary = poll_receipts(messages)
    assert (summary.checked, summary.errors) == (2, 2)


def test_a_message_deleted_while_polling_is_skipped(paubox_sandbox):
    kept, purged = send("a@example.com"), send("b@example.com")
    Message.objects.filter(pk=purged.pk).delete()
    summary = poll_receipts([kept, purged])
    assert summary.checked == 1


def test_polling_is_concurrent_and_bounded(paubox_sandbox, settings):
    """64 receipts at 50 ms each with 16 in flight: at most (and at some point exactly) 16
    requests run at once, and it takes a fraction of the 3.2 s a sequential poll would."""
    settings.PAUBOX = {**settings.PAUBOX, "RECEIPT_CONCURRENCY": 16}
    conf = get_settings()
    payload = _payload(["patient@example.com"])
    with PauboxClient(conf) as client:
        ids = [client.send_message(payload) for _ in range(64)]
    created = records.create_messages(
        [("s", "clinic@example.com", [("to", "patient@example.com")], {})] * 64, conf
    )
    records.mark_sent(list(zip(created, ids, strict=True)), conf)
    paubox_sandbox.finish_processing()
    paubox_sandbox.set_latency(0.05)

    class CountingClient(PauboxClient):
        """The real client; counts its own requests in flight (the HTTP is untouched)."""

        def __init__(self, conf):
            super().__init__(conf)
            self.lock = threading.Lock()
            self.in_flight = self.peak = 0
            self.threads: set[str] = set()

        def get_receipt(self, tracking_id):
            with self.lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                self.threads.add(threading.current_thread().name)
            try:
                return super().get_receipt(tracking_id)
            finally:
                with self.lock:
                    self.in_flight -= 1

    progress: list[tuple[int, int]] = []
    with CountingClient(conf) as client:
        started = time.monotonic()
        summary = poll_receipts(
            Message.objects.filter(pk__in=[m.pk for m in created]),
            client=client,
            progress=lambda done, total: progress.append((done, total)),
        )
        elapsed = time.monotonic() - started

    assert (summary.checked, summary.finished, summary.errors) == (64, 64, 0)
    assert client.peak == 16
    assert len(client.threads) == 16
    assert threading.main_thread().name not in client.threads
    assert elapsed < 64 * 0.05 / 2, elapsed
    assert progress[-1] == (64, 64)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)


# --- The command ----------------------------------------------------------------------------


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(*args: str, stdout: io.StringIO | None = None) -> tuple[str, str]:
    out, err = stdout or io.StringIO(), io.StringIO()
    call_command("paubox_refresh_receipts", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_polls_only_what_is_due(paubox_sandbox):
    due, not_due = send("bounce@example.com"), send("portal@example.com")
    make_due(due)
    paubox_sandbox.finish_processing()

    out, _ = run()
    assert "Checked 1:" in out
    assert receipt_requests(paubox_sandbox) == 1
    assert statuses_of(due) == {"bounce@example.com": Status.HARD_BOUNCED}
    assert statuses_of(not_due) == {"portal@example.com": Status.SENT}

    out, _ = run()
    assert out.strip() == "No receipts due."
    assert receipt_requests(paubox_sandbox) == 1

    out, _ = run("--all")
    assert "Checked 1:" in out  # the bounced one is final now: only the other is polled
    assert statuses_of(not_due) == {"portal@example.com": Status.DELIVERED}


def test_command_limit_and_tracking_ids(paubox_sandbox):
    messages = [send(f"p{i}@example.com") for i in range(3)]
    make_due(*messages)
    paubox_sandbox.finish_processing()
    out, _ = run("--limit", "2")
    assert "Checked 2:" in out
    assert receipt_requests(paubox_sandbox) == 2

    old = messages[2]
    backdate(old, timedelta(hours=200))
    out, _ = run("--all")
    assert out.strip() == "No receipts due."  # too old for --all
    out, _ = run("--tracking-id", old.tracking_id)
    assert "Checked 1:" in out  # named: polled whatever its age
    assert statuses_of(old) == {"p2@example.com": Status.DELIVERED}


def test_command_unknown_tracking_id_fails(paubox_sandbox):
    with pytest.raises(CommandError) as raised:
        run("--tracking-id", "no-such-id")
    assert raised.value.returncode == 1


def test_max_age_stops_polling(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "RECEIPT_MAX_AGE_HOURS": 2}
    paubox_sandbox.processing_seconds = 3600  # never final during the test
    old = send("patient@example.com")
    almost = send("carer@example.com")
    backdate(old, timedelta(hours=3))
    backdate(almost, timedelta(hours=1, minutes=50))

    out, _ = run()
    assert "Checked 1:" in out and "1 too old to poll further" in out
    assert receipt_requests(paubox_sandbox) == 1
    old.refresh_from_db()
    almost.refresh_from_db()
    assert old.next_receipt_check_at is None  # cleared by stop_expired
    assert almost.next_receipt_check_at is None  # its next check would fall past the age
    assert stop_expired() == 0
    out, _ = run()
    assert out.strip() == "No receipts due."
    # --all ignores the schedule, not the age: only the younger one is asked about again.
    out, _ = run("--all")
    assert "Checked 1:" in out
    assert paubox_sandbox.requests[-1][1].endswith(almost.tracking_id)


def test_command_exit_code_1_when_errors(paubox_sandbox, no_retries):
    message = send("patient@example.com")
    make_due(message)
    paubox_sandbox.fail_next(502, endpoint="message_receipt")
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("paubox_refresh_receipts", stdout=out, stderr=io.StringIO())
    assert raised.value.returncode == 1
    assert message.tracking_id in str(raised.value)
    assert "1 errors" in out.getvalue()
    assert "Appointment reminder" not in out.getvalue() + str(raised.value)


def test_command_progress_only_on_a_terminal(paubox_sandbox):
    messages = [send(f"p{i}@example.com") for i in range(3)]
    make_due(*messages)
    out, _ = run("--concurrency", "2", stdout=TTY())
    assert "\r checked 3/3" in out
    make_due(*messages)
    out, _ = run()
    assert "\r" not in out
    assert "Checked 3:" in out


def test_command_bad_usage_in_process():
    for args in (("--limit", "0"), ("--concurrency", "-1"), ("--limit", "x")):
        with pytest.raises(CommandError):
            run(*args)
    with pytest.raises(CommandError) as raised:
        call_command("paubox_refresh_receipts", limit=0)
    assert raised.value.returncode == 2


def test_command_help_and_usage_exit_codes():
    shown = manage("paubox_refresh_receipts", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    for option in ("--limit", "--tracking-id", "--all", "--concurrency"):
        assert option in text
    assert "Exit status: 0" in text and "1 when some could not be had" in text
    assert "2 for bad usage" in text

    for args in (("--limit", "many"), ("--limit", "0"), ("--bogus",)):
        result = manage("paubox_refresh_receipts", *args)
        assert result.returncode == 2, (args, result.stderr)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_refreshes_at_once_neither_fail_nor_regress(paubox_sandbox):
    """Two pollers over the same messages (e.g. cron and the admin action): row locks in one
    order, so no deadlock; forward-only, so the final statuses stand."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; run with DJANGO_PAUBOX_TEST_DB=postgres")
    outcomes = ["bounce", "portal", "patient", "soft"] * 10
    messages = [send(f"{local}+{i}@example.com") for i, local in enumerate(outcomes)]
    paubox_sandbox.finish_processing()
    paubox_sandbox.set_latency(0.01)
    summaries: list[RefreshSummary] = []
    failures: list[BaseException] = []

    def poll() -> None:
        try:
            pks = [m.pk for m in messages]
            summaries.append(poll_receipts(Message.objects.filter(pk__in=pks), batch_size=7))
        except BaseException as error:  # reported below
            failures.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=poll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures
    assert [s.errors for s in summaries] == [0, 0]
    assert sum(s.changed for s in summaries) == 40  # each delivery changed exactly once
    expected = {
        "bounce": Status.HARD_BOUNCED,
        "portal": Status.DELIVERED,
        "patient": Status.DELIVERED,
        "soft": Status.SOFT_BOUNCED,
    }
    for local, message in zip(outcomes, messages, strict=True):
        assert message.deliveries.get().status == expected[local]


def test_receipt_poll_opens_keeps_asking_until_the_single_recipient_opens(paubox_sandbox, settings):
    settings.PAUBOX = {**settings.PAUBOX, "RECEIPT_POLL_OPENS": True}
    single = send("patient@example.com")
    pair = send("patient2@example.com", "carer@example.com")
    paubox_sandbox.finish_processing()
    poll_receipts(Message.objects.filter(pk__in=[single.pk, pair.pk]))
    single.refresh_from_db()
    pair.refresh_from_db()
    assert statuses_of(single) == {"patient@example.com": Status.DELIVERED}
    # Delivered but not opened: a receipt may still bring the open (Paubox reports opens for
    # single-recipient messages only), so the single-recipient message stays scheduled.
    assert single.next_receipt_check_at is not None
    assert pair.next_receipt_check_at is None
    make_due(single)
    assert list(due_messages()) == [single]
    Delivery.objects.filter(message=single).update(opened_at=timezone.now())
    assert list(due_messages()) == []

    settings.PAUBOX = {**settings.PAUBOX, "RECEIPT_POLL_OPENS": False}
    Delivery.objects.filter(message=single).update(opened_at=None)
    assert list(due_messages()) == []  # off: delivered is final, polling stops


def test_a_delivery_made_final_by_a_webhook_gets_one_receipt_for_what_events_cannot_say(
    paubox_sandbox,
):
    message = send("portal@example.com")
    paubox_sandbox.finish_processing()
    records.apply_webhook_event(
        {
            "event_name": "api_mail_log_delivered",
            "payload": {
                "id": 1,
                "source_tracking_id": message.tracking_id,
                "to": "portal@example.com",
                "time": "2026-11-21T10:00:00.000Z",
            },
        }
    )
    delivery = message.deliveries.get()
    assert (delivery.status, delivery.raw_status) == (Status.DELIVERED, "api_mail_log_delivered")
    assert delivery.via_secure_portal is False  # a webhook event does not say
    make_due(message)
    assert list(due_messages()) == [message]

    summary = poll_receipts(due_messages())

    delivery.refresh_from_db()
    assert delivery.via_secure_portal is True
    assert delivery.raw_status == "delivered via secure portal"
    assert summary.finished == 1
    make_due(message)
    assert list(due_messages()) == []  # Paubox's own words are in: polling stops


def test_the_schedule_names_are_still_importable_from_polling():
    # They lived in tracking.polling until the schedule got a module of its own.
    for name in ("due_messages", "next_check_at", "stop_expired", "awaiting_news", "SCHEDULE"):
        assert getattr(polling, name) is getattr(schedule, name)
    assert set(polling.__all__) >= {"poll_receipts", "due_messages", "next_check_at"}
