"""Applying Paubox receipts to deliveries: records.apply_receipt and the message's status."""

from __future__ import annotations

import itertools
import os
import random
import string
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr

import pytest
from django.db import connection
from django.utils import timezone as dj_timezone
from hypothesis import given
from hypothesis import strategies as st

from django_paubox import records, signals
from django_paubox.conf import get_settings
from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking.parsing import normalise_address, parse_receipt, parse_rfc2822
from django_paubox.tracking.statuses import Status, from_delivery_status, rank
from tests.factories import sent_message as make_message

POSTGRES = os.environ.get("DJANGO_PAUBOX_TEST_DB") == "postgres"
postgres_only = pytest.mark.skipif(not POSTGRES, reason="needs DJANGO_PAUBOX_TEST_DB=postgres")

TIME = "Mon, 23 Apr 2018 13:27:34 -0700"
TIME_UTC = datetime(2018, 4, 23, 20, 27, 34, tzinfo=timezone.utc)
OPEN_TIME = "Mon, 23 Apr 2018 13:27:51 -0700"
OPEN_TIME_UTC = datetime(2018, 4, 23, 20, 27, 51, tzinfo=timezone.utc)


def entry(recipient: str, status: str | None = "delivered", **fields: object) -> dict:
    body: dict = {} if status is None else {"deliveryStatus": status}
    body.update(fields)
    return {"recipient": recipient, "status": body}


def receipt(*entries: dict, tracking_id: str | None = "track-1", **message_fields) -> dict:
    body: dict = {
        "data": {
            "message": {
                "id": "<f4a9b518@example.org>",
                "message_deliveries": list(entries),
                **message_fields,
            }
        }
    }
    if tracking_id is not None:
        body["sourceTrackingId"] = tracking_id
    return body


def delivery(message: Message, recipient: str = "patient@example.com") -> Delivery:
    return Delivery.objects.get(message=message, recipient=recipient)


@pytest.fixture
def changes():
    """Every delivery_status_changed sent, as (recipient, old, new, source)."""
    seen: list[tuple[str, str, str, str]] = []

    def receiver(sender, delivery, old_status, new_status, source, **kwargs):
        assert sender is Delivery
        seen.append((delivery.recipient, old_status, new_status, source))

    signals.delivery_status_changed.connect(receiver, weak=False)
    yield seen
    signals.delivery_status_changed.disconnect(receiver)


pytestmark = pytest.mark.django_db


# --- Parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TIME, TIME_UTC),
        ("Fri, 16 Feb 2018 13:00:00 GMT", datetime(2018, 2, 16, 13, tzinfo=timezone.utc)),
        ("16 Feb 2018 13:00:00 -0000", datetime(2018, 2, 16, 13, tzinfo=timezone.utc)),
        ("", None),
        ("   ", None),
        ("yesterday", None),
        ("Mon, 99 Foo 2018 99:99:99 -0700", None),
        ("Mon, 23 Apr 99999999999 13:27:34 -0700", None),
        ("2018-04-23T13:27:34Z", None),  # ISO 8601 is not what receipts use
        (None, None),
        (1524515254, None),
    ],
)
def test_parse_rfc2822(text, expected):
    value = parse_rfc2822(text)
    assert value == expected
    if value is not None:
        assert value.tzinfo is not None


_ADDRESS_CHARS = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-.@ \t<>\"(),;:[]\\"


@given(
    st.one_of(
        st.text(alphabet=_ADDRESS_CHARS, max_size=24),
        st.from_regex(r"[A-Za-z0-9._+-]{1,8}@[A-Za-z0-9.-]{1,8}", fullmatch=True),
        st.text(max_size=24),
    )
)
def test_normalise_address_is_parseaddr_with_a_fast_path(text):
    _, address = parseaddr(text)
    assert normalise_address(text) == (address or text).strip().lower()


def test_parse_receipt_tolerates_anything():
    for junk in (None, [], "x", 5, {}, {"data": []}, {"data": {"message": "x"}}):
        parsed = parse_receipt(junk)
        assert parsed.deliveries == ()
    parsed = parse_receipt(
        receipt(
            "not a dict",
            {"recipient": 5, "status": {"deliveryStatus": "delivered"}},
            {"recipient": "", "status": {}},
            {"recipient": "a@example.com", "status": "delivered"},
            {"recipient": "b@example.com"},
        )
    )
    assert [d.recipient for d in parsed.deliveries] == ["a@example.com", "b@example.com"]
    assert all(d.outcome is None for d in parsed.deliveries)


# --- Applying -------------------------------------------------------------------------------


def test_delivered_receipt(django_capture_on_commit_callbacks, changes):
    message = make_message()
    with django_capture_on_commit_callbacks(execute=True):
        changed = records.apply_receipt(
            message, receipt(entry("patient@example.com", "delivered", deliveryTime=TIME))
        )
    d = delivery(message)
    assert [c.pk for c in changed] == [d.pk]
    assert d.status == Status.DELIVERED
    assert d.raw_status == "delivered"
    assert d.delivered_at == TIME_UTC
    assert d.opened_at is None
    assert d.via_secure_portal is False
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert message.receipt_checked_at is not None
    assert changes == [("patient@example.com", "sent", "delivered", "receipt")]


def test_instance_passed_in_is_updated():
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com", "processing")))
    assert message.status == Status.PROCESSING
    assert message.receipt_checked_at is not None


def test_recipient_with_display_name_and_case_is_matched():
    message = make_message(["patient@example.com"])
    records.apply_receipt(
        message, receipt(entry("Pat Ient <Patient@EXAMPLE.com>", "delivered", deliveryTime=TIME))
    )
    assert delivery(message).status == Status.DELIVERED


def test_each_recipient_gets_its_own_status():
    message = make_message(["a@example.com", "b@example.com", "c@example.com"])
    records.apply_receipt(
        message,
        receipt(
            entry("a@example.com", "delivered", deliveryTime=TIME),
            entry("b@example.com", "soft bounced - mailbox full"),
            entry("c@example.com", "processing"),
        ),
    )
    assert delivery(message, "a@example.com").status == Status.DELIVERED
    b = delivery(message, "b@example.com")
    assert (b.status, b.raw_status) == (Status.SOFT_BOUNCED, "soft bounced - mailbox full")
    assert delivery(message, "c@example.com").status == Status.PROCESSING
    message.refresh_from_db()
    assert message.status == Status.SOFT_BOUNCED  # a problem shows on the message


def test_secure_portal_flow():
    message = make_message()
    records.apply_receipt(
        message, receipt(entry("patient@example.com", "TLS not offered, sending via Secure Portal"))
    )
    d = delivery(message)
    assert (d.status, d.via_secure_portal) == (Status.PROCESSING, True)
    records.apply_receipt(
        message,
        receipt(entry("patient@example.com", "delivered via secure portal", deliveryTime=TIME)),
    )
    d = delivery(message)
    assert (d.status, d.via_secure_portal, d.delivered_at) == (Status.DELIVERED, True, TIME_UTC)
    assert d.raw_status == "delivered via secure portal"


def test_opened_with_time_and_counters():
    message = make_message()
    records.apply_receipt(
        message,
        receipt(
            entry(
                "patient@example.com",
                "delivered",
                deliveryTime=TIME,
                openedStatus="opened",
                openedTime=OPEN_TIME,
            ),
            total_opens=3,
            distinct_opens=1,
            total_click_count=2,
            clicks_per_link=[
                {"click_count": 2, "target_url": "https://example.org/portal"},
                {"click_count": "x", "target_url": "https://example.org/bad"},
                "junk",
            ],
            unsubscribed=False,
        ),
    )
    d = delivery(message)
    assert d.status == Status.DELIVERED  # an open is never a status
    assert d.opened_at == OPEN_TIME_UTC
    assert (d.total_opens, d.distinct_opens, d.total_click_count) == (3, 1, 2)
    assert d.clicks_per_link == [{"click_count": 2, "target_url": "https://example.org/portal"}]
    assert d.unsubscribed is False


def test_not_opened_sets_nothing():
    message = make_message()
    records.apply_receipt(
        message,
        receipt(entry("patient@example.com", "delivered", openedStatus="not opened")),
    )
    assert delivery(message).opened_at is None


def test_opened_without_a_usable_time_records_when_we_learned_it():
    message = make_message()
    before = dj_timezone.now()
    records.apply_receipt(
        message,
        receipt(entry("patient@example.com", "delivered", openedStatus="Opened", openedTime="?")),
    )
    d = delivery(message)
    assert d.opened_at is not None and d.opened_at >= before
    # A later receipt with the real (earlier) time replaces the stand-in.
    records.apply_receipt(
        message,
        receipt(
            entry("patient@example.com", "delivered", openedStatus="opened", openedTime=OPEN_TIME)
        ),
    )
    assert delivery(message).opened_at == OPEN_TIME_UTC


def test_message_level_counters_are_not_spread_over_several_recipients():
    message = make_message(["a@example.com", "b@example.com"])
    records.apply_receipt(
        message,
        receipt(
            entry("a@example.com", "delivered"),
            entry("b@example.com", "delivered"),
            total_opens=4,
        ),
    )
    assert {d.total_opens for d in message.deliveries.all()} == {None}


def test_counters_never_go_down():
    message = make_message()
    records.apply_receipt(
        message,
        receipt(
            entry("patient@example.com", "delivered"),
            total_opens=5,
            total_click_count=3,
            clicks_per_link=[{"click_count": 3, "target_url": "https://example.org/"}],
            unsubscribed=True,
        ),
    )
    changed = records.apply_receipt(
        message,
        receipt(
            entry("patient@example.com", "delivered"),
            total_opens=2,  # a stale receipt, applied late
            total_click_count=1,
            clicks_per_link=[{"click_count": 1, "target_url": "https://example.org/"}],
            unsubscribed=False,
        ),
    )
    assert changed == []
    d = delivery(message)
    assert (d.total_opens, d.total_click_count, d.unsubscribed) == (5, 3, True)
    assert d.clicks_per_link == [{"click_count": 3, "target_url": "https://example.org/"}]


def test_a_receipt_saying_unsubscribed_puts_the_address_on_the_suppression_list(
    django_capture_on_commit_callbacks,
):
    from django_paubox.models import Suppression

    message, other = make_message(), make_message(tracking_id="track-2")
    seen: list[str] = []

    def receiver(sender, address, **kwargs):
        seen.append(address)

    signals.recipient_unsubscribed.connect(receiver, weak=False)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            records.apply_receipt(
                other, receipt(entry("patient@example.com"), tracking_id="track-2")
            )
            assert not Suppression.objects.exists()  # no flag, no row
            for _ in range(2):  # the second says it again: nothing new
                records.apply_receipt(
                    message, receipt(entry("patient@example.com"), unsubscribed=True)
                )
    finally:
        signals.recipient_unsubscribed.disconnect(receiver)
    row = Suppression.objects.get()
    assert (row.address, row.reason, row.message_id) == (
        "patient@example.com",
        Suppression.Reason.UNSUBSCRIBED,
        message.pk,
    )
    assert seen == ["patient@example.com"]


@pytest.mark.parametrize(
    "raw", ["Internal error. Please check back later.", "deferred: greylisted", "DELIVERED?!"]
)
def test_unknown_or_internal_error_status_is_kept_raw_without_status_change(raw, changes):
    message = make_message()
    changed = records.apply_receipt(message, receipt(entry("patient@example.com", raw)))
    d = delivery(message)
    assert d.status == Status.SENT
    assert d.raw_status == raw
    assert [c.pk for c in changed] == [d.pk]  # the raw words changed
    message.refresh_from_db()
    assert message.status == Status.SENT
    assert changes == []


def test_internal_error_does_not_overwrite_the_words_of_a_final_status():
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com", "hard bounced")))
    records.apply_receipt(
        message, receipt(entry("patient@example.com", "Internal error. Please check back later."))
    )
    d = delivery(message)
    assert (d.status, d.raw_status) == (Status.HARD_BOUNCED, "hard bounced")


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"deliveryTime": ""},
        {"deliveryTime": "not a date"},
        {"deliveryTime": 1524515254},
        {"deliveryTime": None, "openedStatus": None, "openedTime": None},
        {"deliveryTime": "Mon, 32 Apr 2018 13:27:34 -0700"},
    ],
)
def test_missing_or_garbage_times(fields):
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com", "delivered", **fields)))
    d = delivery(message)
    assert (d.status, d.delivered_at, d.opened_at) == (Status.DELIVERED, None, None)
    assert d.raw_status == "delivered"


def test_a_time_arriving_later_fills_in_delivered_at():
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com", "delivered")))
    records.apply_receipt(
        message, receipt(entry("patient@example.com", "delivered", deliveryTime=TIME))
    )
    assert delivery(message).delivered_at == TIME_UTC


def test_empty_message_deliveries_only_records_the_check(changes):
    message = make_message()
    assert records.apply_receipt(message, receipt()) == []
    message.refresh_from_db()
    assert message.receipt_checked_at is not None
    assert message.status == Status.SENT
    assert delivery(message).status == Status.SENT


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": None},
        {"data": {"message": None}},
        {"data": {"message": {"message_deliveries": "nope"}}},
        {"data": {"message": {"message_deliveries": [None, 1, "x", []]}}},
        {"sourceTrackingId": 5, "data": {"message": {"message_deliveries": [{"status": {}}]}}},
    ],
)
def test_malformed_receipts_do_not_crash(body):
    message = make_message()
    assert records.apply_receipt(message, body) == []
    assert delivery(message).status == Status.SENT


def test_entry_without_delivery_status_changes_no_status():
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com", None, deliveryTime=TIME)))
    d = delivery(message)
    assert (d.status, d.raw_status, d.delivered_at) == (Status.SENT, "", None)


def test_unknown_recipients_are_ignored():
    message = make_message(["a@example.com"])
    changed = records.apply_receipt(message, receipt(entry("stranger@example.com", "delivered")))
    assert changed == []
    assert delivery(message, "a@example.com").status == Status.SENT


def test_receipt_for_another_message_is_ignored():
    message = make_message()
    changed = records.apply_receipt(
        message, receipt(entry("patient@example.com"), tracking_id="someone-else")
    )
    assert changed == []
    message.refresh_from_db()
    assert message.receipt_checked_at is None
    assert delivery(message).status == Status.SENT


def test_receipt_without_tracking_id_is_applied():
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com"), tracking_id=None))
    assert delivery(message).status == Status.DELIVERED


# --- Forward only ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "kept"),
    [
        ("delivered", "processing", Status.DELIVERED),
        ("delivered", "soft bounced", Status.DELIVERED),
        ("delivered", "hard bounced", Status.DELIVERED),
        ("hard bounced", "delivered", Status.HARD_BOUNCED),
        ("hard bounced", "processing", Status.HARD_BOUNCED),
        ("soft bounced", "processing", Status.SOFT_BOUNCED),
        ("soft bounced", "delivered", Status.DELIVERED),
        ("soft bounced", "hard bounced", Status.HARD_BOUNCED),
        ("processing", "delivered", Status.DELIVERED),
    ],
)
def test_receipts_only_move_forward(first, then, kept, django_capture_on_commit_callbacks, changes):
    message = make_message()
    with django_capture_on_commit_callbacks(execute=True):
        records.apply_receipt(message, receipt(entry("patient@example.com", first)))
        records.apply_receipt(message, receipt(entry("patient@example.com", then)))
    d = delivery(message)
    assert d.status == kept
    # The raw words explain the status kept, not the report that was ignored.
    first_status = from_delivery_status(first).status
    assert d.raw_status == (then if kept != first_status else first)
    # One signal per real change, never for the ignored report.
    assert [c[2] for c in changes] == list(dict.fromkeys([first_status, kept]))


def test_failed_message_is_final():
    conf = get_settings()
    [message] = records.create_messages(
        [("s", "clinic@example.org", [("to", "patient@example.com")], {})], conf
    )
    records.mark_failed([message], "Paubox said no", conf)
    message.tracking_id = "track-failed"
    message.save(update_fields=["tracking_id"])
    records.apply_receipt(
        message, receipt(entry("patient@example.com", "delivered"), tracking_id="track-failed")
    )
    assert delivery(message).status == Status.FAILED
    message.refresh_from_db()
    assert message.status == Status.FAILED


# --- The message's status -------------------------------------------------------------------

A = records.aggregate_status


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], None),
        (["sent"], "sent"),
        (["delivered", "delivered"], "delivered"),
        (["delivered", "processing"], "processing"),
        (["delivered", "sent", "processing"], "sent"),
        (["delivered", "queued"], "queued"),
        (["delivered", "soft_bounced"], "soft_bounced"),
        (["processing", "soft_bounced"], "soft_bounced"),
        (["soft_bounced", "hard_bounced", "delivered"], "hard_bounced"),
        (["hard_bounced", "delivered"], "hard_bounced"),
        (["failed", "hard_bounced", "delivered"], "failed"),
        (["hard_bounced"], "hard_bounced"),
    ],
)
def test_aggregate_status(statuses, expected):
    assert A(statuses) == expected


def test_aggregate_status_of_a_failed_message():
    assert A(["delivered"], message_failed=True) == "failed"
    assert A([], message_failed=True) == "failed"


def test_refresh_message_status():
    message = make_message(["a@example.com", "b@example.com"])
    Delivery.objects.filter(message=message).update(status=Status.DELIVERED)
    assert records.refresh_message_status(message) == Status.DELIVERED
    assert Message.objects.get(pk=message.pk).status == Status.DELIVERED
    Delivery.objects.filter(message=message, recipient="b@example.com").update(
        status=Status.HARD_BOUNCED
    )
    assert records.refresh_message_status(message) == Status.HARD_BOUNCED
    assert message.status == Status.HARD_BOUNCED


def test_message_without_deliveries_keeps_its_status():
    message = make_message([])
    assert records.refresh_message_status(message) == Status.SENT


def test_message_delivered_only_when_every_recipient_is():
    message = make_message(["a@example.com", "b@example.com"])
    records.apply_receipt(
        message, receipt(entry("a@example.com", "delivered"), entry("b@example.com", "processing"))
    )
    assert message.status == Status.PROCESSING
    records.apply_receipt(message, receipt(entry("b@example.com", "delivered")))
    assert message.status == Status.DELIVERED


# --- Signals --------------------------------------------------------------------------------


def test_signals_wait_for_commit(django_capture_on_commit_callbacks, changes):
    message = make_message()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        records.apply_receipt(message, receipt(entry("patient@example.com", "delivered")))
    assert changes == []
    assert len(callbacks) == 1
    callbacks[0]()
    assert changes == [("patient@example.com", "sent", "delivered", "receipt")]


def test_a_failing_receiver_does_not_break_the_update(django_capture_on_commit_callbacks):
    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    signals.delivery_status_changed.connect(broken, weak=False)
    try:
        message = make_message()
        with django_capture_on_commit_callbacks(execute=True):
            records.apply_receipt(message, receipt(entry("patient@example.com", "delivered")))
    finally:
        signals.delivery_status_changed.disconnect(broken)
    assert delivery(message).status == Status.DELIVERED


def test_no_signal_when_nothing_changes(django_capture_on_commit_callbacks, changes):
    message = make_message()
    with django_capture_on_commit_callbacks(execute=True):
        records.apply_receipt(message, receipt(entry("patient@example.com", "delivered")))
        records.apply_receipt(message, receipt(entry("patient@example.com", "delivered")))
        records.apply_receipt(message, receipt(entry("patient@example.com", "processing")))
    assert len(changes) == 1


# --- Batches and orphaned webhook events ----------------------------------------------------


def test_apply_receipts_in_one_batch_uses_a_fixed_number_of_queries(
    django_assert_max_num_queries,
):
    messages = [make_message(["a@example.com", "b@example.com"], f"t-{i}") for i in range(20)]
    items = [
        (
            m,
            receipt(
                entry("a@example.com", "delivered", deliveryTime=TIME),
                entry("b@example.com", "soft bounced"),
                tracking_id=m.tracking_id,
            ),
        )
        for m in messages
    ]
    with django_assert_max_num_queries(10):
        results = records.apply_receipts(items)
    assert [len(r) for r in results] == [2] * 20
    assert set(Message.objects.values_list("status", flat=True)) == {Status.SOFT_BOUNCED}


def test_events_that_arrived_before_the_tracking_id_was_saved_are_linked_by_the_next_receipt():
    message = make_message(tracking_id=None)
    event, created = records.apply_webhook_event(
        {
            "event_name": "api_mail_log_opened",
            "payload": {
                "id": 1,
                "source_tracking_id": "early-1",
                "to": "patient@example.com",
                "time": "2018-04-23T20:27:51Z",
            },
        }
    )
    assert created and event.message_id is None
    records.mark_sent([(message, "early-1")], get_settings())
    records.apply_receipt(
        message, receipt(entry("patient@example.com", "delivered"), tracking_id="early-1")
    )
    event.refresh_from_db()
    assert event.message_id == message.pk
    d = delivery(message)
    assert d.status == Status.DELIVERED
    assert d.opened_at == OPEN_TIME_UTC


# --- Concurrency (PostgreSQL) ---------------------------------------------------------------


def _in_thread(target, *args):
    """Run ``target`` in a thread with its own database connection; re-raise its error."""
    errors: list[BaseException] = []

    def run():
        try:
            target(*args)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_refreshes_at_once_never_regress(monkeypatch, changes):
    """A stale "processing" read while "delivered" is being written must not win.

    ``advance`` is slowed down so that, without the row locks, the second refresh would read
    the delivery before the first commits and overwrite "delivered" with "processing".
    """
    from django_paubox.records import dispositions

    message = make_message()
    real_advance = dispositions.advance

    def slow_advance(current, new):
        time.sleep(0.3)
        return real_advance(current, new)

    monkeypatch.setattr(dispositions, "advance", slow_advance)
    first, errors1 = _in_thread(
        records.apply_receipt,
        Message.objects.get(pk=message.pk),
        receipt(entry("patient@example.com", "delivered", deliveryTime=TIME)),
    )
    time.sleep(0.1)
    second, errors2 = _in_thread(
        records.apply_receipt,
        Message.objects.get(pk=message.pk),
        receipt(entry("patient@example.com", "processing")),
    )
    first.join(10)
    second.join(10)
    assert not errors1 and not errors2
    d = delivery(message)
    assert (d.status, d.raw_status, d.delivered_at) == (Status.DELIVERED, "delivered", TIME_UTC)
    assert Message.objects.get(pk=message.pk).status == Status.DELIVERED
    assert changes == [("patient@example.com", "sent", "delivered", "receipt")]


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_many_concurrent_refreshes_and_webhooks_converge(changes):
    """Eight threads apply receipts and events in random orders; everything ends delivered."""
    messages = [make_message(["a@example.com", "b@example.com"], f"c-{i}") for i in range(10)]
    reports = ["processing", "TLS not offered, sending via Secure Portal", "soft bounced"]

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        work = []
        for m in messages:
            for raw in [*reports, "delivered via secure portal"]:
                work.append(("receipt", m, raw))
            work.append(("event", m, "api_mail_log_delivered"))
        rng.shuffle(work)
        for kind, m, raw in work:
            if kind == "receipt":
                records.apply_receipt(
                    m,
                    receipt(
                        entry("a@example.com", raw),
                        entry("b@example.com", raw),
                        tracking_id=m.tracking_id,
                    ),
                )
            else:
                records.apply_webhook_event(
                    {
                        "event_name": raw,
                        "payload": {
                            "id": seed,
                            "source_tracking_id": m.tracking_id,
                            "to": "a@example.com",
                        },
                    }
                )

    threads = [_in_thread(worker, seed) for seed in range(8)]
    for thread, _ in threads:
        thread.join(60)
    assert not any(errors for _, errors in threads)
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert set(Message.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert WebhookEvent.objects.count() == 8 * len(messages)
    # Per delivery, the signalled changes form one forward chain from "sent" to "delivered"
    # (checked regardless of the order in which threads ran their on_commit callbacks).
    by_delivery: dict[int, list[tuple[str, str]]] = {}
    for d_pk, old, new in _signal_log:
        by_delivery.setdefault(d_pk, []).append((old, new))
    assert len(by_delivery) == 20
    for chain in by_delivery.values():
        chain.sort(key=lambda change: rank(change[0]))
        assert chain[0][0] == Status.SENT
        assert chain[-1][1] == Status.DELIVERED
        for (_, new), (old_next, _) in itertools.pairwise(chain):
            assert new == old_next
        assert all(rank(new) > rank(old) for old, new in chain)


_signal_log: list[tuple[int, str, str]] = []


@pytest.fixture(autouse=True)
def _log_signals():
    """Record (delivery pk, old, new) in arrival order, for the chain check above."""
    lock = threading.Lock()

    def receiver(delivery, old_status, new_status, **kwargs):
        with lock:
            _signal_log.append((delivery.pk, old_status, new_status))

    _signal_log.clear()
    signals.delivery_status_changed.connect(receiver, weak=False)
    yield
    signals.delivery_status_changed.disconnect(receiver)


def test_timestamps_are_aware():
    message = make_message()
    records.apply_receipt(
        message, receipt(entry("patient@example.com", "delivered", deliveryTime=TIME))
    )
    assert delivery(message).delivered_at.utcoffset() == timedelta(0)
