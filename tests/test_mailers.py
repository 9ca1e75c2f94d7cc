"""Credentials follow the message (issue #12): two Paubox accounts, each a sandbox of its own
that demands its own key and username, so a request made with the other account's credentials
meets a real 401. Django 6.1: two ``MAILERS``; any version: ``get_connection(label=...)`` with
``PAUBOX["CONNECTIONS"]``, and ``get_connection(api_key=...)``. Every later call about a message
(outbox send, receipts, cancel) goes to the account that sent it, and credentials removed from
the settings fail with a reason that names them, never with another key."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone

from django_paubox import outbox, tasks
from django_paubox.checks import check_paubox_settings
from django_paubox.credentials import settings_for
from django_paubox.exceptions import CredentialsNotFound, PauboxConfigError
from django_paubox.models import DynamicTemplate, Message
from django_paubox.sandbox import SandboxServer
from django_paubox.sending import scheduled as scheduled_sends
from django_paubox.tracking.polling import poll_receipts
from django_paubox.tracking.schedule import due_messages
from tests.mailers import CELERY, DJANGO_61, PLAIN, new_connection, use_backend

pytestmark = pytest.mark.django_db

BILLING_KEY = "billing-test-key"
BILLING_USER = "billing-user"
FROM = "billing@clinic.example"
SECRET = "w" * 32
#: What the default email backend records: its MAILERS alias on 6.1, the PAUBOX settings before.
DEFAULT = "mailer:default" if DJANGO_61 else "default"
needs_61 = pytest.mark.skipif(not DJANGO_61, reason="MAILERS is Django 6.1's")


@pytest.fixture(scope="module")
def billing_server() -> Iterator[SandboxServer]:
    server = SandboxServer(
        api_key=BILLING_KEY, api_username=BILLING_USER, processing_seconds=0.2
    ).start()
    yield server
    server.stop()


@pytest.fixture
def billing(billing_server: SandboxServer) -> Iterator[SandboxServer]:
    """The second Paubox account (the first is ``paubox_sandbox``)."""
    billing_server.reset()
    yield billing_server
    billing_server.reset()


def options(sandbox: SandboxServer) -> dict[str, str]:
    return {
        "api_key": sandbox.api_key or "",
        "api_username": sandbox.username,
        "api_url": sandbox.url,
    }


def two_mailers(settings: Any, first: SandboxServer, second: SandboxServer, backend: str = PLAIN):
    """The issue's settings: credentials in MAILERS only, none in PAUBOX."""
    settings.PAUBOX = {"WEBHOOK_SECRET": SECRET}
    use_backend(
        settings,
        PLAIN,
        options(first),
        billing={"BACKEND": backend, "OPTIONS": options(second)},
    )


def receipt_paths(sandbox: SandboxServer) -> list[str]:
    return [path for method, path in sandbox.requests if "message_receipt" in path]


def later(hours: float = 1) -> datetime.datetime:
    return (timezone.now() + datetime.timedelta(hours=hours)).replace(microsecond=0)


def scheduled_email(when: datetime.datetime) -> mail.EmailMessage:
    email = mail.EmailMessage("Your statement", "Balance due.", FROM, ["pat@example.com"])
    email.paubox_send_at = when  # type: ignore[attr-defined]
    return email


def assert_polled_by_own_account(first: SandboxServer, second: SandboxServer) -> None:
    """Each message's receipt was asked of the account that sent it, with its credentials."""
    for sandbox in (first, second):
        sent = {m.tracking_id for m in sandbox.messages}
        scheduled = {s.tracking_id for s in sandbox.scheduled}
        paths = receipt_paths(sandbox)
        assert paths and all(f"/v1/{sandbox.username}/" in path for path in paths)
        assert sent <= {path.rsplit("=", 1)[1] for path in paths} <= sent | scheduled


# --- Django 6.1: MAILERS ---------------------------------------------------------------------


@needs_61
def test_each_mailer_sends_polls_and_cancels_with_its_own_credentials(
    paubox_sandbox, billing, settings
):
    two_mailers(settings, paubox_sandbox, billing)
    assert mail.send_mail("Hello", "body", "front@clinic.example", ["a@example.com"]) == 1
    assert mail.send_mail("Your statement", "body", FROM, ["b@example.com"], using="billing") == 1
    email = mail.EmailMessage("Statement 2", "body", FROM, ["c@example.com"])
    assert mail.mailers["billing"].send_messages([email]) == 1
    assert scheduled_email(later()).send(using="billing") == 1

    rows = Message.objects.order_by("pk")
    assert [r.mailer for r in rows] == ["mailer:default"] + ["mailer:billing"] * 3
    assert len(paubox_sandbox.messages) == 1 and len(billing.messages) == 2
    assert len(billing.scheduled) == 1 and paubox_sandbox.scheduled == []

    # The command needs no PAUBOX["API_KEY"] any more: each message is polled with its own.
    call_command("paubox_refresh_receipts", "--all")
    assert_polled_by_own_account(paubox_sandbox, billing)

    pending = Message.objects.get(scheduled_at__isnull=False)
    scheduled_sends.cancel(pending)
    assert billing.scheduled[0].status == "cancelled"
    assert Message.objects.get(pk=pending.pk).state == "cancelled"


@needs_61
def test_outbox_mailer_is_sent_with_its_own_credentials(
    paubox_sandbox, billing, settings, monkeypatch, django_capture_on_commit_callbacks
):
    two_mailers(settings, paubox_sandbox, billing, backend=CELERY)
    handed: list[list[int]] = []
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda a, **kw: handed.append(a[0]))
    with django_capture_on_commit_callbacks(execute=True):
        mail.send_mail("Your statement", "body", FROM, ["b@example.com"], using="billing")
    row = Message.objects.get()
    assert (row.state, row.mailer) == ("queued", "mailer:billing")
    assert tasks.send_queued(handed[0])["sent"] == 1
    row.refresh_from_db()
    assert row.state == "sent" and billing.get_message(row.tracking_id) is not None
    assert paubox_sandbox.requests == []

    tasks.refresh_receipts.run(limit=None)  # the beat task; nothing due yet, then by hand
    assert poll_receipts(due_messages(include_all=True)).errors == 0
    assert_polled_by_own_account(billing, billing)


@needs_61
def test_queue_messages_through_a_mailer(paubox_sandbox, billing, settings, monkeypatch):
    two_mailers(settings, paubox_sandbox, billing, backend=CELERY)
    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda a, **kw: None)
    emails = (mail.EmailMessage("S", "b", FROM, [f"p{i}@example.com"]) for i in range(3))
    assert outbox.queue_messages(emails, using="billing") == 3
    assert set(Message.objects.values_list("mailer", flat=True)) == {"mailer:billing"}
    with pytest.raises(PauboxConfigError, match="not a PauboxCeleryEmailBackend"):
        outbox.queue_messages([], using="default")


@needs_61
def test_a_mailer_built_from_its_own_options_is_named_at_once(paubox_sandbox, billing, settings):
    """send_mail() builds a connection every time: one built from exactly its MAILERS entry is
    named by its alias without comparing settings; anything else is compared as before."""
    from django_paubox.backends import PauboxEmailBackend
    from django_paubox.credentials import configured_identity

    two_mailers(settings, paubox_sandbox, billing)
    assert configured_identity(options(billing), alias="billing") == "mailer:billing"
    assert configured_identity({}, alias=None) == "default"
    assert configured_identity({"api_key": "other"}, alias=None) is None
    assert configured_identity({**options(billing), "api_key": "other"}, alias="billing") is None
    assert configured_identity(options(billing), alias="gone") is None
    assert configured_identity({}, label="anything") is None
    # The default account's credentials under the billing alias: named by what they are.
    assert PauboxEmailBackend(alias="billing", **options(paubox_sandbox)).identity == DEFAULT
    assert PauboxEmailBackend(alias="billing", **options(billing)).identity == "mailer:billing"


@needs_61
def test_templates_use_a_mailers_key_when_paubox_has_none(paubox_sandbox, billing, settings):
    """Keys only in MAILERS: the default mailer's account holds the templates, or, when the
    default mailer is not Paubox, the first Paubox mailer's."""
    from django_paubox.sending import templates

    two_mailers(settings, billing, paubox_sandbox)  # the default mailer is billing's account
    billing.add_template("reminder", "Hi {{name}}")
    templates.sync_templates()
    assert list(DynamicTemplate.objects.values_list("name", flat=True)) == ["reminder"]
    settings.MAILERS = {
        "default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"},
        "hipaa": {"BACKEND": PLAIN, "OPTIONS": options(paubox_sandbox)},
    }
    paubox_sandbox.add_template("welcome", "Welcome")
    templates.sync_templates()
    assert list(DynamicTemplate.objects.values_list("name", flat=True)) == ["welcome"]
    assert templates.template_settings().api_username == paubox_sandbox.username


@needs_61
def test_removed_mailer_fails_its_messages_naming_it(paubox_sandbox, billing, settings):
    two_mailers(settings, paubox_sandbox, billing, backend=CELERY)
    mail.send_mail("Queued", "body", FROM, ["q@example.com"], using="billing")
    settings.MAILERS["billing"]["BACKEND"] = PLAIN
    mail.send_mail("Sent", "body", FROM, ["s@example.com"], using="billing")
    queued = Message.objects.get(state="queued")
    sent = Message.objects.get(state="sent")

    settings.MAILERS = {k: v for k, v in settings.MAILERS.items() if k != "billing"}
    assert tasks.send_queued([queued.pk])["failed"] == 1
    queued.refresh_from_db()
    assert queued.state == "failed" and 'MAILERS["billing"]' in queued.error

    summary = poll_receipts(due_messages(include_all=True))
    assert (summary.checked, summary.errors) == (1, 1)
    sent.refresh_from_db()
    assert 'MAILERS["billing"]' in sent.error and sent.next_receipt_check_at is None
    # Never another key: the default account was asked nothing.
    assert paubox_sandbox.requests == []
    assert len(billing.requests) == 1  # the send, before the alias was removed

    settings.MAILERS = {
        **settings.MAILERS,
        "billing": {"BACKEND": PLAIN, "OPTIONS": options(billing)},
    }
    call_command("paubox_refresh_receipts", "--tracking-id", sent.tracking_id)
    sent.refresh_from_db()
    assert sent.error == "" and sent.next_receipt_check_at is not None
    assert receipt_paths(billing)


@needs_61
def test_unknown_mailer_option_is_named(settings, paubox_sandbox):
    use_backend(settings, PLAIN, billing={"BACKEND": PLAIN, "OPTIONS": {"api_kye": "x"}})
    with pytest.raises(ImproperlyConfigured, match="'api_kye'"):
        mail.mailers["billing"]
    with pytest.raises(PauboxConfigError, match="'api_kye'"):
        settings_for("mailer:billing")
    errors = [m for m in check_paubox_settings() if m.id == "django_paubox.E001"]
    assert len(errors) == 1 and "api_kye" in errors[0].msg


@needs_61
def test_domains_inside_a_mailer(paubox_sandbox, billing, settings):
    settings.PAUBOX = {"WEBHOOK_SECRET": SECRET}
    domains = {"clinic.example": {"API_KEY": BILLING_KEY}}
    use_backend(
        settings,
        PLAIN,
        options(paubox_sandbox),
        billing={
            "BACKEND": PLAIN,
            "OPTIONS": {"api_username": BILLING_USER, "api_url": billing.url, "domains": domains},
        },
    )
    mail.send_mail("Your statement", "body", FROM, ["b@example.com"], using="billing")
    assert Message.objects.get().mailer == "mailer:billing/domain:clinic.example"
    assert poll_receipts(due_messages(include_all=True)).errors == 0
    assert_polled_by_own_account(billing, billing)


@needs_61
def test_checks_see_mailers(settings, paubox_sandbox, billing):
    two_mailers(settings, paubox_sandbox, billing)
    assert not [m for m in check_paubox_settings() if m.id.startswith("django_paubox.E")]
    settings.PAUBOX = {"API_KEY": "left-over", "WEBHOOK_SECRET": SECRET}
    assert "django_paubox.W005" in {m.id for m in check_paubox_settings()}
    assert "left-over" not in " ".join(m.msg + (m.hint or "") for m in check_paubox_settings())
    settings.PAUBOX = {"WEBHOOK_SECRET": SECRET}
    settings.MAILERS["billing"]["OPTIONS"] = {"api_url": billing.url}
    errors = [m for m in check_paubox_settings() if m.id == "django_paubox.E002"]
    assert len(errors) == 1 and errors[0].msg.startswith('MAILERS["billing"]: ')


@pytest.mark.skipif(DJANGO_61, reason="Django 6.1 refuses EMAIL_BACKEND beside MAILERS itself")
def test_check_warns_when_email_backend_and_mailers_are_both_set(settings):
    settings.MAILERS = {"default": {"BACKEND": PLAIN}}
    assert "django_paubox.W004" in {m.id for m in check_paubox_settings()}


# --- Any Django: get_connection(label=...) and get_connection(api_key=...) -------------------


def connections(settings: Any, sandbox: SandboxServer) -> None:
    settings.PAUBOX = {
        **settings.PAUBOX,
        "CONNECTIONS": {
            "billing": {
                "API_KEY": BILLING_KEY,
                "API_USERNAME": BILLING_USER,
                "API_URL": sandbox.url,
            }
        },
    }


@pytest.mark.parametrize("how", ["label", "api_key", "both"])
def test_connection_credentials_follow_the_message(paubox_sandbox, billing, settings, how):
    connections(settings, billing)
    given: dict[str, Any] = {
        "label": {"label": "billing"},
        "api_key": options(billing),  # a configured key is recognised by its entry
        "both": {"label": "billing", **options(billing)},
    }[how]
    mail.send_mail("Hello", "body", "front@clinic.example", ["a@example.com"])
    new_connection(**given).send_messages(
        [
            mail.EmailMessage("Your statement", "body", FROM, ["b@example.com"]),
            scheduled_email(later()),
        ]
    )
    assert [r.mailer for r in Message.objects.order_by("pk")] == [DEFAULT] + ["label:billing"] * 2

    call_command("paubox_refresh_receipts", "--all")
    assert_polled_by_own_account(paubox_sandbox, billing)
    scheduled_sends.cancel(Message.objects.get(scheduled_at__isnull=False))
    assert billing.scheduled[0].status == "cancelled" and paubox_sandbox.scheduled == []


def test_label_must_name_the_credentials_given(paubox_sandbox, billing, settings):
    connections(settings, billing)
    with pytest.raises(PauboxConfigError, match="api_key given with label='billing'"):
        new_connection(label="billing", api_key="another-key")
    with pytest.raises(CredentialsNotFound, match=r'PAUBOX\["CONNECTIONS"\]\["nope"\]'):
        new_connection(label="nope")


def test_unnamed_credentials_send_but_say_why_they_cannot_be_polled(
    paubox_sandbox, billing, settings
):
    """Credentials in no setting: the message goes (the caller asked for it), receipts cannot
    be had later and say so; the outbox refuses them at once (its worker could never send)."""
    new_connection(**options(billing)).send_messages(
        [mail.EmailMessage("Your statement", "body", FROM, ["b@example.com"])]
    )
    row = Message.objects.get()
    assert row.mailer == "unnamed" and row.state == "sent"
    summary = poll_receipts(due_messages(include_all=True))
    assert summary.errors == 1 and receipt_paths(paubox_sandbox) == []
    row.refresh_from_db()
    assert "in no setting" in row.error and 'PAUBOX["CONNECTIONS"]' in row.error
    with pytest.raises(PauboxConfigError, match="Celery outbox"):
        new_connection(CELERY, **options(billing))


def test_removed_domain_entry_is_named(paubox_sandbox, settings):
    settings.PAUBOX = {
        **settings.PAUBOX,
        "DOMAINS": {"clinic.example": {"API_KEY": paubox_sandbox.api_key}},
    }
    mail.send_mail("Your statement", "body", FROM, ["b@example.com"])
    row = Message.objects.get()
    assert row.mailer == ("mailer:default/" if DJANGO_61 else "") + "domain:clinic.example"
    assert poll_receipts(due_messages(include_all=True)).errors == 0
    settings.PAUBOX = {k: v for k, v in settings.PAUBOX.items() if k != "DOMAINS"}
    with pytest.raises(CredentialsNotFound, match=r'no entry "clinic\.example"'):
        scheduled_sends._client_for(row)
