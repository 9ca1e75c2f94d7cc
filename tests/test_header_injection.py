"""Header injection keeps Django's contract (issue #10, item 5).

A line break in the subject, a header value or an address raises an exception that is both
Django's ``BadHeaderError`` and our ``PauboxPayloadError``, before any HTTP, with or without
``fail_silently``, so that a view written as Django's docs teach answers "Invalid header found."
"""

from __future__ import annotations

import pytest
from django.core import mail
from django.core.mail import EmailMessage, send_mail
from django.core.mail.message import BadHeaderError
from django.http import HttpResponse
from django.test import RequestFactory

from django_paubox.exceptions import PauboxHeaderError, PauboxPayloadError
from django_paubox.models import Message
from tests.mailers import DJANGO_61, PLAIN, default_connection, new_connection, use_backend

pytestmark = pytest.mark.django_db

FROM = "reminders@clinic.example"
CELERY_BACKEND = "django_paubox.backends.PauboxCeleryEmailBackend"

INJECTIONS = {
    "subject": {"subject": "Subject\nBcc: x@evil.example"},
    "subject-cr": {"subject": "Subject\rBcc: x@evil.example"},
    "header-value": {"headers": {"X-Clinic": "north\nBcc: x@evil.example"}},
    "header-name": {"headers": {"X-Clinic\nBcc": "x@evil.example"}},
    "subject-header": {"headers": {"Subject": "Hi\nBcc: x@evil.example"}},
    "to": {"to": ["patient@example.com\nBcc: x@evil.example"]},
    "cc": {"cc": ["cc@example.com\nBcc: x@evil.example"]},
    "bcc": {"bcc": ["bcc@example.com\r\nX-Evil: 1"]},
    "reply-to": {"reply_to": ["desk@clinic.example\nBcc: x@evil.example"]},
    "from": {"from_email": "reminders@clinic.example\nBcc: x@evil.example"},
}


def injected(**kw) -> EmailMessage:
    fields = {"subject": "Subject", "body": "Body", "from_email": FROM, "to": ["p@example.com"]}
    return EmailMessage(**{**fields, **kw})


@pytest.mark.parametrize("backend", [None, CELERY_BACKEND])
@pytest.mark.parametrize("fail_silently", [False, True])
@pytest.mark.parametrize("fields", INJECTIONS.values(), ids=INJECTIONS)
def test_a_line_break_raises_bad_header_error_before_any_http(
    paubox_sandbox, backend, fail_silently, fields
):
    connection = new_connection(backend, fail_silently=fail_silently)
    with pytest.raises(BadHeaderError) as info:
        connection.send_messages([injected(**fields)])
    assert isinstance(info.value, PauboxPayloadError)
    assert isinstance(info.value, PauboxHeaderError)
    assert paubox_sandbox.requests == []
    row = Message.objects.get()  # recorded, and settled with the reason
    assert row.state == "failed" and "line break" in row.error


def test_send_mail_with_an_injected_subject(paubox_sandbox, settings):
    with pytest.raises(BadHeaderError):
        send_mail("Subject\nBcc: x@evil.example", "Body", FROM, ["p@example.com"])
    if DJANGO_61:  # 6.1 deprecates send_mail(fail_silently=): the mailer's OPTIONS say it
        use_backend(settings, PLAIN, {"fail_silently": True})
        with pytest.raises(BadHeaderError):
            send_mail("Subject\nBcc: x@evil.example", "Body", FROM, ["p@example.com"])
    else:
        with pytest.raises(BadHeaderError):
            send_mail(
                "Subject\nBcc: x@evil.example", "Body", FROM, ["p@example.com"], fail_silently=True
            )
    assert paubox_sandbox.requests == []


def test_the_others_of_the_call_are_sent(paubox_sandbox):
    good = injected()
    with pytest.raises(BadHeaderError):
        new_connection(fail_silently=True).send_messages(
            [good, injected(subject="Hi\nBcc: x@evil.example")]
        )
    assert good.paubox_tracking_id
    assert len(paubox_sandbox.messages) == 1


def test_a_view_written_as_djangos_docs_teach(paubox_sandbox):
    """https://docs.djangoproject.com/en/stable/topics/email/#preventing-header-injection"""

    def send_email(request):
        subject = request.POST.get("subject", "")
        if subject:
            try:
                send_mail(subject, "Body", FROM, ["admin@example.com"])
            except BadHeaderError:
                return HttpResponse("Invalid header found.")
            return HttpResponse("Sent.")
        return HttpResponse("Make sure all fields are entered and valid.")

    request = RequestFactory().post("/contact/", {"subject": "Hello\nBcc: x@evil.example"})
    assert send_email(request).content == b"Invalid header found."
    assert mail.outbox == [] and paubox_sandbox.requests == []


def test_other_control_characters_stay_plain_payload_errors(paubox_sandbox):
    with pytest.raises(PauboxPayloadError) as info:
        default_connection().send_messages([injected(to=["p\x00@example.com"])])
    assert not isinstance(info.value, PauboxHeaderError)
    # Django 6.0 made BadHeaderError ValueError itself: there every payload error is one.
    if BadHeaderError is not ValueError:
        assert not isinstance(info.value, BadHeaderError)
    assert Message.objects.get().state == "failed"  # recorded, NUL and all (PostgreSQL too)


@pytest.mark.parametrize(
    "subject, headers",
    [("Results\x00ready", {}), ("Results ready", {"X-Clinic": "a\x00b"})],
    ids=["subject", "header value"],
)
def test_a_nul_in_a_header_is_refused_and_the_refusal_recorded(paubox_sandbox, subject, headers):
    """No header may hold a NUL, and PostgreSQL cannot store one: refused before any request,
    and the failure recorded (PostgreSQL included)."""
    email = mail.EmailMessage(subject, "Body", FROM, ["p@example.com"], headers=headers)
    with pytest.raises(PauboxPayloadError, match="NUL"):
        default_connection().send_messages([email])
    assert paubox_sandbox.requests == []
    row = Message.objects.get()
    assert row.state == "failed" and "NUL" in row.error
    assert "\x00" not in row.subject
