"""The webhook view and records.apply_webhook_event: fail closed, store once, forward only."""

from __future__ import annotations

import io
import json
import logging
import threading
from urllib.parse import quote

import pytest
from django.db import connection
from django.test import Client, RequestFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_paubox import records, signals
from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.tracking import webhook as views
from django_paubox.tracking.parsing import InvalidWebhookEvent
from django_paubox.tracking.statuses import Status
from tests.sandbox_support import wait_for_webhooks
from tests.test_receipts import delivery, entry, make_message, postgres_only, receipt

SECRET = "hook-s3cret-🔑"
URL = f"/paubox/webhook/{SECRET}/"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def paubox_settings(settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    return settings


def event(
    name: str = "api_mail_log_delivered",
    tracking_id: str | None = "track-1",
    to: str | None = "patient@example.com",
    time: str | None = "2022-04-18T20:27:25.379Z",
    event_id: object = 5555555555,
    **extra: object,
) -> dict:
    payload: dict = {
        "id": event_id,
        "subject": "Your results",
        "header_message_id": "<abc@example.org>",
        "source_tracking_id": tracking_id,
        "outbound_queue_id": "XXXyFY0y3Yz2XXX",
        "time": time,
        "from": "clinic@example.org",
        "to": to,
        "custom_headers": {"X-Custom-Header": "value"},
    }
    payload.update(extra)
    return {"event_name": name, "payload": {k: v for k, v in payload.items() if v is not None}}


def post(client: Client, body: object, url: str = URL, **extra):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **extra)


@pytest.fixture
def received():
    seen: list[tuple[int, bool]] = []

    def receiver(sender, event, created, **kwargs):
        assert sender is WebhookEvent
        seen.append((event.pk, created))

    signals.webhook_received.connect(receiver, weak=False)
    yield seen
    signals.webhook_received.disconnect(receiver)


@pytest.fixture
def changes():
    seen: list[tuple[str, str, str, str]] = []

    def receiver(sender, delivery, old_status, new_status, source, **kwargs):
        seen.append((delivery.recipient, old_status, new_status, source))

    signals.delivery_status_changed.connect(receiver, weak=False)
    yield seen
    signals.delivery_status_changed.disconnect(receiver)


# --- Accepted events ------------------------------------------------------------------------


def test_delivered_event(client, django_capture_on_commit_callbacks, received, changes):
    message = make_message()
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, event())
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    stored = WebhookEvent.objects.get()
    assert stored.message_id == message.pk
    assert stored.event_name == "api_mail_log_delivered"
    assert stored.source_tracking_id == "track-1"
    assert stored.recipient == "patient@example.com"
    assert stored.occurred_at.isoformat() == "2022-04-18T20:27:25.379000+00:00"
    assert stored.payload == event()
    d = delivery(message)
    assert d.status == Status.DELIVERED
    assert d.raw_status == "api_mail_log_delivered"
    assert d.delivered_at == stored.occurred_at
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert received == [(stored.pk, True)]
    assert changes == [("patient@example.com", "sent", "delivered", "webhook")]


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("api_mail_log_temporary_failure", Status.SOFT_BOUNCED),
        ("api_mail_log_permanent_failure", Status.HARD_BOUNCED),
    ],
)
def test_bounce_events(client, name, status):
    message = make_message()
    assert post(client, event(name)).status_code == 200
    assert delivery(message).status == status
    message.refresh_from_db()
    assert message.status == status


def test_opened_event_sets_opened_at_and_no_status(client, changes):
    message = make_message()
    assert post(client, event("api_mail_log_opened")).status_code == 200
    d = delivery(message)
    assert d.status == Status.SENT
    assert d.opened_at.isoformat() == "2022-04-18T20:27:25.379000+00:00"
    # A later open does not move the first open.
    post(client, event("api_mail_log_opened", time="2022-04-19T08:00:00Z"))
    assert delivery(message).opened_at.isoformat() == "2022-04-18T20:27:25.379000+00:00"
    assert WebhookEvent.objects.count() == 2
    assert changes == []


def test_out_of_order_events_never_move_back(client):
    message = make_message()
    post(client, event("api_mail_log_permanent_failure", event_id=1))
    post(client, event("api_mail_log_delivered", event_id=2))
    post(client, event("api_mail_log_temporary_failure", event_id=3))
    d = delivery(message)
    assert (d.status, d.raw_status) == (Status.HARD_BOUNCED, "api_mail_log_permanent_failure")
    assert d.delivered_at is None
    assert WebhookEvent.objects.count() == 3


def test_soft_bounce_then_delivered(client):
    message = make_message()
    post(client, event("api_mail_log_temporary_failure", event_id=1))
    post(client, event("api_mail_log_delivered", event_id=2))
    assert delivery(message).status == Status.DELIVERED


def test_webhook_and_receipt_agree(client):
    message = make_message()
    records.apply_receipt(message, receipt(entry("patient@example.com", "delivered")))
    post(client, event("api_mail_log_temporary_failure"))
    assert delivery(message).status == Status.DELIVERED


def test_duplicate_event_is_stored_once(
    client, django_capture_on_commit_callbacks, received, changes
):
    make_message()
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, event())
        again = post(client, event())
        # The same event with its keys in another order is the same event.
        body = event()
        reordered = {"payload": dict(reversed(list(body["payload"].items()))), **body}
        third = post(client, reordered)
    assert [r.status_code for r in (first, again, third)] == [200, 200, 200]
    assert again.json() == {"status": "ok"}
    assert WebhookEvent.objects.count() == 1
    pk = WebhookEvent.objects.get().pk
    assert received == [(pk, True), (pk, False), (pk, False)]
    assert len(changes) == 1


def test_without_insert_returning_the_orm_stores_once_and_applies(
    client, monkeypatch, django_capture_on_commit_callbacks, changes
):
    """Databases without ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` (SQLite before 3.35)."""
    from django_paubox.records import sql

    monkeypatch.setattr(sql, "can_insert_once", lambda: False)
    message = make_message()
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, event()).status_code == 200
        assert post(client, event()).status_code == 200
    assert WebhookEvent.objects.get().message_id == message.pk
    assert delivery(message).status == Status.DELIVERED
    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert changes == [("patient@example.com", "sent", "delivered", "webhook")]


def test_duplicate_without_id_is_recognised_by_content(client):
    body = event(event_id=None)
    post(client, body)
    post(client, {"payload": body["payload"], "event_name": body["event_name"]})
    assert WebhookEvent.objects.count() == 1
    post(client, event(event_id=None, time="2022-04-18T20:27:26Z"))
    assert WebhookEvent.objects.count() == 2


def test_same_id_for_different_events_is_not_a_duplicate(client):
    post(client, event("api_mail_log_delivered"))
    post(client, event("api_mail_log_opened"))
    assert WebhookEvent.objects.count() == 2


def test_unknown_event_name_is_stored_and_acknowledged(client, received):
    message = make_message()
    response = post(client, event("api_mail_log_clicked"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    stored = WebhookEvent.objects.get()
    assert (stored.event_name, stored.message_id) == ("api_mail_log_clicked", message.pk)
    d = delivery(message)
    assert (d.status, d.raw_status) == (Status.SENT, "")


def test_event_for_a_message_we_did_not_send_is_stored_unlinked(client):
    make_message()
    assert post(client, event(tracking_id="other-system-1")).status_code == 200
    assert post(client, event(tracking_id=None, event_id=2)).status_code == 200
    assert list(WebhookEvent.objects.values_list("message_id", flat=True)) == [None, None]
    assert Delivery.objects.get().status == Status.SENT


def test_event_for_an_unknown_recipient_changes_no_delivery(client):
    message = make_message(["a@example.com", "b@example.com"])
    post(client, event(to="c@example.com"))
    post(client, event(to=None, event_id=9))  # no recipient, several candidates: none chosen
    assert set(message.deliveries.values_list("status", flat=True)) == {Status.SENT}
    assert WebhookEvent.objects.filter(message=message).count() == 2


def test_recipient_with_display_name(client):
    message = make_message()
    post(client, event(to="Pat <PATIENT@example.com>"))
    assert delivery(message).status == Status.DELIVERED
    assert WebhookEvent.objects.get().recipient == "patient@example.com"


def test_event_without_recipient_fits_a_one_recipient_message(client):
    message = make_message()
    post(client, event(to=None))
    assert delivery(message).status == Status.DELIVERED


@pytest.mark.parametrize("time", ["yesterday", "", "2022-13-45T99:00:00Z", None])
def test_garbage_or_missing_time_is_tolerated(client, time):
    message = make_message()
    assert post(client, event(time=time)).status_code == 200
    stored = WebhookEvent.objects.get()
    assert stored.occurred_at is None
    assert delivery(message).delivered_at is not None  # when the event arrived


def test_subject_is_not_stored_when_store_subject_is_off(client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "STORE_SUBJECT": False}
    post(client, event())
    assert "subject" not in WebhookEvent.objects.get().payload["payload"]


def test_secret_rotation(client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": ["new-secret", SECRET]}
    assert post(client, event(event_id=1), url="/paubox/webhook/new-secret/").status_code == 200
    assert post(client, event(event_id=2)).status_code == 200
    assert WebhookEvent.objects.count() == 2


def test_a_failing_receiver_does_not_fail_the_webhook(client, django_capture_on_commit_callbacks):
    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    signals.webhook_received.connect(broken, weak=False)
    try:
        make_message()
        with django_capture_on_commit_callbacks(execute=True):
            response = post(client, event())
    finally:
        signals.webhook_received.disconnect(broken)
    assert response.status_code == 200
    assert WebhookEvent.objects.count() == 1


def test_csrf_is_not_required():
    client = Client(enforce_csrf_checks=True)
    assert post(client, event()).status_code == 200


# --- Refused: secret, address, method -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/paubox/webhook/wrong/",
        "/paubox/webhook/hook-s3cret/",
        f"/paubox/webhook/{SECRET}x/",
        f"/paubox/webhook/{SECRET.upper()}/",
        "/paubox/webhook//",
        "/paubox/webhook/",
    ],
)
def test_wrong_or_missing_secret_is_404_and_stores_nothing(client, url):
    make_message()
    response = post(client, event(), url=url)
    assert response.status_code == 404
    assert WebhookEvent.objects.count() == 0
    assert Delivery.objects.get().status == Status.SENT


def test_wrong_secret_with_get_is_404_too(client):
    assert client.get("/paubox/webhook/wrong/").status_code == 404


@pytest.mark.parametrize("configured", ["", None, [], ["", ""]])
def test_no_secret_configured_refuses_everything(client, settings, caplog, configured):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": configured}
    views._warned_no_secret = False
    with caplog.at_level(logging.WARNING, logger="django_paubox"):
        assert post(client, event()).status_code == 404
        assert post(client, event(), url="/paubox/webhook/None/").status_code == 404
        assert post(client, event(), url="/paubox/webhook/%20/").status_code == 404
    assert WebhookEvent.objects.count() == 0
    warnings = [r for r in caplog.records if "WEBHOOK_SECRET" in r.getMessage()]
    assert len(warnings) == 1  # once, not per request


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_only_post(client, method):
    response = getattr(client, method)(URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("allowed", "remote", "status"),
    [
        (["203.0.113.7"], "203.0.113.7", 200),
        (["203.0.113.0/24"], "203.0.113.99", 200),
        (["2001:db8::/32", "198.51.100.1"], "2001:db8::1", 200),
        (["203.0.113.0/24"], "::ffff:203.0.113.5", 200),
        (["203.0.113.0/24"], "203.0.114.1", 403),
        (["203.0.113.7"], "", 403),
        (["203.0.113.7"], "not-an-ip", 403),
        (["not-a-network"], "203.0.113.7", 403),
        (["not-a-network", "203.0.113.7"], "203.0.113.7", 200),
    ],
)
def test_ip_allowlist(client, settings, allowed, remote, status):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_ALLOWED_IPS": allowed}
    response = post(client, event(), REMOTE_ADDR=remote)
    assert response.status_code == status
    assert WebhookEvent.objects.count() == (1 if status == 200 else 0)


def test_allowlist_is_checked_after_the_secret(client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_ALLOWED_IPS": ["203.0.113.7"]}
    assert post(client, event(), url="/paubox/webhook/x/").status_code == 404


# --- Refused: bad bodies --------------------------------------------------------------------


def test_declared_body_too_large_is_413(client, settings):
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_MAX_BODY_BYTES": 1000}
    body = event(padding="x" * 2000)
    response = post(client, body)
    assert response.status_code == 413
    assert WebhookEvent.objects.count() == 0


def test_body_at_the_limit_is_accepted(client, settings):
    body = json.dumps(event())
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_MAX_BODY_BYTES": len(body.encode())}
    assert post(client, body).status_code == 200


def test_actual_body_too_large_without_content_length_is_413(settings):
    """A body without a declared length (chunked, ASGI) is measured while it is read."""
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_MAX_BODY_BYTES": 1000}
    body = json.dumps(event(padding="x" * 5000)).encode()
    request = RequestFactory().post(URL, data=body, content_type="application/json")
    del request.META["CONTENT_LENGTH"]
    request._stream = io.BytesIO(body)
    response = views.webhook(request, SECRET)
    assert response.status_code == 413
    assert WebhookEvent.objects.count() == 0


@pytest.mark.parametrize("length", ["abc", "1e3", "-"])
def test_invalid_content_length_is_400(length):
    request = RequestFactory().post(URL, data=b"{}", content_type="application/json")
    request.META["CONTENT_LENGTH"] = length
    assert views.webhook(request, SECRET).status_code == 400


BAD_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"{", id="truncated"),
    pytest.param(b"\x00\xff\xfe\x89PNG\r\n\x1a\n", id="binary"),
    pytest.param('{"event_name": "é"}'.encode("latin-1"), id="latin-1"),
    pytest.param(json.dumps(event()).encode("utf-16"), id="utf-16"),
    pytest.param(b'{"event_name": NaN}', id="nan"),
    pytest.param(b'{"event_name": "x", "payload": {"id": Infinity}}', id="infinity"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
    pytest.param(b'{"event_name":"x","payload":{"id":' + b"9" * 5000 + b"}}", id="huge-int"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"api_mail_log_delivered"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b"42", id="number"),
    pytest.param(b"{}", id="empty-object"),
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_bodies_are_400(client, body):
    make_message()
    response = post(client, body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)
    assert WebhookEvent.objects.count() == 0
    assert Delivery.objects.get().status == Status.SENT


def _without(key: str) -> dict:
    body = event()
    del body[key]
    return body


def _payload(**fields: object) -> dict:
    body = event()
    body["payload"].update(fields)
    return body


BAD_EVENTS = [
    pytest.param(_without("event_name"), id="no-event-name"),
    pytest.param(_without("payload"), id="no-payload"),
    pytest.param({**event(), "event_name": 5}, id="event-name-number"),
    pytest.param({**event(), "event_name": ""}, id="event-name-empty"),
    pytest.param({**event(), "event_name": "   "}, id="event-name-blank"),
    pytest.param({**event(), "event_name": None}, id="event-name-null"),
    pytest.param({**event(), "event_name": ["api_mail_log_delivered"]}, id="event-name-list"),
    pytest.param({**event(), "event_name": "x" * 101}, id="event-name-too-long"),
    pytest.param({**event(), "payload": "x"}, id="payload-string"),
    pytest.param({**event(), "payload": [event()["payload"]]}, id="payload-list"),
    pytest.param({**event(), "payload": None}, id="payload-null"),
    pytest.param(_payload(id=True), id="id-bool"),
    pytest.param(_payload(id=1.5), id="id-float"),
    pytest.param(_payload(id={"x": 1}), id="id-object"),
    pytest.param(_payload(id="x" * 256), id="id-too-long"),
    pytest.param(_payload(id=2**70), id="id-too-big"),
    pytest.param(_payload(source_tracking_id=123), id="tracking-id-number"),
    pytest.param(_payload(source_tracking_id="x" * 256), id="tracking-id-too-long"),
    pytest.param(_payload(to=["patient@example.com"]), id="to-list"),
    pytest.param(_payload(to="a" * 400 + "@example.com"), id="to-too-long"),
    pytest.param(_payload(time=1650313645), id="time-number"),
    pytest.param(_payload(subject={"x": 1}), id="subject-object"),
    pytest.param(_payload(custom_headers=["X-A: 1"]), id="custom-headers-list"),
    pytest.param(_payload(source_tracking_id="track\x00-1"), id="nul"),
    pytest.param(_payload(note="\ud800"), id="lone-surrogate"),
    pytest.param(_payload(**{"\udfff": 1}), id="lone-surrogate-key"),
    pytest.param(_payload(deep=json.loads("[" * 40 + "]" * 40)), id="too-deep"),
]


@pytest.mark.parametrize("body", BAD_EVENTS)
def test_wrong_types_and_missing_fields_are_400(client, body):
    make_message()
    text = json.dumps(body)  # ASCII escapes, as a client would send a lone surrogate
    response = post(client, text)
    assert response.status_code == 400
    assert WebhookEvent.objects.count() == 0
    assert Delivery.objects.get().status == Status.SENT


@pytest.mark.parametrize("body", BAD_EVENTS)
def test_apply_webhook_event_raises_a_value_error(body):
    with pytest.raises(InvalidWebhookEvent) as info:
        records.apply_webhook_event(body)
    assert isinstance(info.value, ValueError)
    assert WebhookEvent.objects.count() == 0


def test_minimal_event_is_accepted(client):
    assert post(client, {"event_name": "api_mail_log_delivered", "payload": {}}).status_code == 200


def test_error_does_not_echo_the_body(client):
    response = post(client, _payload(subject={"secret": "PHI-HERE"}))
    assert response.status_code == 400
    assert b"PHI-HERE" not in response.content


# --- Property-based: nothing a client sends makes a 500 or stores a 4xx ---------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
_nasty = st.sampled_from(["\x00", "a\ud800b", "\udfff", "x" * 400])


def _json_of(leaves, keys):
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=20,
    )


#: Any JSON, with what databases choke on (NUL, lone surrogates) now and then.
_json = _json_of(_scalars | _nasty, st.text(max_size=8) | _nasty)
_clean_json = _json_of(_scalars, st.text(max_size=8))
#: Values that are often right for Paubox's payload fields, and sometimes anything at all.
_field = (
    st.text()
    | st.sampled_from(["patient@example.com", "Pat <patient@example.com>", "track-1"])
    | st.sampled_from(["2022-04-18T20:27:25.379Z", "Mon, 23 Apr 2018 13:27:34 -0700"])
    | st.integers(min_value=0, max_value=2**40)
    | _clean_json
)
_events = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(
            ["api_mail_log_delivered", "api_mail_log_opened", "api_mail_log_permanent_failure"]
        )
        | st.text(max_size=120)
        | _clean_json,
        "payload": st.fixed_dictionaries(
            {},
            optional={
                k: _field
                for k in ("id", "source_tracking_id", "to", "time", "subject", "custom_headers")
            },
        )
        | _clean_json,
    },
    optional={"extra": _clean_json},
)

_property = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_answer(response, before: int) -> None:
    assert response.status_code in (200, 400, 413), response.content
    after = WebhookEvent.objects.count()
    if response.status_code == 200:
        assert response.json() == {"status": "ok"}
        assert before <= after <= before + 1
    else:
        assert after == before


@_property
@given(body=_json)
def test_any_json_gets_2xx_or_4xx_never_500(body):
    client = Client(raise_request_exception=False)
    before = WebhookEvent.objects.count()
    response = post(client, json.dumps(body))
    _check_answer(response, before)


@_property
@given(body=_events)
def test_any_event_shaped_json_gets_2xx_or_4xx_never_500(body):
    client = Client(raise_request_exception=False)
    before = WebhookEvent.objects.count()
    response = post(client, json.dumps(body))
    _check_answer(response, before)


@_property
@given(body=st.binary(max_size=512))
def test_any_bytes_get_2xx_or_4xx_never_500(body):
    client = Client(raise_request_exception=False)
    before = WebhookEvent.objects.count()
    response = client.post(URL, data=body, content_type="application/octet-stream")
    _check_answer(response, before)


# --- Concurrency (PostgreSQL) ---------------------------------------------------------------


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("linked", [True, False], ids=["linked", "unlinked"])
def test_the_same_event_posted_at_once_is_stored_once(linked, received, changes):
    message = make_message()
    body = event(tracking_id="track-1" if linked else "other-system")
    barrier = threading.Barrier(8)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            client = Client()
            barrier.wait(5)
            status = post(client, body).status_code
            with lock:
                statuses.append(status)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200] * 8
    assert WebhookEvent.objects.count() == 1
    assert sorted(created for _, created in received) == [False] * 7 + [True]
    if linked:
        assert delivery(message).status == Status.DELIVERED
        assert changes == [("patient@example.com", "sent", "delivered", "webhook")]
    else:
        assert changes == []
        assert Message.objects.get().status == Status.SENT


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_event_whose_message_is_purged_before_it_commits_is_kept_unlinked(monkeypatch, received):
    """The purge deletes the message after the event's insert linked to it and before its
    commit (which checks the link): the event is stored unlinked, not lost with a 500.

    An event name we do not know, so that nothing locks the message (an event that moves a
    delivery locks it in its insert: the next test)."""
    from django_paubox.records import events

    message = make_message()
    store = events._store_event
    purged: list[int] = []

    def purge_meanwhile() -> None:
        try:
            purged.append(Message.objects.filter(pk=message.pk).delete()[0])
        finally:
            connection.close()

    def store_then_purge(*args, **kwargs):
        stored = store(*args, **kwargs)
        if not purged:  # another connection, committed before this transaction ends
            thread = threading.Thread(target=purge_meanwhile)
            thread.start()
            thread.join(10)
        return stored

    monkeypatch.setattr(events, "_store_event", store_then_purge)
    response = post(Client(), event("api_mail_log_new_kind", tracking_id="track-1"))
    assert response.status_code == 200
    assert purged and purged[0] >= 2  # the message and its delivery
    stored = WebhookEvent.objects.get()
    assert stored.message_id is None and stored.source_tracking_id == "track-1"
    assert not Message.objects.exists()
    assert [created for _, created in received] == [True]


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_purge_waits_for_an_event_that_locked_its_message_then_deletes_both(monkeypatch, caplog):
    """The event's insert locks its message and deliveries; a purge of that message waits for
    the event's commit, then deletes the message with its deliveries and the new event.
    Neither side fails, and no event is left pointing at a deleted message."""
    import datetime

    from django_paubox.records import events
    from django_paubox.tracking.retention import purge

    message = make_message()
    locked, go = threading.Event(), threading.Event()
    apply = events._apply_event_to_message

    def apply_when_told(*args, **kwargs):
        locked.set()  # the insert has locked the message
        assert go.wait(20)
        return apply(*args, **kwargs)

    monkeypatch.setattr(events, "_apply_event_to_message", apply_when_told)
    outcomes: dict[str, object] = {}

    def run(name, work) -> None:
        try:
            outcomes[name] = work()
        except BaseException as exc:  # reported below
            outcomes[name] = exc
        finally:
            connection.close()

    sender = threading.Thread(
        target=run, args=("event", lambda: records.apply_webhook_event(event()))
    )
    sender.start()
    assert locked.wait(20)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    purger = threading.Thread(
        target=run, args=("purge", lambda: purge(datetime.timedelta(hours=1), now=later))
    )
    purger.start()
    with connection.cursor() as cursor:  # the purge is waiting for the event's locks
        for _ in range(200):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the purge never waited for the event's locks")
    go.set()
    sender.join(30)
    purger.join(30)
    stored, created = outcomes["event"]
    assert created and stored.message_id == message.pk
    summary = outcomes["purge"]
    assert not isinstance(summary, BaseException), summary
    assert (summary.messages, summary.deliveries, summary.webhook_events) == (1, 1, 1)
    assert not Message.objects.exists() and not WebhookEvent.objects.exists()


@pytest.mark.postgres
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_events_for_the_recipients_of_one_message_keep_its_status_exact():
    """Events for different recipients of one message, and receipts, at once.

    Each event locks the message before its deliveries, in the statement that reads them, so
    the message's status, derived from all its deliveries, ends exact; a lock taken in
    another order would deadlock (an error here) with the receipts.
    """
    recipients = [f"r{i}@example.com" for i in range(4)]
    messages = [make_message(recipients, f"multi-{i}") for i in range(6)]
    barrier = threading.Barrier(len(recipients) + 1)
    errors: list[BaseException] = []

    def events(recipient: str) -> None:
        try:
            barrier.wait(5)
            for m in messages:
                records.apply_webhook_event(event(tracking_id=m.tracking_id, to=recipient))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    def receipts() -> None:
        try:
            barrier.wait(5)
            for m in messages:
                records.apply_receipt(
                    m,
                    receipt(
                        *(entry(r, "processing") for r in recipients), tracking_id=m.tracking_id
                    ),
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=events, args=(r,)) for r in recipients]
    threads.append(threading.Thread(target=receipts))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert set(Delivery.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert set(Message.objects.values_list("status", flat=True)) == {Status.DELIVERED}
    assert WebhookEvent.objects.filter(message__isnull=False).count() == 6 * len(recipients)


# --- End to end: the sandbox sends, fires webhooks at a live server, serves receipts --------


@pytest.mark.django_db(transaction=True)
def test_end_to_end_with_the_sandbox(paubox_sandbox, live_server):
    from django.core.mail import send_mail

    from django_paubox.client import PauboxClient

    paubox_sandbox.processing_seconds = 3600  # events fire at finish_processing(), below
    paubox_sandbox.webhook_url = live_server.url + quote(URL)  # as registered with Paubox
    send_mail("Results", "Log in to see them.", "clinic@example.org", ["open@example.com"])
    send_mail(
        "Results",
        "Log in to see them.",
        "clinic@example.org",
        ["bounce@example.com", "Pat <notls@example.com>"],
    )
    opened, message = Message.objects.order_by("pk")
    assert opened.tracking_id and message.tracking_id
    paubox_sandbox.finish_processing()
    # open@: delivered, then opened (opens are tracked for single recipients only);
    # bounce@: permanent failure; notls@: delivered (via the portal, which events do not say).
    wait_for_webhooks(paubox_sandbox, 4)  # not polling the database meanwhile: see there
    assert WebhookEvent.objects.count() == 4
    assert WebhookEvent.objects.filter(message=opened).count() == 2
    assert WebhookEvent.objects.filter(message=message).count() == 2
    d = Delivery.objects.get(message=opened)
    assert d.status == Status.DELIVERED
    assert d.opened_at is not None
    by_recipient = {d.recipient: d for d in message.deliveries.all()}
    assert by_recipient["bounce@example.com"].status == Status.HARD_BOUNCED
    assert by_recipient["notls@example.com"].status == Status.DELIVERED
    assert not by_recipient["notls@example.com"].via_secure_portal
    message.refresh_from_db()
    assert message.status == Status.HARD_BOUNCED

    # Receipt polling agrees, and adds what only receipts say (the secure-portal flag).
    with PauboxClient.from_settings() as client:
        records.apply_receipts([(m, client.get_receipt(m.tracking_id)) for m in (opened, message)])
    d = Delivery.objects.get(message=opened)
    assert (d.status, d.total_opens, d.distinct_opens) == (Status.DELIVERED, 1, 1)
    assert d.opened_at is not None
    portal = Delivery.objects.get(message=message, recipient="notls@example.com")
    assert (portal.status, portal.via_secure_portal) == (Status.DELIVERED, True)
    assert portal.raw_status == "delivered via secure portal"
    assert Delivery.objects.get(recipient="bounce@example.com").status == Status.HARD_BOUNCED
    # Replaying every event changes nothing and stores nothing new.
    client = Client()
    for stored in WebhookEvent.objects.all():
        assert post(client, stored.payload).status_code == 200
    assert WebhookEvent.objects.count() == 4


def test_the_secret_never_reaches_the_request_log(client, settings, caplog):
    """A 4xx on the real URL would make django.request log the path, and so the secret."""
    secret = "log-me-not-" + "s" * 24
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": secret}
    caplog.set_level(logging.DEBUG)
    url = f"/paubox/webhook/{secret}/"
    assert client.get(url).status_code == 405
    assert client.post(url, data=b"{not json", content_type="application/json").status_code == 400
    wrong = client.post("/paubox/webhook/wrong-guess/", data=b"{}", content_type="application/json")
    assert wrong.status_code == 404
    assert "answered 400" in caplog.text
    assert secret not in caplog.text
