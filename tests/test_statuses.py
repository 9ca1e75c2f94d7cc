"""The mapping of Paubox's words onto statuses, and the forward-only rule, exhaustively."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_paubox.tracking import statuses
from django_paubox.tracking.statuses import (
    DELIVERY_STATUS_STRINGS,
    FINAL_STATUSES,
    WEBHOOK_EVENT_NAMES,
    Status,
    advance,
    from_delivery_status,
    from_webhook_event,
    is_final,
)

Q, SE, P, D, SB, HB, F = (
    Status.QUEUED,
    Status.SENT,
    Status.PROCESSING,
    Status.DELIVERED,
    Status.SOFT_BOUNCED,
    Status.HARD_BOUNCED,
    Status.FAILED,
)

#: Written out by hand, not derived from the rank table: the transitions that are allowed.
LEGAL: dict[str, set[str]] = {
    Q: {SE, P, SB, D, HB, F},
    SE: {P, SB, D, HB, F},
    P: {SB, D, HB, F},
    SB: {D, HB, F},  # Paubox retries a soft bounce: it may still be delivered or hard bounce
    D: set(),
    HB: set(),
    F: set(),
}

ALL = list(Status)


def test_legal_table_covers_every_status():
    assert set(LEGAL) == set(Status.values)


@pytest.mark.parametrize(
    ("current", "new"), list(itertools.product(ALL, ALL)), ids=lambda s: str(s)
)
def test_every_transition(current, new):
    expected = new if new in LEGAL[current] else current
    assert advance(current, new) == expected
    # Plain strings (as read from the database) behave like the enum members.
    assert advance(str(current.value), str(new.value)) == expected


@pytest.mark.parametrize("status", ALL, ids=str)
def test_final_statuses(status):
    assert is_final(status) == (not LEGAL[status])
    assert is_final(str(status.value)) == (not LEGAL[status])


def test_final_set_is_exactly_delivered_hard_bounced_failed():
    assert {"delivered", "hard_bounced", "failed"} == FINAL_STATUSES


@pytest.mark.parametrize("status", ALL, ids=str)
def test_unknown_new_status_changes_nothing(status):
    assert advance(status, "opened") == status
    assert advance(status, "") == status


def test_unknown_current_status_gives_way_to_a_known_one():
    assert advance("garbage", Status.SENT) == Status.SENT
    assert advance("garbage", "other garbage") == "garbage"


@given(st.sampled_from(ALL), st.lists(st.sampled_from(ALL), max_size=12))
def test_any_sequence_of_reports_only_moves_forward(start, reports):
    current = start
    for report in reports:
        kept = advance(current, report)
        assert statuses.rank(kept) >= statuses.rank(current)
        assert kept in (current, report)
        if is_final(current):
            assert kept == current
        current = kept


@given(st.permutations([Status.PROCESSING, Status.SOFT_BOUNCED, Status.DELIVERED, Status.SENT]))
def test_order_of_arrival_does_not_matter_without_competing_finals(reports):
    current: str = Status.QUEUED
    for report in reports:
        current = advance(current, report)
    assert current == Status.DELIVERED


# --- Paubox's strings -----------------------------------------------------------------------

DELIVERY_STATUS_TABLE = [
    # (Paubox string, status, via secure portal, retry later)
    ("processing", P, False, False),
    ("TLS not offered, sending via Secure Portal", P, True, False),
    ("soft bounced", SB, False, False),
    ("soft bounced - mailbox full", SB, False, False),
    ("hard bounced", HB, False, False),
    ("Internal error. Please check back later.", None, False, True),
    ("delivered", D, False, False),
    ("delivered via secure portal", D, True, False),
]


def test_table_lists_the_eight_documented_strings():
    assert [row[0] for row in DELIVERY_STATUS_TABLE] == list(DELIVERY_STATUS_STRINGS)
    assert len(DELIVERY_STATUS_STRINGS) == 8


@pytest.mark.parametrize(("raw", "status", "portal", "later"), DELIVERY_STATUS_TABLE)
def test_delivery_status_strings(raw, status, portal, later):
    outcome = from_delivery_status(raw)
    assert outcome.known
    assert outcome.status == status
    assert outcome.via_secure_portal is portal
    assert outcome.retry_later is later
    assert outcome.opened is False
    assert outcome.raw == raw


@pytest.mark.parametrize(("raw", "status", "portal", "later"), DELIVERY_STATUS_TABLE)
def test_delivery_status_matching_ignores_case_and_spacing(raw, status, portal, later):
    for variant in (raw.upper(), f"  {raw}\n", raw.replace(" ", "  \t"), raw.title()):
        outcome = from_delivery_status(variant)
        assert (outcome.status, outcome.via_secure_portal, outcome.retry_later) == (
            status,
            portal,
            later,
        )
        assert outcome.raw == variant  # Paubox's words are kept as they came


@pytest.mark.parametrize(
    "raw", ["", "bounced", "delivered!", "queued", "opened", "deferred", "délivré", "\x00"]
)
def test_unknown_delivery_status_is_kept_raw(raw):
    outcome = from_delivery_status(raw)
    assert outcome.status is None
    assert not outcome.known
    assert outcome.raw == raw


@pytest.mark.parametrize("raw", [None, 3, 2.5, [], {}, True])
def test_delivery_status_of_wrong_type_does_not_crash(raw):
    outcome = from_delivery_status(raw)
    assert outcome.status is None
    assert not outcome.known


@given(st.text())
def test_any_delivery_status_string_maps_without_crashing(raw):
    outcome = from_delivery_status(raw)
    assert outcome.status is None or outcome.status in Status.values
    assert outcome.raw == raw


EVENT_TABLE = [
    ("api_mail_log_delivered", D, False),
    ("api_mail_log_temporary_failure", SB, False),
    ("api_mail_log_permanent_failure", HB, False),
    ("api_mail_log_opened", None, True),
]


def test_event_table_lists_the_four_documented_events():
    assert [row[0] for row in EVENT_TABLE] == list(WEBHOOK_EVENT_NAMES)


@pytest.mark.parametrize(("name", "status", "opened"), EVENT_TABLE)
def test_webhook_events(name, status, opened):
    for variant in (name, name.upper(), f" {name} "):
        outcome = from_webhook_event(variant)
        assert outcome.known
        assert outcome.status == status
        assert outcome.opened is opened
        assert not outcome.via_secure_portal


@pytest.mark.parametrize("name", ["api_mail_log_clicked", "", "delivered", None, 5])
def test_unknown_webhook_events(name):
    outcome = from_webhook_event(name)
    assert not outcome.known
    assert outcome.status is None
    assert not outcome.opened


def test_an_open_is_never_a_status():
    assert "opened" not in Status.values
    assert from_webhook_event("api_mail_log_opened").status is None


SPEC = Path(__file__).resolve().parents[2] / "shared" / "paubox-openapi.json"


@pytest.mark.skipif(
    not SPEC.exists(),
    reason=f"{SPEC} not found: the OpenAPI conformance tests did not run",
)
def test_strings_match_paubox_openapi_spec():
    spec = json.loads(SPEC.read_text())
    schemas = spec["components"]["schemas"]
    documented = schemas["DeliveryStatus"]["properties"]["deliveryStatus"]["enum"]
    assert sorted(documented) == sorted(DELIVERY_STATUS_STRINGS)
    for raw in documented:
        assert from_delivery_status(raw).known


# --- The desk's words (the admin) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "state", "opened", "pending", "word"),
    [
        ("queued", "queued", False, False, "queued"),
        ("queued", "sending", False, False, "queued"),
        ("queued", "sent", False, True, "scheduled"),
        ("queued", "sent", False, False, "sent"),
        ("sent", "sent", False, False, "sent"),
        ("processing", "sent", False, False, "processing"),
        ("delivered", "sent", False, False, "delivered"),
        ("delivered", "sent", True, False, "opened"),
        ("delivered", "", True, False, "opened"),  # a delivery: no send state
        ("hard_bounced", "sent", True, False, "hard_bounced"),  # a bounce stays visible
        ("soft_bounced", "sent", False, False, "soft_bounced"),
        ("failed", "failed", False, False, "failed"),
        ("failed", "cancelled", False, False, "cancelled"),
    ],
)
def test_desk_status(status, state, opened, pending, word):
    assert (
        statuses.desk_status(status, state=state, opened=opened, scheduled_pending=pending) == word
    )


def test_every_desk_word_has_a_label_and_a_meaning_and_every_status_a_word():
    for key, (label, meaning) in statuses.DESK_STATUSES.items():
        assert label and meaning.endswith("."), key
    assert set(Status.values) <= set(statuses.DESK_STATUSES)


def test_event_labels():
    assert statuses.event_label("api_mail_log_opened") == "Opened"
    assert statuses.event_label(" API_mail_log_delivered ") == "Delivered"
    assert statuses.event_label("api_mail_log_new_thing") == "api_mail_log_new_thing"
    assert set(statuses.EVENT_LABELS) == set(statuses.WEBHOOK_EVENT_NAMES)
