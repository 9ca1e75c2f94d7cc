"""Tests for django_paubox.sending.payload: EmailMessage -> Paubox JSON, checked against a spec."""

from __future__ import annotations

import base64
import copy
import json
import logging
from email import _header_value_parser as header_parser
from email.headerregistry import Address
from email.mime.application import MIMEApplication
from email.mime.image import MIMEImage
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pytest
from django.core.mail import EmailMessage, EmailMultiAlternatives
from django.utils.translation import gettext_lazy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_paubox.conf import PauboxSettings
from django_paubox.exceptions import PauboxPayloadError
from django_paubox.sending.addresses import ParsedAddress, parse_address
from django_paubox.sending.bodies import bulk_send_body, single_send_body
from django_paubox.sending.payload import (
    build_message,
    message_recipients,
    send_extras,
    sendable_recipient_count,
)
from tests.factories import email as make
from tests.mailers import DJANGO_61

CONF = PauboxSettings()
SENDER = "sender@clinic.example"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def b64(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def payload_error(email: EmailMessage, conf: PauboxSettings = CONF) -> str:
    with pytest.raises(PauboxPayloadError) as info:
        build_message(email, conf)
    return str(info.value)


# --- recipients --------------------------------------------------------------------------------


def test_simple_message_matches_paubox_shape() -> None:
    email = make(
        to=["patient@example.com", "Jane Roe <jane@example.com>"],
        cc=["Dr. Who <who@example.com>"],
        bcc=["audit@clinic.example"],
    )
    assert build_message(email, CONF) == {
        "recipients": ["patient@example.com", "Jane Roe <jane@example.com>"],
        "cc": ['"Dr. Who" <who@example.com>'],
        "bcc": ["audit@clinic.example"],
        "headers": {"subject": "Subject", "from": SENDER},
        "allowNonTLS": False,
        "forceSecureNotification": False,
        "content": {"text/plain": "Hello"},
    }


def test_matches_what_paubox_sdk_builds() -> None:
    """Paubox's own SDK is an independent oracle for the common case."""
    from paubox.helpers.mail import Mail

    email = make(body="Hi there", to=["a@example.com"], cc=["b@example.com"])
    email.attach_alternative("<p>Hi <b>there</b> - ünïcode</p>", "text/html")
    sdk = Mail(
        SENDER,
        "Subject",
        ["a@example.com"],
        {"text/plain": "Hi there", "text/html": "<p>Hi <b>there</b> - ünïcode</p>"},
        {"cc": ["b@example.com"], "forceSecureNotification": False},
    ).get()
    assert single_send_body(build_message(email, CONF)) == sdk


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ('"Doe, John" <john@example.com>', '"Doe, John" <john@example.com>'),
        ('"Jo \\"JJ\\" O\'Neil" <jo@example.com>', '"Jo \\"JJ\\" O\'Neil" <jo@example.com>'),
        ('"back\\\\slash" <b@example.com>', '"back\\\\slash" <b@example.com>'),
        ("Zoë Ångström <zoe@example.com>", "Zoë Ångström <zoe@example.com>"),
        ('"Müller, Jürgen" <j@example.com>', '"Müller, Jürgen" <j@example.com>'),
        ("=?utf-8?q?J=C3=B6rg?= <jorg@example.com>", "Jörg <jorg@example.com>"),
        ("Name <user@bücher.example>", "Name <user@bücher.example>"),
        ("<bare@example.com>", "bare@example.com"),
        ('"john doe"@example.com', '"john doe"@example.com'),
        ("J. Smith <jsmith@host.com>", '"J. Smith" <jsmith@host.com>'),
        ("user@[192.0.2.1]", "user@[192.0.2.1]"),
        ("  Spaced Name   <s@example.com>", "Spaced Name <s@example.com>"),
    ],
)
def test_display_names_quoted_and_unicode_kept(given: str, sent: str) -> None:
    message = build_message(make(to=[given]), CONF)
    assert message["recipients"] == [sent]
    assert "=?" not in json.dumps(message, ensure_ascii=False)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("no-at-sign", "no @"),
        ("   ", "empty address"),
        ("user@", "not a valid email address"),
        ("@example.com", "not a valid email address"),
        ("John <john@example.com", "not a valid email address"),
        ("Doe, John <john@example.com>", "must be quoted"),
        ("a..b@example.com", "not a valid email address"),
        ("a b@example.com", "not a valid email address"),
        ("user@[192.0.2.1", "not a valid email address"),
        ("a@example.com, b@example.com", "not one email address"),
        ("victim@example.com\nBcc: evil@example.net", "line break"),
        ("victim@example.com\rX: y", "line break"),
        ("Name\u2028 <n@example.com>", "line break"),
        ("nul\x00@example.com", "control character"),
    ],
)
def test_invalid_addresses_are_refused_by_name(bad: str, why: str) -> None:
    for kind in ("to", "cc", "bcc"):
        email = make(to=["ok@example.com"])
        getattr(email, kind).append(bad)
        error = payload_error(email)
        assert why in error
        assert repr(bad) in error or bad.strip() == ""
        assert kind in error
        with pytest.raises(PauboxPayloadError):
            message_recipients(email)


def test_lists_given_as_strings_are_refused() -> None:
    email = make()
    email.bcc = "x@example.com"
    assert "`bcc` must be a list" in payload_error(email)
    email = make()
    email.reply_to = "r@example.com"
    assert "`reply_to` must be a list" in payload_error(email)


def test_empty_entries_are_skipped_like_django() -> None:
    email = make(to=["a@example.com", ""], cc=[""])
    assert build_message(email, CONF)["recipients"] == ["a@example.com"]
    assert sendable_recipient_count(email) == 1


def test_duplicates_sent_once_first_kind_wins() -> None:
    email = make(
        to=["Pat <Pat@Example.com>", "two@example.com"],
        cc=["pat@example.com", "c@example.com", "TWO@example.com"],
        bcc=["c@example.com", "b@example.com"],
    )
    message = build_message(email, CONF)
    assert message["recipients"] == ["Pat <Pat@Example.com>", "two@example.com"]
    assert message["cc"] == ["c@example.com"]
    assert message["bcc"] == ["b@example.com"]
    assert message_recipients(email) == [
        ("to", "pat@example.com"),
        ("to", "two@example.com"),
        ("cc", "c@example.com"),
        ("bcc", "b@example.com"),
    ]


def test_message_recipients_are_bare_lowercase_and_idn_kept() -> None:
    email = make(to=['"Doe, J" <J.Doe@Bücher.Example>'], cc=[], bcc=["Audit <AUDIT@x.example>"])
    assert message_recipients(email) == [("to", "j.doe@bücher.example"), ("bcc", "audit@x.example")]


def test_recipient_limit() -> None:
    hundred = [f"p{i}@example.com" for i in range(100)]
    assert (
        len(
            build_message(make(to=hundred[:50], cc=hundred[50:90], bcc=hundred[90:]), CONF)[
                "recipients"
            ]
        )
        == 50
    )
    error = payload_error(make(to=hundred, bcc=["one-more@example.com"]))
    assert "101 recipients" in error and "at most 100" in error
    small = PauboxSettings(max_recipients=2)
    assert "3 recipients" in payload_error(make(to=hundred[:3]), small)


def test_zero_recipients_and_cc_only_are_refused() -> None:
    email = make(to=[])
    assert sendable_recipient_count(email) == 0
    assert "no recipients" in payload_error(email)
    assert "no 'to' recipient" in payload_error(make(to=[], cc=["c@example.com"]))
    assert sendable_recipient_count(make(to=["a@x.example"], cc=["b@x.example"], bcc=["c@x"])) == 3


# --- from, subject, reply-to ---------------------------------------------------------------------


def test_from_subject_and_lazy_strings() -> None:
    email = make(
        subject=gettext_lazy("Your results"), from_email="Clinic Ä <sender@clinic.example>"
    )
    email.body = gettext_lazy("Lazy body")
    message = build_message(email, CONF)
    assert message["headers"]["subject"] == "Your results"
    assert type(message["headers"]["subject"]) is str
    assert message["headers"]["from"] == "Clinic Ä <sender@clinic.example>"
    assert message["content"] == {"text/plain": "Lazy body"}
    json.dumps(message)  # no lazy objects left


def test_from_and_subject_extra_headers_win() -> None:
    email = make(headers={"from": "Front Desk <desk@clinic.example>", "Subject": "Override"})
    headers = build_message(email, CONF)["headers"]
    assert headers["from"] == "Front Desk <desk@clinic.example>"
    assert headers["subject"] == "Override"


@pytest.mark.parametrize("sender", ["a@x.example, b@x.example", "not-an-address", ""])
def test_from_must_be_one_valid_address(sender: str) -> None:
    email = make()
    email.from_email = sender
    assert "from_email" in payload_error(email)


def test_subject_with_line_break_is_refused_without_echoing_it() -> None:
    error = payload_error(make(subject="PHI subject\nBcc: x@example.com"))
    assert "subject contains a line break" in error
    assert "PHI subject" not in error


def test_reply_to_joined_and_extra_header_wins() -> None:
    email = make(reply_to=["Desk <desk@clinic.example>", '"Billing, Dept" <bill@clinic.example>'])
    assert (
        build_message(email, CONF)["headers"]["reply-to"]
        == 'Desk <desk@clinic.example>, "Billing, Dept" <bill@clinic.example>'
    )
    email.extra_headers = {"reply-to": "Other <other@clinic.example>, third@clinic.example"}
    assert (
        build_message(email, CONF)["headers"]["reply-to"]
        == "Other <other@clinic.example>, third@clinic.example"
    )
    assert "reply-to" not in build_message(make(), CONF)["headers"]
    assert "Reply-To" in payload_error(make(headers={"Reply-To": "bad address"}))


# --- content ---------------------------------------------------------------------------------


def test_html_alternative_is_base64_without_line_breaks() -> None:
    html = "<p>" + "Résultats <b>prêts</b> " * 50 + "</p>"
    email = make(body="text version")
    email.attach_alternative(html, "text/html")
    content = build_message(email, CONF)["content"]
    assert content["text/plain"] == "text version"
    assert "\n" not in content["text/html"]
    assert content["text/html"] == b64(html)
    assert unb64(content["text/html"]).decode("utf-8") == html


def test_alternatives_as_plain_tuples_and_namedtuples() -> None:
    email = make(body="t", alternatives=[("<i>x</i>", "text/html")])  # Django 5.2: namedtuples
    assert build_message(email, CONF)["content"]["text/html"] == b64("<i>x</i>")
    email.alternatives = [("<i>y</i>", "text/html")]  # Django 4.2: plain tuples
    assert build_message(email, CONF)["content"]["text/html"] == b64("<i>y</i>")


def test_html_only_message() -> None:
    email = make(body="<h1>Only HTML</h1>")
    email.content_subtype = "html"
    assert build_message(email, CONF)["content"] == {"text/html": b64("<h1>Only HTML</h1>")}
    plain = EmailMessage("S", "<p>x</p>", SENDER, ["a@example.com"])
    plain.content_subtype = "html"
    assert build_message(plain, CONF)["content"] == {"text/html": b64("<p>x</p>")}


def test_html_body_with_plain_alternative() -> None:
    email = make(body="<p>h</p>", alternatives=[("plain version", "text/plain")])
    email.content_subtype = "html"
    assert build_message(email, CONF)["content"] == {
        "text/plain": "plain version",
        "text/html": b64("<p>h</p>"),
    }


def test_body_bytes_that_are_not_utf8_are_refused() -> None:
    error = payload_error(make(body=b"\xff\xfe SECRET"))
    assert "not UTF-8" in error and "SECRET" not in error


def test_empty_text_with_html_sends_html_only() -> None:
    email = make(body="")
    email.attach_alternative("<p>x</p>", "text/html")
    assert build_message(email, CONF)["content"] == {"text/html": b64("<p>x</p>")}


def test_no_content_is_refused() -> None:
    assert "has no content" in payload_error(make(body=""))


@pytest.mark.parametrize(
    ("alternatives", "subtype", "why"),
    [
        ([("SECRET-BODY", "text/calendar")], "plain", "text/calendar"),
        ([("<p>SECRET-BODY</p>", "text/html"), ("<p>2</p>", "text/html")], "plain", "more than"),
        ([("<p>SECRET-BODY</p>", "text/html")], "html", "more than one text/html"),
        ([], "calendar", "text/calendar"),
    ],
)
def test_unsupported_alternatives_are_refused(alternatives: list, subtype: str, why: str) -> None:
    email = make(body="SECRET-BODY", alternatives=alternatives)
    email.content_subtype = subtype
    error = payload_error(email)
    assert why in error
    assert "SECRET-BODY" not in error


# --- attachments -------------------------------------------------------------------------------


def attachments_of(email: EmailMessage) -> list[dict[str, str]]:
    return build_message(email, CONF)["attachments"]


def test_tuple_attachments_bytes_and_str() -> None:
    email = make()
    email.attach("report.pdf", b"%PDF-1.4 binary\x00\xff", "application/pdf")
    email.attach("notes.txt", "Prénom: Zoë", "text/plain")
    email.attachments.append(("raw.csv", "a,b\n1,2", None))  # no mimetype: guessed
    email.attachments.append((None, b"\x00\x01", None))  # no name, no type
    email.attachments.append((None, PNG, "image/png"))  # no name: extension from type
    assert attachments_of(email) == [
        {"fileName": "report.pdf", "contentType": "application/pdf",
         "content": b64(b"%PDF-1.4 binary\x00\xff")},
        {"fileName": "notes.txt", "contentType": "text/plain", "content": b64("Prénom: Zoë")},
        {"fileName": "raw.csv", "contentType": "text/csv", "content": b64("a,b\n1,2")},
        {"fileName": "attachment.bin", "contentType": "application/octet-stream",
         "content": b64(b"\x00\x01")},
        {"fileName": "attachment.png", "contentType": "image/png", "content": b64(PNG)},
    ]  # fmt: skip


def test_email_attachment_namedtuple_and_attach_file(tmp_path: Path) -> None:
    try:
        from django.core.mail.message import EmailAttachment  # Django 5.2+
    except ImportError:  # Django 4.2: attachments are plain tuples
        from collections import namedtuple

        EmailAttachment = namedtuple("EmailAttachment", "filename content mimetype")

    path = tmp_path / "scan.png"
    path.write_bytes(PNG)
    email = make()
    email.attach_file(path)
    email.attachments.append(EmailAttachment("x.json", '{"a": 1}', "application/json"))
    assert attachments_of(email) == [
        {"fileName": "scan.png", "contentType": "image/png", "content": b64(PNG)},
        {"fileName": "x.json", "contentType": "application/json", "content": b64('{"a": 1}')},
    ]


def attach_mime(email: EmailMessage, part: Any) -> None:
    """``email.attach(<MIMEBase part>)``, which Django 6.1 deprecates (for ``MIMEPart``) but
    still takes: users' code does it, so the payload must still handle it."""
    if not DJANGO_61:
        email.attach(part)
        return
    from django.utils.deprecation import RemovedInDjango70Warning

    with pytest.warns(RemovedInDjango70Warning, match="MIMEBase attachments are deprecated"):
        email.attach(part)


def test_mime_part_attachments() -> None:
    email = make()
    app = MIMEApplication(b"\x00binary\xff", "octet-stream")
    app.add_header("Content-Disposition", "attachment", filename="data.bin")
    text = MIMEText("Zoë's notes", "plain", "utf-8")
    text.add_header("Content-Disposition", "attachment", filename=("utf-8", "", "notes é.txt"))
    attach_mime(email, app)
    attach_mime(email, text)
    assert attachments_of(email) == [
        {"fileName": "data.bin", "contentType": "application/octet-stream",
         "content": b64(b"\x00binary\xff")},
        {"fileName": "notes é.txt", "contentType": "text/plain", "content": b64("Zoë's notes")},
    ]  # fmt: skip


def test_inline_image_is_sent_as_ordinary_attachment() -> None:
    email = make(body="see image")
    email.attach_alternative('<img src="cid:logo">', "text/html")
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<logo>")
    image.add_header("Content-Disposition", "inline", filename="logo.png")
    unnamed = MIMEImage(PNG, "png")
    unnamed.add_header("Content-ID", "<other>")
    attach_mime(email, image)
    attach_mime(email, unnamed)
    assert attachments_of(email) == [
        {"fileName": "logo.png", "contentType": "image/png", "content": b64(PNG)},
        {"fileName": "attachment.png", "contentType": "image/png", "content": b64(PNG)},
    ]


def test_message_rfc822_attachments_are_serialised() -> None:
    forwarded = EmailMessage("Fwd subject", "forwarded body", "x@example.com", ["y@example.com"])
    email = make()
    attach_mime(email, MIMEMessage(forwarded.message()))
    email.attach("fwd.eml", forwarded, "message/rfc822")
    email.attachments.append(("str.eml", "Subject: s\n\nbody text\n", "message/rfc822"))
    found = attachments_of(email)
    assert [a["contentType"] for a in found] == ["message/rfc822"] * 3
    assert [a["fileName"] for a in found] == ["attachment.eml", "fwd.eml", "str.eml"]
    for attachment in found[:2]:
        raw = unb64(attachment["content"])
        assert b"Subject: Fwd subject" in raw and b"forwarded body" in raw
        assert not raw.startswith(b"Content-Type: message/rfc822")
    assert unb64(found[2]["content"]) == b"Subject: s\n\nbody text\n"


def test_multipart_attachment_is_refused() -> None:
    email = make()
    attach_mime(email, MIMEMultipart("alternative"))
    assert "multipart/alternative" in payload_error(email)


def test_attachment_size_limit_names_sizes_not_content() -> None:
    conf = PauboxSettings(max_attachment_bytes=1000)
    email = make()
    email.attach("a.txt", "SECRET-ATTACHMENT" + "x" * 583, "text/plain")
    email.attach("b.bin", b"y" * 400, "application/octet-stream")
    assert len(build_message(email, conf)["attachments"]) == 2  # exactly 1000 bytes: fine
    email.attach("c.bin", b"z", "application/octet-stream")
    error = payload_error(email, conf)
    assert "1001 bytes" in error and "#1: 600" in error and "at most 1000" in error
    assert "SECRET" not in error and "a.txt" not in error
    assert "1001" in payload_error(email, conf)


def test_attachment_of_unknown_shape_is_refused() -> None:
    email = make()
    email.attachments.append("just a string")
    assert "attachment #1" in payload_error(email)


# --- headers ----------------------------------------------------------------------------------


def test_supported_headers_pass_through() -> None:
    email = make(
        headers={
            "X-Clinic-Ref": "A-17",
            "x-lower": "kept as given",
            "list-unsubscribe": "<mailto:u@clinic.example>, <https://clinic.example/u>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "Message-ID": "<abc@clinic.example>",
            "Date": "Fri, 16 Feb 2018 13:00:00 GMT",
        }
    )
    assert build_message(email, CONF)["headers"] == {
        "subject": "Subject",
        "from": SENDER,
        "X-Clinic-Ref": "A-17",
        "x-lower": "kept as given",
        "List-Unsubscribe": "<mailto:u@clinic.example>, <https://clinic.example/u>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


@pytest.mark.parametrize("name", ["Precedence", "Importance", "Sender", "Return-Path", "Bcc"])
def test_unsupported_headers_refused_or_dropped(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    email = make(headers={name: "SECRET-VALUE", "X-Keep": "1"})
    error = payload_error(email)
    assert name in error and "X- headers" in error and "SECRET-VALUE" not in error

    conf = PauboxSettings(drop_unsupported_headers=True)
    with caplog.at_level(logging.WARNING, logger="django_paubox.sending.payload"):
        headers = build_message(email, conf)["headers"]
    assert name not in headers and headers["X-Keep"] == "1"
    records = [r for r in caplog.records if r.name == "django_paubox.sending.payload"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert name in records[0].getMessage() and "SECRET" not in records[0].getMessage()


@pytest.mark.parametrize("value", ["a\r\nBcc: evil@example.net", "a\nb", "a\u2028b"])
def test_header_values_with_line_breaks_are_refused(value: str) -> None:
    error = payload_error(make(headers={"X-Thing": value}))
    assert "X-Thing" in error and "line break" in error and value not in error


@pytest.mark.parametrize("name", ["X Bad", "X-Bad:", "X-\u00e9", ""])
def test_invalid_header_names_are_refused(name: str) -> None:
    assert "not a valid header name" in payload_error(make(headers={name: "v"}))


def test_display_only_to_and_cc_headers() -> None:
    same = make(
        to=["a@example.com", "b@example.com"], headers={"To": "B <B@example.com>, a@example.com"}
    )
    assert build_message(same, CONF)["recipients"] == ["a@example.com", "b@example.com"]

    for conf in (CONF, PauboxSettings(drop_unsupported_headers=True)):
        hidden = make(
            to=["a@example.com", "b@example.com"], headers={"To": "undisclosed-recipients:;"}
        )
        assert "use bcc to hide recipients" in payload_error(hidden, conf)
        other_cc = make(cc=["c@example.com"], headers={"Cc": "d@example.com"})
        assert "Cc header" in payload_error(other_cc, conf)


# --- per-message options and send bodies -------------------------------------------------------


def test_flags_default_from_settings_and_per_message_override() -> None:
    conf = PauboxSettings(allow_non_tls=True, force_secure_notification=True)
    message = build_message(make(), conf)
    assert message["allowNonTLS"] is True and message["forceSecureNotification"] is True
    email = make()
    email.paubox_allow_non_tls = False
    email.paubox_force_secure_notification = False
    message = build_message(email, conf)
    assert message["allowNonTLS"] is False and message["forceSecureNotification"] is False
    email = make()
    email.paubox_force_secure_notification = True
    assert build_message(email, CONF)["forceSecureNotification"] is True


@pytest.mark.parametrize("value", ["false", 0, 1, "True"])
def test_flags_must_be_booleans(value: object) -> None:
    email = make()
    email.paubox_allow_non_tls = value
    assert "paubox_allow_non_tls must be True or False" in payload_error(email)


def test_send_extras_only_what_is_set() -> None:
    email = make()
    assert send_extras(email) == {}
    email.paubox_override_open_tracking = True
    email.paubox_override_link_tracking = False
    email.paubox_unsubscribe_url = "https://clinic.example/unsubscribe?u=1"
    assert send_extras(email) == {
        "override_open_tracking": True,
        "override_link_tracking": False,
        "unsubscribe_url": "https://clinic.example/unsubscribe?u=1",
    }
    message = build_message(email, CONF)
    assert single_send_body(message, send_extras(email)) == {
        "data": {"message": message, **send_extras(email)}
    }


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("paubox_override_open_tracking", "yes"),
        ("paubox_unsubscribe_url", "/relative"),
        ("paubox_unsubscribe_url", "javascript:alert(1)"),
        ("paubox_unsubscribe_url", "https://x.example/\nX: y"),
    ],
)
def test_send_extras_validated(attr: str, value: str) -> None:
    email = make()
    setattr(email, attr, value)
    with pytest.raises(PauboxPayloadError, match=attr):
        send_extras(email)


def test_send_bodies() -> None:
    one, two = build_message(make(), CONF), build_message(make(to=["b@example.com"]), CONF)
    assert single_send_body(one) == {"data": {"message": one}}
    assert single_send_body(one, None) == {"data": {"message": one}}
    assert bulk_send_body((one, two)) == {"data": {"messages": [one, two]}}


def test_errors_never_carry_content() -> None:
    """Each refusal below happens with PHI markers in body, html and attachments."""
    cases: list[tuple[dict[str, Any], PauboxSettings]] = [
        ({"to": ["bad"]}, CONF),
        ({"headers": {"Precedence": "bulk"}}, CONF),
        ({"headers": {"X-A": "x\ny"}}, CONF),
        ({"to": [f"p{i}@example.com" for i in range(101)]}, CONF),
        ({}, PauboxSettings(max_attachment_bytes=5)),
        ({"alternatives": [("<p>PHI-HTML</p>", "text/html"), ("x", "text/enriched")]}, CONF),
    ]
    for kwargs, conf in cases:
        kwargs.setdefault("alternatives", [("<p>PHI-HTML</p>", "text/html")])
        email = make(body="PHI-BODY", **kwargs)
        email.attach("PHI-NAME.txt", "PHI-ATTACHMENT", "text/plain")
        error = payload_error(email, conf)
        assert "PHI" not in error, error
        assert b64("<p>PHI-HTML</p>") not in error


# --- Paubox's OpenAPI spec ----------------------------------------------------------------------

SPEC_PATH = Path(__file__).resolve().parents[2] / "shared" / "paubox-openapi.json"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.skip(f"{SPEC_PATH} not found: the OpenAPI conformance tests did not run")
    spec = copy.deepcopy(json.loads(SPEC_PATH.read_text(encoding="utf-8")))
    schemas = spec["components"]["schemas"]
    # Correct the spec's two documented slips (see shared/paubox-api.md):
    # 1. MessageContent says oneOf text/plain | text/html, but a message with both is valid
    #    (the service takes both; Paubox's SDK sends both): anyOf is meant.
    content = schemas["MessageContent"]
    content["anyOf"] = content.pop("oneOf")
    # 2. MessageHeaders lists "additionalProperties" as if it were a header name; it is meant as
    #    the JSON Schema keyword: any further (X-) header is a string.
    headers = schemas["MessageHeaders"]
    headers["additionalProperties"] = headers["properties"].pop("additionalProperties")
    return spec


@pytest.fixture(scope="module")
def validators(spec: dict[str, Any]) -> dict[str, Any]:
    from jsonschema import Draft4Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    # OpenAPI 3.0 schema objects are (close to) JSON Schema draft 4; the whole document is one
    # resource so that "#/components/schemas/..." resolves inside it.
    base = "urn:paubox-openapi"
    registry = Registry().with_resource(
        base, Resource.from_contents(spec, default_specification=DRAFT4)
    )
    return {
        name: Draft4Validator({"$ref": f"{base}#/components/schemas/{name}"}, registry=registry)
        for name in ("SingleSendRequest", "BulkSendRequest")
    }


def assert_valid(validators: dict[str, Any], spec: dict[str, Any], messages: list[dict]) -> None:
    schemas = spec["components"]["schemas"]
    for message in messages:
        validators["SingleSendRequest"].validate(single_send_body(message))
        # The spec allows unknown keys; a misspelt key would pass unnoticed, so check names too.
        assert set(message) <= set(schemas["Message"]["properties"])
        for attachment in message.get("attachments", []):
            assert set(attachment) == set(schemas["Attachment"]["required"])
            unb64(attachment["content"])
        if "text/html" in message["content"]:
            unb64(message["content"]["text/html"])
    validators["BulkSendRequest"].validate(bulk_send_body(messages))


def test_spec_corrections_are_needed(validators: dict[str, Any]) -> None:
    """The corrected schema accepts both parts and still refuses bad shapes."""
    both = build_message(make(alternatives=[("<p>x</p>", "text/html")]), CONF)
    validators["SingleSendRequest"].validate(single_send_body(both))
    bad = copy.deepcopy(both)
    bad["content"] = {}
    assert not validators["SingleSendRequest"].is_valid(single_send_body(bad))
    bad = copy.deepcopy(both)
    bad["headers"]["X-Number"] = 5
    assert not validators["SingleSendRequest"].is_valid(single_send_body(bad))
    assert not validators["BulkSendRequest"].is_valid({"data": {"messages": [{"recipients": []}]}})


def test_examples_validate_against_spec(validators: dict[str, Any], spec: dict[str, Any]) -> None:
    full = make(
        body="text",
        to=['"Doe, Jane" <jane@example.com>', "Zoë <zoe@bücher.example>"],
        cc=["cc@example.com"],
        bcc=["bcc@example.com"],
        reply_to=["r1@clinic.example", "R Two <r2@clinic.example>"],
        headers={"X-Ref": "1", "List-Unsubscribe": "<https://clinic.example/u>"},
        alternatives=[("<p>html</p>", "text/html")],
    )
    full.attach("a.pdf", b"%PDF", "application/pdf")
    attach_mime(full, MIMEImage(PNG, "png"))
    full.paubox_force_secure_notification = True
    full.paubox_unsubscribe_url = "https://clinic.example/u"
    html_only = make(body="<p>h</p>")
    html_only.content_subtype = "html"
    messages = [build_message(e, CONF) for e in (full, html_only, make())]
    assert_valid(validators, spec, messages)
    validators["SingleSendRequest"].validate(single_send_body(messages[0], send_extras(full)))


# --- generated messages ------------------------------------------------------------------------

# Display names: anything printable, including specials, quotes, backslashes and any script.
names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30).map(
    str.strip
)
local_parts = st.from_regex(r"[a-zA-Z0-9+_-]{1,10}(\.[a-zA-Z0-9+_-]{1,10}){0,2}", fullmatch=True)
domains = st.from_regex(r"([a-z0-9äöüéñ]{1,10}\.){1,2}[a-z]{2,6}", fullmatch=True)
addresses = st.builds(lambda n, lp, d: str(Address(n, lp, d)), names, local_parts, domains)
subjects = st.text(
    st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\x00\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029",
    ),
    max_size=60,
)
bodies = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
mimetypes_ = st.sampled_from([None, "application/pdf", "image/png", "text/plain", "text/csv"])
filenames = st.one_of(
    st.none(), st.from_regex(r"[\w\- ]{1,12}\.(pdf|png|txt|csv|bin)", fullmatch=True)
)
attachments = st.lists(
    st.tuples(filenames, st.one_of(st.binary(max_size=300), bodies), mimetypes_), max_size=3
)


@settings(max_examples=500, deadline=None)
@given(name=names, local=local_parts, domain=domains)
def test_any_display_name_round_trips(name: str, local: str, domain: str) -> None:
    """Whatever the name (commas, quotes, backslashes, any script), the stdlib parser reads back
    exactly the name and address we formatted."""
    formatted = ParsedAddress(name, f"{local}@{domain}").formatted
    assert parsed(formatted) == (name, f"{local}@{domain}")
    assert parse_address(formatted, "to") == ParsedAddress(name, f"{local}@{domain}")
    if name and any(c in name for c in ',;:"()<>@[]\\.'):
        assert formatted.startswith('"')


@st.composite
def emails(draw: st.DrawFn) -> EmailMultiAlternatives:
    body = draw(bodies)
    html = draw(st.one_of(st.none(), bodies.map(lambda s: f"<p>{s}</p>")))
    if not body and not html:
        body = "fallback"
    email = EmailMultiAlternatives(
        subject=draw(subjects),
        body=body,
        from_email=draw(addresses),
        to=draw(st.lists(addresses, min_size=1, max_size=4)),
        cc=draw(st.lists(addresses, max_size=3)),
        bcc=draw(st.lists(addresses, max_size=3)),
        reply_to=draw(st.lists(addresses, max_size=2)),
        headers=draw(
            st.dictionaries(
                st.from_regex(r"X-[A-Za-z0-9-]{1,10}", fullmatch=True), subjects, max_size=2
            )
        ),
    )
    if html:
        email.attach_alternative(html, "text/html")
    for attachment in draw(attachments):
        email.attachments.append(attachment)
    email.paubox_allow_non_tls = draw(st.one_of(st.none(), st.booleans()))
    return email


def parsed(formatted: str) -> tuple[str, str]:
    token, rest = header_parser.get_mailbox(formatted)
    assert rest == ""
    return (token.display_name or "", f"{token.local_part}@{token.domain}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(emails(), min_size=1, max_size=3))
def test_generated_messages_validate_and_round_trip(
    batch: list[EmailMultiAlternatives], validators: dict[str, Any], spec: dict[str, Any]
) -> None:
    messages = [build_message(email, CONF) for email in batch]
    assert_valid(validators, spec, messages)
    for email, message in zip(batch, messages, strict=True):
        # Each recipient, re-parsed, is the address and display name that was given.
        sent = message["recipients"] + message.get("cc", []) + message.get("bcc", [])
        given_addresses = {
            parsed(a)[1].lower(): parsed(a) for a in reversed(email.to + email.cc + email.bcc)
        }
        assert sorted(parsed(s)[1].lower() for s in sent) == sorted(given_addresses)
        for formatted in sent:
            name, addr = parsed(formatted)
            assert (name.strip(), addr) == (given_addresses[addr.lower()][0].strip(), addr)
        assert [addr for _, addr in message_recipients(email)] == [
            parsed(s)[1].lower() for s in sent
        ]
        from_name, from_addr = parsed(email.from_email)
        assert parsed(message["headers"]["from"]) == (from_name.strip(), from_addr)
        if email.alternatives:
            assert unb64(message["content"]["text/html"]).decode() == email.alternatives[0][0]
        assert message["content"].get("text/plain", "") == email.body
        for att, (_, content, _) in zip(
            message.get("attachments", []), email.attachments, strict=True
        ):
            raw = content if isinstance(content, bytes) else content.encode("utf-8")
            assert unb64(att["content"]) == raw
        assert message["allowNonTLS"] is bool(email.paubox_allow_non_tls)
        json.dumps(message)
