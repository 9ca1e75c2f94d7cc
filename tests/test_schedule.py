"""Scheduled sends: payloads, the client and the sandbox's /schedule endpoints over real HTTP,
the backend and the Celery outbox, cancel and reschedule, bad input, and the admin."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.contrib.auth.models import Permission, User
from django.core.mail import EmailMessage
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_paubox import tasks
from django_paubox.client import PauboxClient
from django_paubox.conf import get_settings
from django_paubox.exceptions import PauboxAPIError, PauboxPayloadError
from django_paubox.models import Message
from django_paubox.sending import scheduled as scheduled_sends
from django_paubox.sending.options import format_send_at, send_at_of, send_options
from django_paubox.tracking import polling as receipts
from tests.mailers import new_connection

FROM = "Clinic <reminders@clinic.example>"
UTC = datetime.timezone.utc
MESSAGE = {
    "recipients": ["pat@example.com"],
    "headers": {"from": FROM, "subject": "Reminder"},
    "content": {"text/plain": "See you tomorrow."},
}
CHANGELIST = "admin:django_paubox_message_changelist"


def later(**delta: float) -> datetime.datetime:
    return (timezone.now() + datetime.timedelta(**delta)).replace(microsecond=0)


def scheduled_email(when: Any, to: str = "pat@example.com", **kw: Any) -> EmailMessage:
    email = EmailMessage("Reminder", "See you tomorrow.", FROM, [to])
    email.paubox_send_at = when  # type: ignore[attr-defined]
    for key, value in kw.items():
        setattr(email, key, value)
    return email


def posts(sandbox: Any, endpoint: str) -> int:
    return sum(1 for m, p in sandbox.requests if m == "POST" and p.endswith("/" + endpoint))


def wait_for(condition: Callable[[], Any], timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def api_client(paubox_sandbox: Any) -> Any:
    with PauboxClient(get_settings()) as api:
        yield api


def api(sandbox: Any, method: str, path: str, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Token token={sandbox.api_key}"}
    return requests.request(method, sandbox.base_url + path, headers=headers, timeout=5, **kw)


# --- Payloads ---------------------------------------------------------------------------------


def test_send_at_becomes_an_iso_utc_scheduled_at():
    paris = datetime.timezone(datetime.timedelta(hours=2))
    when = datetime.datetime(2099, 3, 4, 11, 30, 15, 999, tzinfo=paris)
    assert send_options(scheduled_email(when)) == {"send_at": "2099-03-04T09:30:15Z"}
    assert format_send_at(when) == "2099-03-04T09:30:15Z"
    assert send_options(EmailMessage("s", "b", FROM, ["a@example.com"])) == {}


@pytest.mark.parametrize(
    "value, message",
    [
        (datetime.datetime(2099, 1, 1), "naive datetime"),
        (datetime.date(2099, 1, 1), "not a date"),
        ("2099-01-01T00:00:00Z", "not a str"),
        (datetime.datetime(2001, 1, 1, tzinfo=UTC), "is in the past"),
    ],
)
def test_bad_send_times_are_refused(value, message):
    with pytest.raises(PauboxPayloadError, match=message):
        send_at_of(scheduled_email(value))


def test_now_counts_as_the_past_and_a_template_cannot_be_scheduled():
    now = timezone.now()
    with pytest.raises(PauboxPayloadError, match="in the past"):
        send_at_of(scheduled_email(now), now=now)
    email = scheduled_email(later(hours=1), body="")
    email.paubox_template_name = "reminder"  # type: ignore[attr-defined]
    with pytest.raises(PauboxPayloadError, match="cannot both use a dynamic template"):
        send_options(email)


# --- The client and the sandbox's /schedule endpoints -------------------------------------------


def test_schedule_get_reschedule_cancel(api_client, paubox_sandbox):
    when = later(hours=1)
    tracking_id = api_client.schedule_message(MESSAGE, when, override_open_tracking=True)
    (pending,) = paubox_sandbox.scheduled
    assert (pending.tracking_id, pending.status, pending.scheduled_at) == (
        tracking_id,
        "scheduled",
        when,
    )
    assert pending.options == {"override_open_tracking": True}
    assert paubox_sandbox.messages == []  # not sent before its time
    with pytest.raises(PauboxAPIError) as caught:
        api_client.get_receipt(tracking_id)
    assert caught.value.status == 404

    shown = api_client.get_scheduled(tracking_id)
    assert shown["sourceTrackingId"] == tracking_id
    assert shown["data"]["status"] == "scheduled"
    assert shown["data"]["scheduled_at"].startswith(format_send_at(when)[:-1])

    moved = later(hours=2)
    assert api_client.reschedule(tracking_id, moved)["data"]["status"] == "scheduled"
    assert paubox_sandbox.scheduled[0].scheduled_at == moved

    assert api_client.cancel_scheduled(tracking_id)["data"]["status"] == "cancelled"
    for again in (
        lambda: api_client.cancel_scheduled(tracking_id),
        lambda: api_client.reschedule(tracking_id, moved),
    ):
        with pytest.raises(PauboxAPIError) as caught:
            again()
        assert caught.value.status == 422 and "already cancelled" in str(caught.value)
    paubox_sandbox.send_scheduled_now()
    assert paubox_sandbox.messages == []  # a cancelled send is never sent


def test_unknown_scheduled_id_is_404_naming_it(api_client, paubox_sandbox):
    for call in (
        api_client.get_scheduled,
        api_client.cancel_scheduled,
        lambda i: api_client.reschedule(i, later(hours=1)),
    ):
        with pytest.raises(PauboxAPIError) as caught:
            call("no-such-id")
        assert caught.value.status == 404 and caught.value.tracking_id == "no-such-id"


@pytest.mark.parametrize(
    "data, detail",
    [
        ({"message": MESSAGE}, "data.scheduled_at is missing"),
        ({"message": MESSAGE, "scheduled_at": "2001-01-01T00:00:00Z"}, "must be in the future"),
        ({"message": MESSAGE, "scheduled_at": "2099-01-01T00:00:00"}, "with a time zone"),
        ({"message": MESSAGE, "scheduled_at": "tomorrow"}, "with a time zone"),
        ({"message": MESSAGE, "scheduled_at": 4102444800}, "with a time zone"),
        ({"scheduled_at": "2099-01-01T00:00:00Z"}, "data.message is missing"),
        (
            {"message": {**MESSAGE, "content": {}}, "scheduled_at": "2099-01-01T00:00:00Z"},
            "content",
        ),
    ],
)
def test_sandbox_refuses_bad_schedules_with_400(paubox_sandbox, data, detail):
    answer = api(paubox_sandbox, "POST", "/schedule", json={"data": data})
    assert answer.status_code == 400
    assert any(detail in e["details"] for e in answer.json()["errors"])
    assert paubox_sandbox.scheduled == []


def test_rfc2822_times_are_read_and_the_list_is_a_bare_array(paubox_sandbox):
    body = {"data": {"message": MESSAGE, "scheduled_at": "Fri, 01 Jan 2099 13:00:00 +0100"}}
    answer = api(paubox_sandbox, "POST", "/schedule", json=body)
    assert answer.status_code == 200
    assert answer.json()["scheduled_at"] == "2099-01-01T12:00:00.000Z"
    listed = api(paubox_sandbox, "GET", "/schedule").json()
    assert isinstance(listed, list) and listed[0]["data"]["status"] == "scheduled"


def test_client_refuses_a_naive_time_before_any_http(api_client, paubox_sandbox):
    with pytest.raises(ValueError, match="timezone-aware"):
        api_client.schedule_message(MESSAGE, datetime.datetime(2099, 1, 1))
    assert paubox_sandbox.requests == []


def test_the_sandbox_sends_at_the_time_and_deliveries_progress(api_client, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0.05
    when = datetime.datetime.now(UTC) + datetime.timedelta(seconds=0.6)
    tracking_id = api_client.schedule_message(MESSAGE, when.isoformat())
    assert paubox_sandbox.messages == []
    captured = wait_for(lambda: paubox_sandbox.get_message(tracking_id))
    assert captured.endpoint == "schedule" and captured.recipients == ["pat@example.com"]
    assert datetime.datetime.now(UTC) >= when
    assert api_client.get_scheduled(tracking_id)["data"]["status"] == "sent"
    receipt = wait_for(
        lambda: (
            (r := api_client.get_receipt(tracking_id))["data"]["message"]["message_deliveries"][0][
                "status"
            ]["deliveryStatus"]
            == "delivered"
            and r
        )
    )
    assert receipt["sourceTrackingId"] == tracking_id
    with pytest.raises(PauboxAPIError) as caught:
        api_client.cancel_scheduled(tracking_id)
    assert caught.value.status == 422 and "already sent" in str(caught.value)


def test_a_moved_or_reset_schedule_does_not_fire_at_the_old_time(api_client, paubox_sandbox):
    soon = (datetime.datetime.now(UTC) + datetime.timedelta(seconds=0.4)).isoformat()
    moved = api_client.schedule_message(MESSAGE, soon)
    api_client.reschedule(moved, later(hours=1))
    api_client.schedule_message(MESSAGE, soon)
    paubox_sandbox.state.reset()  # forget messages only...
    paubox_sandbox.schedule_store.reset()  # ...and the schedules, as reset() does
    time.sleep(0.8)
    assert paubox_sandbox.messages == []


# --- The backend ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_send_mail_with_send_at_schedules_and_records(paubox_sandbox):
    when = later(days=1)
    email = scheduled_email(when)
    assert email.send() == 1
    assert posts(paubox_sandbox, "schedule") == 1 and posts(paubox_sandbox, "messages") == 0
    (pending,) = paubox_sandbox.scheduled
    assert pending.scheduled_at == when
    row = Message.objects.get()
    assert email.paubox_tracking_id == pending.tracking_id == row.tracking_id  # type: ignore[attr-defined]
    assert (row.state, row.status) == ("sent", "queued")
    assert row.scheduled_at == row.sent_at == when
    assert row.next_receipt_check_at == when + datetime.timedelta(seconds=60)
    assert set(row.deliveries.values_list("status", flat=True)) == {"queued"}
    assert row.payload is None
    assert scheduled_sends.is_pending(row)
    # Not polled before its time; polled once it is due.
    assert row not in receipts.due_messages()
    assert row in receipts.due_messages(now=when + datetime.timedelta(minutes=2))


@pytest.mark.django_db
def test_scheduled_message_is_delivered_when_paubox_sends_it(paubox_sandbox):
    email = scheduled_email(later(hours=1), to="open@example.com")
    email.send()
    row = Message.objects.get()
    assert paubox_sandbox.send_scheduled_now() == [row.tracking_id]
    paubox_sandbox.finish_processing()
    summary = receipts.poll_receipts([row])
    assert summary.changed == 1
    row.refresh_from_db()
    delivery = row.deliveries.get()
    assert (row.status, delivery.status) == ("delivered", "delivered")
    assert delivery.opened_at is not None


@pytest.mark.django_db
def test_scheduled_messages_go_alone_beside_the_bulk(paubox_sandbox):
    emails = [scheduled_email(later(hours=h), to=f"s{h}@example.com") for h in (1, 2)]
    plain = [EmailMessage("Now", "Body", FROM, [f"n{i}@example.com"]) for i in range(2)]
    assert new_connection().send_messages([plain[0], emails[0], plain[1], emails[1]]) == 4
    assert posts(paubox_sandbox, "schedule") == 2 and posts(paubox_sandbox, "bulk_messages") == 1
    scheduled = Message.objects.filter(scheduled_at__isnull=False).order_by("scheduled_at")
    assert [m.scheduled_at for m in scheduled] == [e.paubox_send_at for e in emails]  # type: ignore[attr-defined]
    assert {m.status for m in scheduled} == {"queued"}
    others = Message.objects.filter(scheduled_at__isnull=True)
    assert set(others.values_list("status", flat=True)) == {"sent"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value, reason",
    [
        (datetime.datetime(2001, 1, 1, tzinfo=UTC), "is in the past"),
        (datetime.datetime(2099, 1, 1), "naive datetime"),
    ],
)
def test_a_bad_send_time_fails_the_row_before_any_http(paubox_sandbox, value, reason):
    email = scheduled_email(value)
    with pytest.raises(PauboxPayloadError, match=reason):
        email.send()
    row = Message.objects.get()
    assert (row.state, row.status, row.scheduled_at) == ("failed", "failed", None)
    assert reason in row.error
    assert set(row.deliveries.values_list("status", flat=True)) == {"failed"}
    assert paubox_sandbox.requests == []


@pytest.mark.django_db
def test_paubox_refusing_a_schedule_fails_the_row(paubox_sandbox):
    paubox_sandbox.fail_next(400, endpoint="schedule", body={"error": "Scheduling is not enabled"})
    with pytest.raises(PauboxAPIError):
        scheduled_email(later(hours=1)).send()
    row = Message.objects.get()
    assert (row.state, row.error_status) == ("failed", 400)
    assert "Scheduling is not enabled" in row.error


@pytest.mark.django_db
def test_scheduled_message_through_the_celery_outbox(paubox_sandbox, monkeypatch):
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **kw: None)
    when = later(hours=3)
    backend = new_connection("django_paubox.backends.PauboxCeleryEmailBackend")
    assert backend.send_messages([scheduled_email(when)]) == 1
    row = Message.objects.get()
    assert row.state == "queued" and row.payload["send_at"] == format_send_at(when)
    assert tasks.send_queued([row.pk])["sent"] == 1
    row.refresh_from_db()
    assert (row.state, row.scheduled_at) == ("sent", when)
    assert paubox_sandbox.scheduled[0].tracking_id == row.tracking_id


@pytest.mark.django_db
def test_a_send_time_that_passed_in_the_outbox_is_sent_at_once(paubox_sandbox, monkeypatch):
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **kw: None)
    backend = new_connection("django_paubox.backends.PauboxCeleryEmailBackend")
    backend.send_messages([scheduled_email(later(hours=1))])
    row = Message.objects.get()
    payload = dict(row.payload)
    payload["send_at"] = format_send_at(timezone.now() - datetime.timedelta(minutes=5))
    Message.objects.filter(pk=row.pk).update(payload=payload)  # the worker was down meanwhile
    assert tasks.send_queued([row.pk])["sent"] == 1
    assert posts(paubox_sandbox, "messages") == 1 and paubox_sandbox.scheduled == []
    row.refresh_from_db()
    assert (row.state, row.status, row.scheduled_at) == ("sent", "sent", None)


# --- Cancel and reschedule --------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_tells_paubox_then_records(paubox_sandbox):
    scheduled_email(later(hours=1)).send()
    row = Message.objects.get()
    scheduled_sends.cancel(row)
    assert paubox_sandbox.scheduled[0].status == "cancelled"
    row.refresh_from_db()
    assert (row.state, row.status, row.next_receipt_check_at) == ("cancelled", "failed", None)
    assert list(row.deliveries.values_list("status", "raw_status")) == [
        ("failed", "scheduled send cancelled")
    ]
    assert row not in receipts.due_messages(include_all=True)
    with pytest.raises(scheduled_sends.NotScheduled, match="already cancelled"):
        scheduled_sends.cancel(row)


@pytest.mark.django_db
def test_reschedule_tells_paubox_then_records(paubox_sandbox):
    scheduled_email(later(hours=1)).send()
    row = Message.objects.get()
    moved = later(hours=5)
    scheduled_sends.reschedule(row, moved)
    assert paubox_sandbox.scheduled[0].scheduled_at == moved
    row.refresh_from_db()
    assert row.scheduled_at == row.sent_at == moved
    assert row.next_receipt_check_at == moved + datetime.timedelta(seconds=60)
    with pytest.raises(scheduled_sends.NotScheduled, match="in the past"):
        scheduled_sends.reschedule(row, timezone.now() - datetime.timedelta(minutes=1))
    with pytest.raises(scheduled_sends.NotScheduled, match="time zone"):
        scheduled_sends.reschedule(row, datetime.datetime(2099, 1, 1))


@pytest.mark.django_db
def test_when_paubox_refuses_the_record_is_unchanged(paubox_sandbox):
    scheduled_email(later(hours=1)).send()
    row = Message.objects.get()
    paubox_sandbox.send_scheduled_now()  # Paubox sent it already; our record does not know yet
    with pytest.raises(PauboxAPIError) as caught:
        scheduled_sends.cancel(row)
    assert caught.value.status == 422
    row.refresh_from_db()
    assert row.state == "sent"


@pytest.mark.django_db
def test_only_pending_scheduled_sends_can_be_changed(paubox_sandbox):
    EmailMessage("Now", "Body", FROM, ["a@example.com"]).send()
    row = Message.objects.get()
    with pytest.raises(scheduled_sends.NotScheduled, match="not a scheduled send"):
        scheduled_sends.cancel(row)
    Message.objects.filter(pk=row.pk).update(scheduled_at=timezone.now())
    row.refresh_from_db()
    with pytest.raises(scheduled_sends.NotScheduled, match="was due"):
        scheduled_sends.reschedule(row, later(hours=1))


# --- The admin --------------------------------------------------------------------------------


@pytest.fixture
def three_kinds(paubox_sandbox) -> dict[str, Message]:
    """A pending scheduled send, a cancelled one and an ordinary one."""
    scheduled_email(later(hours=1), to="pending@example.com").send()
    scheduled_email(later(hours=2), to="cancelled@example.com").send()
    EmailMessage("Now", "Body", FROM, ["plain@example.com"]).send()
    rows = {m.deliveries.get().recipient.split("@")[0]: m for m in Message.objects.all()}
    scheduled_sends.cancel(rows["cancelled"])
    return rows


@pytest.mark.django_db
@pytest.mark.parametrize(
    "value, expected",
    [("pending", {"pending"}), ("cancelled", {"cancelled"}), ("no", {"plain"}), ("due", set())],
)
def test_scheduled_filter(admin_client: Client, three_kinds, value, expected):
    response = admin_client.get(reverse(CHANGELIST), {"scheduled": value})
    shown = {m.pk for m in response.context["cl"].result_list}
    assert shown == {three_kinds[name].pk for name in expected}


@pytest.mark.django_db
def test_changelist_marks_scheduled_and_cancelled(admin_client: Client, three_kinds):
    html = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert '<span class="paubox-scheduled paubox-more">(scheduled)</span>' in html
    assert re.search(r'paubox-badge--cancelled" title="[^"]+">Cancelled<', html)
    page = admin_client.get(
        reverse("admin:django_paubox_message_change", args=[three_kinds["pending"].pk])
    ).content.decode()
    assert "Scheduled at" in page


@pytest.mark.django_db
def test_cancel_action(admin_client: Client, three_kinds, paubox_sandbox):
    ids = [three_kinds[name].pk for name in ("pending", "plain")]
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "cancel_scheduled", "_selected_action": ids}, follow=True
    )
    text = response.content.decode()
    assert "Cancelled 1 scheduled send" in text
    assert "1 selected message is not a scheduled send still to come" in text
    assert Message.objects.get(pk=three_kinds["pending"].pk).state == "cancelled"
    assert Message.objects.get(pk=three_kinds["plain"].pk).state == "sent"
    assert {s.status for s in paubox_sandbox.scheduled} == {"cancelled"}


@pytest.mark.django_db
def test_reschedule_action_asks_for_a_time_then_moves(
    admin_client: Client, three_kinds, paubox_sandbox
):
    pending = three_kinds["pending"]
    url = reverse(CHANGELIST)
    form = admin_client.post(url, {"action": "reschedule", "_selected_action": [pending.pk]})
    assert form.status_code == 200 and 'type="datetime-local"' in form.content.decode()
    past = admin_client.post(
        url,
        {
            "action": "reschedule",
            "_selected_action": [pending.pk],
            "post": "yes",
            "scheduled_at": "2001-01-01T10:00",
        },
    )
    assert past.status_code == 200 and "Choose a time in the future" in past.content.decode()
    moved = later(days=2).replace(second=0)
    done = admin_client.post(
        url,
        {
            "action": "reschedule",
            "_selected_action": [pending.pk],
            "post": "yes",
            "scheduled_at": timezone.localtime(moved).strftime("%Y-%m-%dT%H:%M"),
        },
        follow=True,
    )
    assert "Rescheduled 1 message" in done.content.decode()
    pending.refresh_from_db()
    assert pending.scheduled_at == moved
    assert paubox_sandbox.get_message(pending.tracking_id) is None
    assert (
        next(
            s for s in paubox_sandbox.scheduled if s.tracking_id == pending.tracking_id
        ).scheduled_at
        == moved
    )


@pytest.mark.django_db
def test_schedule_actions_need_the_change_permission(client: Client, three_kinds):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(user)
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "cancel_scheduled" not in html and "reschedule" not in html
    user.user_permissions.add(Permission.objects.get(codename="change_message"))
    user = User.objects.get(pk=user.pk)
    client.force_login(user)
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert "cancel_scheduled" in html and 'value="reschedule"' in html


def test_control_api_lists_and_sends_scheduled(api_client, paubox_sandbox):
    from django_paubox.sandbox import SandboxControl

    control = SandboxControl(paubox_sandbox.url)
    tracking_id = api_client.schedule_message(MESSAGE, later(hours=1))
    (shown,) = control.scheduled
    assert shown["sourceTrackingId"] == tracking_id and shown["data"]["status"] == "scheduled"
    assert control.send_scheduled_now() == [tracking_id]
    assert control.send_scheduled_now() == []
    assert control.get_message(tracking_id).endpoint == "schedule"
