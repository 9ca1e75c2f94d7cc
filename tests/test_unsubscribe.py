"""One-click unsubscribe (RFC 8058): the headers sent to the sandbox, the signed token, the
view's POST/GET/tampered answers, the signal, and the system checks."""

from __future__ import annotations

import re
import time

import django
import pytest
from django.core import mail, signing
from django.core.checks import run_checks
from django.test import Client

from django_paubox import signals
from django_paubox.exceptions import PauboxPayloadError
from django_paubox.models import Message, Suppression
from django_paubox.sending import unsubscribe as unsubscribing
from tests.factories import email
from tests.mailers import default_connection, new_connection

pytestmark = pytest.mark.django_db

PUBLIC_URL = "https://portal.clinic.example"
ONE_CLICK = "List-Unsubscribe=One-Click"
#: A URLconf without django_paubox.urls, for the system check.
urlpatterns: list[object] = []


@pytest.fixture
def public(settings, paubox_sandbox):
    settings.PAUBOX = {**settings.PAUBOX, "PUBLIC_URL": PUBLIC_URL}
    return paubox_sandbox


@pytest.fixture
def unsubscribed():
    seen: list[tuple[str, int | None]] = []

    def receiver(sender, address, suppression, **kwargs):
        assert sender is Suppression
        seen.append((address, suppression.message_id))

    signals.recipient_unsubscribed.connect(receiver, weak=False)
    yield seen
    signals.recipient_unsubscribed.disconnect(receiver)


def one_click(to: str = "Pat <Pat@Example.com>", **kwargs) -> mail.EmailMessage:
    message = email(to=[to], **kwargs)
    message.paubox_unsubscribe = True
    return message


def sent_url(sandbox) -> str:
    """The path of the https URL in the last message's List-Unsubscribe header."""
    header = sandbox.last_message.headers["List-Unsubscribe"]
    match = re.match(r"<https://portal\.clinic\.example(/paubox/unsubscribe/[^/>]+/)>", header)
    assert match, header
    return match.group(1)


def blind_client() -> Client:
    """A mail provider: no cookies, no CSRF token, and CSRF checks enforced."""
    return Client(enforce_csrf_checks=True)


# --- The headers ----------------------------------------------------------------------------


def test_headers_are_sent_for_a_single_recipient_message(public):
    message = one_click()
    assert message.send() == 1
    headers = public.last_message.headers
    assert headers["List-Unsubscribe-Post"] == ONE_CLICK
    path = sent_url(public)
    token = path.split("/")[-2]
    row = Message.objects.get()
    assert unsubscribing.read_token(token, 365) == ("pat@example.com", row.pk)


def test_mailto_is_offered_beside_the_url(public, settings):
    settings.PAUBOX = {**settings.PAUBOX, "UNSUBSCRIBE_MAILTO": "unsubscribe@clinic.example"}
    one_click().send()
    header = public.last_message.headers["List-Unsubscribe"]
    assert header.startswith(f"<{PUBLIC_URL}/paubox/unsubscribe/")
    assert header.endswith(", <mailto:unsubscribe@clinic.example?subject=unsubscribe>")


def test_the_callers_own_header_wins(public):
    message = one_click(
        to="a@example.com", headers={"List-Unsubscribe": "<https://lists.example/u/1>"}
    )
    message.cc = ["b@example.com"]  # no single-recipient rule: the header is not ours
    message.send()
    headers = public.last_message.headers
    assert headers["List-Unsubscribe"] == "<https://lists.example/u/1>"
    assert "List-Unsubscribe-Post" not in headers


def test_several_recipients_are_refused_before_any_http(public):
    message = one_click(cc=["other@example.com"])
    with pytest.raises(PauboxPayloadError, match="exactly one recipient"):
        message.send()
    assert public.requests == []


def test_without_public_url_the_message_is_refused_before_any_http(paubox_sandbox):
    with pytest.raises(PauboxPayloadError, match="PUBLIC_URL"):
        one_click().send()
    assert paubox_sandbox.requests == []


def test_unsubscribe_bulk_covers_single_recipient_messages_of_a_mass_send(public, settings):
    settings.PAUBOX = {**settings.PAUBOX, "UNSUBSCRIBE_BULK": True}
    mail.send_mass_mail(
        [
            ("Reminder", "Body", "clinic@clinic.example", ["a@example.com"]),
            ("Reminder", "Body", "clinic@clinic.example", ["b@example.com", "c@example.com"]),
            ("Reminder", "Body", "clinic@clinic.example", ["d@example.com"]),
        ]
    )
    by_first = {m.recipients[0]: m.headers for m in public.messages}
    assert "List-Unsubscribe" in by_first["a@example.com"]
    assert "List-Unsubscribe" not in by_first["b@example.com"]  # several recipients: skipped
    assert "List-Unsubscribe" in by_first["d@example.com"]
    opted_out = email(to=["e@example.com"])
    opted_out.paubox_unsubscribe = False
    default_connection().send_messages([opted_out, email(to=["f@example.com"])])
    by_first = {m.recipients[0]: m.headers for m in public.messages}
    assert "List-Unsubscribe" not in by_first["e@example.com"]
    assert "List-Unsubscribe" in by_first["f@example.com"]
    email(to=["g@example.com"]).send()  # a single send is not bulk
    assert "List-Unsubscribe" not in public.last_message.headers


# --- The view -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the signal waits for the commit
def test_one_click_post_unsubscribes_without_login_csrf_or_cookies(public, unsubscribed):
    one_click().send()
    path = sent_url(public)
    row = Message.objects.get()
    client = blind_client()
    response = client.post(path, ONE_CLICK, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    assert not response.cookies
    assert response["Cache-Control"] == "no-store"
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.reason, suppression.message_id) == (
        "pat@example.com",
        "unsubscribed",
        row.pk,
    )
    assert unsubscribed == [("pat@example.com", row.pk)]
    # Providers may post again: 200, and the signal does not fire twice.
    again = client.post(path, ONE_CLICK, content_type="application/x-www-form-urlencoded")
    assert again.status_code == 200
    assert unsubscribed == [("pat@example.com", row.pk)]
    assert Suppression.objects.count() == 1
    # The next send to that address makes no request.
    before = list(public.requests)
    assert one_click().send() == 0
    assert public.requests == before


def test_multipart_post_is_accepted(public):
    one_click().send()
    response = blind_client().post(sent_url(public), {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert Suppression.objects.get().reason == "unsubscribed"


@pytest.mark.django_db(transaction=True)  # the signal waits for the commit
def test_get_shows_a_confirmation_page_and_never_unsubscribes(public, unsubscribed):
    one_click().send()
    path = sent_url(public)
    response = blind_client().get(path)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<form method="post">' in html
    assert 'name="List-Unsubscribe" value="One-Click"' in html
    assert "pat@example.com" not in html
    assert not response.cookies
    assert blind_client().head(path).status_code == 200
    assert not Suppression.objects.exists() and unsubscribed == []
    # The page's button posts the form.
    assert blind_client().post(path, {"List-Unsubscribe": "One-Click"}).status_code == 200
    assert unsubscribed == [("pat@example.com", Message.objects.get().pk)]


def test_a_post_without_the_one_click_body_changes_nothing(public):
    one_click().send()
    path = sent_url(public)
    for body in ("", "List-Unsubscribe=Yes", "unsubscribe=1"):
        response = blind_client().post(path, body, content_type="application/x-www-form-urlencoded")
        assert response.status_code == 400
    assert blind_client().put(path).status_code == 405
    assert not Suppression.objects.exists()


def _token_made_at(monkeypatch, when: float, address: str = "pat@example.com") -> str:
    monkeypatch.setattr(signing.time, "time", lambda: when)
    try:
        return unsubscribing.make_token(address, None)
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("kind", ["tampered", "expired", "foreign-salt", "foreign-key", "junk"])
def test_a_bad_token_answers_400_and_changes_nothing(public, settings, monkeypatch, kind):
    one_click().send()
    token = sent_url(public).split("/")[-2]
    if kind == "tampered":
        _, _, rest = token.partition(":")
        token = unsubscribing.make_token("someone.else@example.com", None).partition(":")[0]
        token = f"{token}:{rest}"
    elif kind == "expired":
        token = _token_made_at(monkeypatch, time.time() - 366 * 86400)
    elif kind == "foreign-salt":
        token = signing.dumps({"a": "pat@example.com", "m": None}, salt="something.else")
    elif kind == "foreign-key":
        own = settings.SECRET_KEY
        settings.SECRET_KEY = "another-site"
        token = unsubscribing.make_token("pat@example.com", None)
        settings.SECRET_KEY = own
    else:
        token = "not-a-token"
    path = f"/paubox/unsubscribe/{token}/"
    client = blind_client()
    assert client.get(path).status_code == 400
    response = client.post(path, ONE_CLICK, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert not Suppression.objects.exists()


def test_tokens_live_for_the_documented_age(public, settings, monkeypatch):
    settings.PAUBOX = {**settings.PAUBOX, "UNSUBSCRIBE_MAX_AGE_DAYS": 30}
    fresh = _token_made_at(monkeypatch, time.time() - 29 * 86400)
    stale = _token_made_at(monkeypatch, time.time() - 31 * 86400)
    client = blind_client()
    assert client.get(f"/paubox/unsubscribe/{stale}/").status_code == 400
    assert client.get(f"/paubox/unsubscribe/{fresh}/").status_code == 200


@pytest.mark.django_db(transaction=True)  # the signal waits for the commit
def test_a_suppressed_address_that_unsubscribes_becomes_unsubscribed_once(public, unsubscribed):
    from django_paubox.records import suppressions

    suppressions.add("pat@example.com", "hard_bounce")
    token = unsubscribing.make_token("pat@example.com", None)
    path = f"/paubox/unsubscribe/{token}/"
    for _ in range(2):
        blind_client().post(path, ONE_CLICK, content_type="application/x-www-form-urlencoded")
    assert Suppression.objects.get().reason == "unsubscribed"
    assert unsubscribed == [("pat@example.com", None)]


@pytest.mark.skipif(django.VERSION < (5, 1), reason="LoginRequiredMiddleware is Django 5.1+")
def test_the_view_works_behind_login_required_middleware(public, settings):
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    token = unsubscribing.make_token("pat@example.com", None)
    path = f"/paubox/unsubscribe/{token}/"
    response = blind_client().post(
        path, ONE_CLICK, content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    assert Suppression.objects.get().reason == "unsubscribed"


# --- System checks --------------------------------------------------------------------------


def check_ids() -> set[str]:
    return {message.id for message in run_checks() if message.id.startswith("django_paubox")}


def test_check_errors_when_unsubscribe_is_used_without_public_url(settings):
    settings.PAUBOX = {**settings.PAUBOX, "UNSUBSCRIBE_BULK": True}
    assert "django_paubox.E020" in check_ids()
    settings.PAUBOX = {
        **settings.PAUBOX,
        "UNSUBSCRIBE_BULK": False,
        "UNSUBSCRIBE_MAILTO": "u@x.org",
    }
    assert "django_paubox.E020" in check_ids()
    settings.PAUBOX = {**settings.PAUBOX, "PUBLIC_URL": PUBLIC_URL}
    assert not {"django_paubox.E020", "django_paubox.E021", "django_paubox.E022"} & check_ids()


def test_check_errors_for_a_public_url_that_is_not_absolute(settings):
    settings.PAUBOX = {**settings.PAUBOX, "PUBLIC_URL": "portal.clinic.example"}
    assert "django_paubox.E021" in check_ids()


def test_check_errors_when_the_urls_are_not_included(settings):
    settings.PAUBOX = {**settings.PAUBOX, "UNSUBSCRIBE_BULK": True, "PUBLIC_URL": PUBLIC_URL}
    settings.ROOT_URLCONF = __name__  # this module: no django_paubox.urls

    assert "django_paubox.E022" in check_ids()


def test_the_outbox_worker_adds_the_headers_when_it_sends(public, monkeypatch):
    from django_paubox import tasks

    monkeypatch.setattr(tasks.send_queued, "apply_async", lambda *a, **k: None)
    message = one_click()
    backend = new_connection("django_paubox.backends.PauboxCeleryEmailBackend")
    assert backend.send_messages([message]) == 1
    assert public.requests == []
    row = message.paubox_message
    assert tasks.send_queued([row.pk])["sent"] == 1
    token = sent_url(public).split("/")[-2]
    assert unsubscribing.read_token(token, 365) == ("pat@example.com", row.pk)
