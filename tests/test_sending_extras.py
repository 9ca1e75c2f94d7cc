"""Beyond the basic send: several sending domains, pre/post-send signals, tracking options,
and the test kit for users' own suites."""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.test import TestCase, override_settings

from django_paubox import signals, tasks
from django_paubox.checks import check_paubox_settings
from django_paubox.conf import get_settings
from django_paubox.exceptions import PauboxAPIError, PauboxConfigError, PauboxPayloadError
from django_paubox.models import Message
from django_paubox.sandbox import SandboxServer
from django_paubox.sandbox.pytest_plugin import SANDBOX_API_KEY
from django_paubox.testing import PauboxSandboxMixin
from tests.mailers import new_connection

pytestmark = pytest.mark.django_db


def message(sender: str, to: str) -> EmailMessage:
    return EmailMessage("Reminder", "See you Monday.", sender, [to])


@pytest.fixture
def second_sandbox():
    with SandboxServer(api_key="key-b", api_username="user-b", processing_seconds=0.2) as server:
        yield server


@pytest.fixture
def two_domains(paubox_sandbox, second_sandbox, settings):
    """a.example's key works on the fixture's sandbox, b.example's on a second one: a message
    routed with the wrong key would meet a real 401."""
    settings.PAUBOX = {
        **settings.PAUBOX,
        "API_KEY": "",
        "DOMAINS": {
            "A.example": {"API_KEY": SANDBOX_API_KEY},
            "b.example": {
                "API_KEY": "key-b",
                "API_USERNAME": "user-b",
                "API_URL": second_sandbox.url,
            },
        },
    }
    return paubox_sandbox, second_sandbox


def test_messages_are_routed_by_from_domain_and_batches_split(two_domains):
    a, b = two_domains
    messages = [
        message("Clinic A <desk@a.example>", "p1@example.com"),
        message("desk@b.example", "p2@example.com"),
        message("desk@A.EXAMPLE", "p3@example.com"),
        message("desk@b.example", "p4@example.com"),
    ]
    assert new_connection().send_messages(messages) == 4
    assert [m.recipients for m in a.messages] == [["p1@example.com"], ["p3@example.com"]]
    assert [m.recipients for m in b.messages] == [["p2@example.com"], ["p4@example.com"]]
    assert {m.endpoint for m in a.messages + b.messages} == {"bulk_messages"}
    assert all(m.paubox_tracking_id for m in messages)


def test_from_on_no_configured_domain_fails_before_http(two_domains):
    a, b = two_domains
    bad = message("desk@elsewhere.example", "p@example.com")
    with pytest.raises(PauboxPayloadError) as info:
        new_connection().send_messages([bad])
    assert '"elsewhere.example"' in str(info.value)
    assert a.requests == [] and b.requests == []
    row = Message.objects.get()
    assert row.state == "failed" and "elsewhere.example" in row.error


def test_outbox_routes_by_domain_too(two_domains, monkeypatch):
    a, b = two_domains
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *args, **kw: None)
    connection = new_connection("django_paubox.backends.PauboxCeleryEmailBackend")
    connection.send_messages(
        [message("desk@a.example", "p1@example.com"), message("desk@b.example", "p2@example.com")]
    )
    ids = sorted(Message.objects.values_list("pk", flat=True))
    assert tasks.send_queued(ids)["sent"] == 2
    assert len(a.messages) == 1 and len(b.messages) == 1


def test_connection_credentials_override_domain_routing(two_domains):
    a, _ = two_domains
    connection = new_connection(api_key=SANDBOX_API_KEY)
    assert connection.send_messages([message("desk@elsewhere.example", "p@example.com")]) == 1
    assert len(a.messages) == 1


def test_domains_are_validated_and_listed_without_keys():
    with override_settings(PAUBOX={"DOMAINS": {"a.example": {"API_USERNAME": "u"}}}):
        with pytest.raises(PauboxConfigError, match=r'"a\.example"'):
            get_settings()
    with override_settings(PAUBOX={"DOMAINS": {"a.example": {"API_KEY": "k", "APIKEY": "x"}}}):
        with pytest.raises(PauboxConfigError, match="APIKEY"):
            get_settings()
    paubox = {
        "API_USERNAME": "org",
        "DOMAINS": {
            "a.example": {"API_KEY": "secret-key-a"},
            "b.example": {"API_KEY": "secret-key-b"},
        },
    }
    with override_settings(PAUBOX=paubox):
        conf = get_settings()
        conf.require_credentials()  # no top-level key needed with DOMAINS
        assert conf.for_domain("b.example").base_url.endswith("/org")
        listed = [m for m in check_paubox_settings() if m.id == "django_paubox.I002"]
        assert "a.example, b.example" in listed[0].msg
        assert "secret-key" not in listed[0].msg + repr(conf)


def test_pre_send_may_change_or_cancel_a_message(paubox_sandbox):
    def receiver(sender, message, backend, **kwargs):
        if "cancel" in message.to[0]:
            raise signals.CancelSend
        message.extra_headers["X-Campaign"] = "reminders"

    signals.pre_send.connect(receiver)
    try:
        messages = [
            message("d@clinic.example", "cancel@example.com"),
            message("d@clinic.example", "keep@example.com"),
        ]
        assert new_connection().send_messages(messages) == 1
    finally:
        signals.pre_send.disconnect(receiver)
    assert [m.recipients for m in paubox_sandbox.messages] == [["keep@example.com"]]
    assert paubox_sandbox.last_message.headers["X-Campaign"] == "reminders"
    assert Message.objects.count() == 1  # the cancelled message left no record


def test_post_send_reports_per_recipient_outcomes_and_a_failing_receiver_is_harmless(
    paubox_sandbox, caplog
):
    seen = []

    def record(sender, message, record, tracking_id, error, outcomes, **kwargs):
        seen.append((message.to[0] if message else None, record.state, tracking_id, outcomes))

    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    signals.post_send.connect(record)
    signals.post_send.connect(broken)
    try:
        paubox_sandbox.fail_next(422, count=1, endpoint="messages")
        ok = EmailMessage("s", "b", "d@clinic.example", ["ok@example.com"], cc=["cc@example.com"])
        bad = message("d@clinic.example", "bad@example.com")
        assert new_connection(fail_silently=True).send_messages([bad]) == 0
        assert new_connection().send_messages([ok]) == 1
    finally:
        signals.post_send.disconnect(record)
        signals.post_send.disconnect(broken)
    assert seen[0][:3] == ("bad@example.com", "failed", None)
    assert seen[0][3] == {"bad@example.com": "failed"}
    assert seen[1][2] == ok.paubox_tracking_id
    assert seen[1][3] == {"ok@example.com": "sent", "cc@example.com": "sent"}
    assert Message.objects.filter(state="sent").count() == 1  # the record survived
    assert "RuntimeError" in caplog.text


def test_tracking_options_reach_paubox(paubox_sandbox):
    m = message("d@clinic.example", "p@example.com")
    m.paubox_override_open_tracking = True
    m.paubox_override_link_tracking = False
    m.paubox_unsubscribe_url = "https://clinic.example/unsubscribe"
    m.send()
    assert paubox_sandbox.last_message.options == {
        "override_open_tracking": True,
        "override_link_tracking": False,
        "unsubscribe_url": "https://clinic.example/unsubscribe",
    }


class TestCaseMixinTests(PauboxSandboxMixin, TestCase):
    """The test kit as a user's ``manage.py test`` suite would use it."""

    def test_send_and_inspect(self):
        self.paubox_sandbox.set_outcome("pat@example.com", "hard_bounced")
        mail.send_mail("Reminder", "Monday", "d@clinic.example", ["pat@example.com"])
        self.assertEqual(self.paubox_sandbox.last_message.recipients, ["pat@example.com"])
        self.paubox_sandbox.finish_processing()
        receipt = self.paubox_sandbox.receipt(self.paubox_sandbox.last_message.tracking_id)
        status = receipt["data"]["message"]["message_deliveries"][0]["status"]
        self.assertEqual(status["deliveryStatus"], "hard bounced")

    def test_fail_next_and_reset_between_tests(self):
        self.assertEqual(self.paubox_sandbox.messages, [])
        self.paubox_sandbox.fail_next(503)
        with self.assertRaises(PauboxAPIError):
            mail.send_mail("Reminder", "Monday", "d@clinic.example", ["pat@example.com"])
        self.assertEqual(Message.objects.get().state, "failed")


def test_post_send_reports_a_scheduled_send_as_scheduled(paubox_sandbox):
    from django.utils import timezone

    outcomes = []

    def record(outcomes_=None, **kwargs):
        outcomes.append(kwargs["outcomes"])

    signals.post_send.connect(record)
    try:
        m = message("d@clinic.example", "later@example.com")
        m.paubox_send_at = timezone.now() + timezone.timedelta(hours=2)
        assert m.send() == 1
    finally:
        signals.post_send.disconnect(record)
    assert outcomes == [{"later@example.com": "scheduled"}]
    assert Message.objects.get().scheduled_at is not None
