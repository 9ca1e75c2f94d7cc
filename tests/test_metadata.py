"""paubox_metadata and paubox_tags: sent as X- headers, stored on the row, echoed by webhooks
and used to link an event whose tracking id is unknown here (against the sandbox)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_paubox import signals
from django_paubox.exceptions import PauboxPayloadError
from django_paubox.models import Delivery, Message, WebhookEvent
from django_paubox.sending.metadata import REF_HEADER, read_ref, ref_value
from django_paubox.tracking.statuses import Status
from tests.factories import email
from tests.mailers import default_connection
from tests.sandbox_support import wait_for, wait_for_webhooks

SECRET = "metadata-webhook-secret-0123456789"


def tagged(**kwargs: Any) -> mail.EmailMessage:
    message = email(**kwargs)
    message.paubox_metadata = {"appointment_id": "A-17", "site": "north"}
    message.paubox_tags = ["reminder", "cardiology", "reminder"]
    return message


@pytest.mark.django_db
def test_metadata_and_tags_are_sent_as_headers_and_stored(paubox_sandbox):
    message = tagged()
    assert message.send() == 1

    headers = paubox_sandbox.last_message.headers
    assert headers["X-Paubox-Meta-appointment_id"] == "A-17"
    assert headers["X-Paubox-Meta-site"] == "north"
    assert headers["X-Paubox-Tags"] == "reminder,cardiology"
    row = Message.objects.get()
    assert read_ref({REF_HEADER: headers[REF_HEADER]}) == row.pk
    assert row.metadata == {"appointment_id": "A-17", "site": "north"}
    assert row.tags == ["reminder", "cardiology"]
    assert list(Message.objects.filter(metadata__appointment_id="A-17")) == [row]
    assert not Message.objects.filter(metadata__appointment_id="A-18").exists()


@pytest.mark.django_db
def test_a_message_without_metadata_stores_empty_values(paubox_sandbox):
    assert email().send() == 1
    row = Message.objects.get()
    assert (row.metadata, row.tags) == ({}, [])
    headers = paubox_sandbox.last_message.headers
    assert not [name for name in headers if name.startswith(("X-Paubox-Meta", "X-Paubox-Tags"))]
    assert REF_HEADER in headers  # every send can be linked back


@pytest.mark.django_db
def test_bulk_messages_keep_their_own_metadata(paubox_sandbox):
    messages = []
    for i in range(3):
        message = email(to=[f"p{i}@example.com"])
        message.paubox_metadata = {"appointment_id": f"A-{i}"}
        message.paubox_tags = [f"t{i}"]
        messages.append(message)
    with default_connection() as connection_:
        assert connection_.send_messages(messages) == 3
    assert [path for _, path in paubox_sandbox.requests if path.endswith("bulk_messages")]
    by_recipient = {m.recipients[0]: m.headers for m in paubox_sandbox.messages}
    for i in range(3):
        assert by_recipient[f"p{i}@example.com"]["X-Paubox-Meta-appointment_id"] == f"A-{i}"
        row = Message.objects.get(deliveries__recipient=f"p{i}@example.com")
        assert (row.metadata, row.tags) == ({"appointment_id": f"A-{i}"}, [f"t{i}"])
        assert by_recipient[f"p{i}@example.com"][REF_HEADER] == ref_value(row.pk)


@pytest.mark.parametrize(
    ("metadata", "tags", "says"),
    [
        ({1: "x"}, None, "keys must be str"),
        ({"k": 1}, None, "must be a str"),
        ({"k": {"nested": "x"}}, None, "must be a str"),
        ({"k": ["x"]}, None, "must be a str"),
        ({"has space": "x"}, None, "cannot be a header name"),
        ({"colon:": "x"}, None, "cannot be a header name"),
        ({"é": "x"}, None, "cannot be a header name"),
        ({"k" * 41: "x"}, None, "cannot be a header name"),
        ({"Key": "x", "key": "y"}, None, "only by case"),
        ({"k": "line\nbreak"}, None, "printable"),
        ({"k": "x" * 201}, None, "printable"),
        ({f"k{i}": "x" for i in range(11)}, None, "at most 10"),
        (["not", "a dict"], None, "dict of str to str"),
        (None, "reminder", "list of str"),
        (None, [1], "list of str"),
        (None, ["a,b"], "not allowed"),
        (None, ['quo"te'], "not allowed"),
        (None, ["x" * 65], "not allowed"),
        (None, [f"t{i}" for i in range(11)], "at most 10"),
    ],
)
@pytest.mark.django_db
def test_bad_metadata_or_tags_are_refused_before_any_http(paubox_sandbox, metadata, tags, says):
    message = email()
    if metadata is not None:
        message.paubox_metadata = metadata
    if tags is not None:
        message.paubox_tags = tags
    with pytest.raises(PauboxPayloadError, match=says) as raised:
        message.send()
    assert paubox_sandbox.requests == []
    assert "x" * 50 not in str(raised.value)  # a value is never echoed
    assert Message.objects.get().state == Message.State.FAILED


@pytest.mark.django_db
def test_metadata_values_are_never_logged(paubox_sandbox, caplog):
    caplog.set_level("DEBUG", logger="django_paubox")
    message = email()
    message.paubox_metadata = {"k": "x" * 300}
    with pytest.raises(PauboxPayloadError):
        message.send()
    message = tagged()
    message.paubox_metadata = {"appointment_id": "A-SECRET-17"}
    message.send()
    assert "A-SECRET-17" not in caplog.text
    assert "x" * 50 not in caplog.text


@pytest.mark.django_db
def test_post_send_carries_metadata_and_tags(paubox_sandbox):
    seen: list[dict[str, Any]] = []

    def receiver(sender, **kwargs):
        seen.append(kwargs)

    signals.post_send.connect(receiver, weak=False)
    try:
        tagged().send()
    finally:
        signals.post_send.disconnect(receiver)
    [kwargs] = seen
    assert kwargs["metadata"] == {"appointment_id": "A-17", "site": "north"}
    assert kwargs["tags"] == ["reminder", "cardiology"]
    assert kwargs["record"].metadata == kwargs["metadata"]


# --- Webhooks: the sandbox posts its events to this app's view on a live server ------------


@pytest.fixture
def hooked(paubox_sandbox, live_server, settings):
    """The sandbox fires webhooks at the webhook view of a live server."""
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    # Events fire only at finish_processing(): no webhook while the test itself uses the
    # database (see wait_for_webhooks).
    paubox_sandbox.processing_seconds = 3600
    paubox_sandbox.webhook_url = f"{live_server.url}/paubox/webhook/{SECRET}/"
    return paubox_sandbox


@pytest.fixture
def status_changes():
    seen: list[tuple[str, str, dict[str, str], int]] = []

    def receiver(sender, delivery, new_status, **kwargs):
        with CaptureQueriesContext(connection) as queries:
            metadata = dict(delivery.message.metadata)
        seen.append((delivery.recipient, new_status, metadata, len(queries)))

    signals.delivery_status_changed.connect(receiver, weak=False)
    yield seen
    signals.delivery_status_changed.disconnect(receiver)


@pytest.mark.django_db(transaction=True)
def test_webhook_events_echo_the_headers_and_receivers_read_metadata(hooked, status_changes):
    tagged(to=["open@example.com"]).send()
    row = Message.objects.get()
    hooked.finish_processing()
    wait_for_webhooks(hooked, 2)  # delivered, then opened
    assert {a["status"] for a in hooked.webhook_attempts} == {200}
    event = WebhookEvent.objects.get(event_name="api_mail_log_delivered")
    assert event.message_id == row.pk
    custom = event.payload["payload"]["custom_headers"]
    assert custom["X-Paubox-Meta-appointment_id"] == "A-17"
    assert custom["X-Paubox-Tags"] == "reminder,cardiology"
    wait_for(lambda: status_changes, timeout=10)
    assert status_changes[0][:3] == (
        "open@example.com",
        Status.DELIVERED,
        {"appointment_id": "A-17", "site": "north"},
    )
    assert status_changes[0][3] == 0  # delivery.message came with the event: no query


@pytest.mark.django_db(transaction=True)
def test_an_event_whose_tracking_id_is_unknown_is_linked_by_its_custom_header(hooked):
    tagged(to=["bounce@example.com"]).send()
    row = Message.objects.get()
    # The send's answer was lost (or the event beat the commit): no tracking id here.
    Message.objects.filter(pk=row.pk).update(tracking_id=None)
    hooked.finish_processing()
    wait_for_webhooks(hooked, 1)
    event = WebhookEvent.objects.get()
    assert event.message_id == row.pk  # linked by its X-Paubox-Ref header
    assert event.source_tracking_id  # kept as Paubox sent it
    assert Delivery.objects.get(message=row).status == Status.HARD_BOUNCED


@pytest.mark.django_db
def test_a_forged_or_foreign_ref_links_nothing(client, settings):
    from tests.factories import sent_message

    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    row = sent_message(tracking_id=None)
    forged = ref_value(row.pk)[:-2] + "xx"
    body = {
        "event_name": "api_mail_log_delivered",
        "payload": {
            "id": 1,
            "source_tracking_id": "unknown-here",
            "to": "patient@example.com",
            "custom_headers": {"x-paubox-ref": forged},
        },
    }
    response = client.post(f"/paubox/webhook/{SECRET}/", body, content_type="application/json")
    assert response.status_code == 200
    assert WebhookEvent.objects.get().message_id is None
    # Signed with another SECRET_KEY: another deployment sharing the Paubox account.
    own_key = settings.SECRET_KEY
    settings.SECRET_KEY = "another-deployment-sharing-the-paubox-account"
    foreign = ref_value(row.pk)
    settings.SECRET_KEY = own_key
    body["payload"]["id"] = 2
    body["payload"]["custom_headers"] = {"X-Paubox-Ref": foreign}
    client.post(f"/paubox/webhook/{SECRET}/", body, content_type="application/json")
    assert WebhookEvent.objects.filter(message__isnull=True).count() == 2
    # Header names ignore case: Paubox may echo them in another case.
    body["payload"]["id"] = 3
    body["payload"]["custom_headers"] = {"x-paubox-ref": ref_value(row.pk)}
    client.post(f"/paubox/webhook/{SECRET}/", body, content_type="application/json")
    assert WebhookEvent.objects.get(payload__payload__id=3).message_id == row.pk
