"""Turn a Django ``EmailMessage`` into Paubox API JSON: pure functions, no I/O.

Everything Paubox cannot take is refused here, with :class:`PauboxPayloadError`, before any HTTP,
so that a bad message never costs a request (or a message of the monthly allowance). Error texts
may name an address, a header name, a MIME type or a size, never a body, subject, header value,
attachment name or attachment content: they end up in logs and in the admin.

Choices where Paubox differs from SMTP (also in ``docs/``):

- **Addresses** are sent as ``Name <addr>`` with the display name as readable Unicode (quoted when
  it holds specials such as a comma): Paubox takes UTF-8 JSON, so nothing is RFC 2047-encoded,
  and international domains are kept as written. Each ``to``/``cc``/``bcc`` entry must hold
  exactly one address, as Django's SMTP backend requires. An address given twice is sent once,
  in the first of to, cc, bcc that names it.
- **Reply-To**: Paubox takes one string, so several reply-to addresses are joined with ``", "``.
  A ``Reply-To`` in ``extra_headers`` replaces ``reply_to``, as in Django.
- **From** / **Subject** in ``extra_headers`` replace ``from_email`` / ``subject`` (Paubox has no
  separate envelope sender).
- **To** / **Cc** in ``extra_headers`` only change what Django's SMTP backend *displays*. Paubox
  shows exactly the addresses it delivers to, so such a header is accepted only when it names the
  same addresses as ``to`` / ``cc``; otherwise the message is refused (even with
  ``DROP_UNSUPPORTED_HEADERS``), because sending it anyway would show every recipient the
  addresses the header was meant to hide. Use ``bcc`` to hide recipients.
- **Headers**: Paubox carries only ``X-`` headers, ``List-Unsubscribe`` and
  ``List-Unsubscribe-Post`` besides from, subject and reply-to. ``Message-ID`` and ``Date`` are
  dropped silently (Paubox sets its own); any other header is refused, or dropped and logged by
  name when ``PAUBOX["DROP_UNSUPPORTED_HEADERS"]`` is true.
- **Content**: the HTML part is base64-encoded (standard alphabet, no line breaks), as Paubox's
  own SDK does, so no HTML escaping question arises. Alternatives other than one text/plain and
  one text/html are refused.
- **Attachments**: inline images (``Content-ID``) are sent as ordinary attachments: Paubox has
  no ``cid:`` support, so HTML that references ``cid:...`` will show a broken image. A missing
  MIME type is guessed from the file name (else ``application/octet-stream``); a missing name
  becomes ``attachment`` plus an extension for the type. ``str`` content is encoded as UTF-8.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import re
from collections.abc import Collection
from email.message import Message as MIMEMessageBase
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from django.core.mail import EmailMessage
from django.utils.encoding import force_str

from ..conf import PauboxSettings
from ..exceptions import PauboxHeaderError, PauboxPayloadError, RecipientsSuppressed
from .addresses import ParsedAddress, parse_address, parse_address_list
from .metadata import metadata_headers, read_metadata, read_tags
from .text import LINE_BREAKS, is_control, text_of

logger = logging.getLogger(__name__)

RECIPIENT_KINDS = ("to", "cc", "bcc")
DEFAULT_ATTACHMENT_MIMETYPE = "application/octet-stream"

#: Headers Paubox carries under their canonical spelling (keyed by lower-case name).
PASSTHROUGH_HEADERS = {
    "list-unsubscribe": "List-Unsubscribe",
    "list-unsubscribe-post": "List-Unsubscribe-Post",
}
#: Headers Django (or its users) add that Paubox sets itself: dropped without a word.
SILENTLY_DROPPED_HEADERS = frozenset({"message-id", "date"})
#: ``extra_headers`` that change another field of the payload rather than being carried.
_OVERRIDE_HEADERS = frozenset({"from", "reply-to", "subject", "to", "cc"})

#: RFC 5322 field name: printable ASCII except the colon.
_HEADER_NAME = re.compile(r"[!-9;-~]+\Z")


class _File(NamedTuple):
    filename: str
    content: bytes
    mimetype: str


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def build_message(
    email: EmailMessage, conf: PauboxSettings, *, with_content: bool | None = None
) -> dict[str, Any]:
    """The Paubox ``message`` object for ``email`` (see the module docstring for the rules).

    ``with_content=False`` leaves ``content`` out, as ``/templated_messages`` wants (the
    template is the content); the default (``None``) does so exactly when the message names a
    template (``paubox_template_name``). Raises :class:`PauboxPayloadError` before any HTTP
    for anything Paubox cannot take.
    """
    if with_content is None:
        with_content = getattr(email, "paubox_template_name", None) is None
    recipients = _unique_recipients(email)
    if not recipients:
        raise PauboxPayloadError("Paubox: the message has no recipients (to, cc or bcc).")
    if len(recipients) > conf.max_recipients:
        raise PauboxPayloadError(
            f"Paubox: the message has {len(recipients)} recipients (to + cc + bcc); Paubox "
            f"takes at most {conf.max_recipients} per message. Split it into several messages."
        )
    by_kind: dict[str, list[str]] = {kind: [] for kind in RECIPIENT_KINDS}
    for kind, address in recipients:
        by_kind[kind].append(address.formatted)
    if not by_kind["to"]:
        raise PauboxPayloadError(
            "Paubox: the message has no 'to' recipient; Paubox needs at least one (cc and bcc "
            "alone are not enough). Put an address in `to`, for example the sender's own."
        )

    message: dict[str, Any] = {"recipients": by_kind["to"]}
    if by_kind["cc"]:
        message["cc"] = by_kind["cc"]
    if by_kind["bcc"]:
        message["bcc"] = by_kind["bcc"]
    message["headers"] = _headers(email, conf)
    message["headers"].update(metadata_headers(read_metadata(email), read_tags(email)))
    message["allowNonTLS"] = _flag(email, "paubox_allow_non_tls", conf.allow_non_tls)
    message["forceSecureNotification"] = _flag(
        email, "paubox_force_secure_notification", conf.force_secure_notification
    )
    if with_content:
        message["content"] = _content(email)
    attachments = _attachments(email, conf)
    if attachments:
        message["attachments"] = attachments
    return message


def message_recipients(email: EmailMessage) -> list[tuple[str, str]]:
    """``[(kind, address)]`` for to, cc and bcc in that order, one entry per address.

    ``address`` is the bare address in lower case, as Paubox's receipts name recipients; an
    address given twice keeps the first kind. Raises :class:`PauboxPayloadError` for an invalid
    address, as :func:`build_message` does.
    """
    return [(kind, address.addr_spec.lower()) for kind, address in _unique_recipients(email)]


def without_recipients(message: dict[str, Any], addresses: Collection[str]) -> dict[str, Any]:
    """``message`` (from :func:`build_message`) without the bare ``addresses`` (lower case).

    Paubox needs a ``to``: when none is left, the cc recipients become ``to`` (they were shown
    anyway). Raises :class:`RecipientsSuppressed` when nobody, or only bcc, is left (sending
    it would show a bcc recipient's address in ``To``).
    """
    out = dict(message)
    for key, kind in (("recipients", "to"), ("cc", "cc"), ("bcc", "bcc")):
        kept = [
            entry
            for entry in message.get(key) or ()
            if parse_address(entry, kind).addr_spec.lower() not in addresses
        ]
        if kept or key == "recipients":
            out[key] = kept
        else:
            out.pop(key, None)
    if not out["recipients"] and out.get("cc"):
        out["recipients"] = out.pop("cc")
    if not out["recipients"]:
        raise RecipientsSuppressed(
            "Not sent: every recipient is on the suppression list"
            + (" (only bcc recipients were left)." if out.get("bcc") else ".")
        )
    return out


def recipient_display_names(email: EmailMessage) -> dict[str, str]:
    """``{address: display name}`` for the recipients given with a name ("Grace Hopper
    <grace@example.com>"); addresses as in :func:`message_recipients`. Recorded beside the
    address (``Delivery.display_name``) so that the admin finds a patient by name."""
    return {
        address.addr_spec.lower(): address.display_name
        for _, address in _unique_recipients(email)
        if address.display_name
    }


def sendable_recipient_count(email: EmailMessage) -> int:
    """How many recipients Django counts (to + cc + bcc, empty entries left out).

    Zero means "skip this message", as Django's backends do; nothing is parsed here.
    """
    return len(email.recipients())


def send_extras(email: EmailMessage) -> dict[str, Any]:
    """Per-message fields that go beside ``data.message`` in a single send (only those set).

    From ``email.paubox_override_open_tracking``, ``email.paubox_override_link_tracking``
    (booleans) and ``email.paubox_unsubscribe_url`` (an absolute URL). The bulk endpoint has no
    place for them.
    """
    extras: dict[str, Any] = {}
    for key in ("override_open_tracking", "override_link_tracking"):
        value = getattr(email, f"paubox_{key}", None)
        if value is not None:
            extras[key] = _require_bool(f"paubox_{key}", value)
    url = getattr(email, "paubox_unsubscribe_url", None)
    if url is not None:
        extras["unsubscribe_url"] = _unsubscribe_url(url)
    return extras


# ---------------------------------------------------------------------------------------------
# Addresses
# ---------------------------------------------------------------------------------------------


def _unique_recipients(email: EmailMessage) -> list[tuple[str, ParsedAddress]]:
    seen: set[str] = set()
    out: list[tuple[str, ParsedAddress]] = []
    for kind in RECIPIENT_KINDS:
        entries = getattr(email, kind, None) or ()
        if isinstance(entries, str):
            raise PauboxPayloadError(f"Paubox: `{kind}` must be a list of addresses, not a string.")
        for entry in entries:
            if not entry:
                continue  # Django's recipients() leaves out empty entries too
            address = parse_address(entry, kind)
            key = address.addr_spec.lower()
            if key not in seen:
                seen.add(key)
                out.append((kind, address))
    return out


# ---------------------------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------------------------


def _headers(email: EmailMessage, conf: PauboxSettings) -> dict[str, str]:
    extra = _extra_headers(email)
    overrides = {
        name.lower(): (name, value) for name, value in extra if name.lower() in _OVERRIDE_HEADERS
    }

    if "from" in overrides:
        from_addresses = parse_address_list(overrides["from"][1], "extra_headers['From']")
        field = "extra_headers['From']"
    else:
        from_addresses = parse_address_list(email.from_email, "from_email")
        field = "from_email"
    if len(from_addresses) != 1:
        raise PauboxPayloadError(
            f"Paubox: {field} must hold exactly one address (it holds {len(from_addresses)})."
        )

    if "subject" in overrides:
        subject = overrides["subject"][1]
    else:
        subject = "" if email.subject is None else force_str(email.subject)
        if any(c in LINE_BREAKS for c in subject):
            raise PauboxHeaderError("Paubox: the subject contains a line break.")
    if "\x00" in subject:  # no header may hold one, and PostgreSQL cannot store it
        raise PauboxPayloadError("Paubox: the subject contains a NUL character.")

    if "reply-to" in overrides:
        reply_to = parse_address_list(overrides["reply-to"][1], "extra_headers['Reply-To']")
    else:
        if isinstance(email.reply_to, str):
            raise PauboxPayloadError(
                "Paubox: `reply_to` must be a list of addresses, not a string."
            )
        reply_to = [
            address
            for entry in email.reply_to or ()
            for address in parse_address_list(entry, "reply_to")
        ]

    for kind in ("to", "cc"):
        if kind in overrides:
            _check_display_only_header(email, kind, overrides[kind])

    headers: dict[str, str] = {"subject": subject, "from": from_addresses[0].formatted}
    if reply_to:
        headers["reply-to"] = ", ".join(address.formatted for address in reply_to)
    for name, value in extra:
        lower = name.lower()
        if lower in _OVERRIDE_HEADERS or lower in SILENTLY_DROPPED_HEADERS:
            continue
        if lower.startswith("x-"):
            headers[name] = value
        elif lower in PASSTHROUGH_HEADERS:
            headers[PASSTHROUGH_HEADERS[lower]] = value
        elif conf.drop_unsupported_headers:
            logger.warning("Paubox: dropped the %s header, which Paubox cannot carry.", name)
        else:
            raise PauboxPayloadError(
                f"Paubox: the {name} header cannot be sent: Paubox only carries X- headers, "
                "List-Unsubscribe, List-Unsubscribe-Post and reply-to. Remove it, or set "
                'PAUBOX["DROP_UNSUPPORTED_HEADERS"] = True to drop such headers.'
            )
    return headers


def _extra_headers(email: EmailMessage) -> list[tuple[str, str]]:
    """``email.extra_headers`` as validated ``(name, value)`` strings."""
    out: list[tuple[str, str]] = []
    for raw_name, raw_value in (email.extra_headers or {}).items():
        name = force_str(raw_name)
        if any(c in LINE_BREAKS for c in name):
            raise PauboxHeaderError(f"Paubox: the header name {name!r} contains a line break.")
        if not _HEADER_NAME.match(name):
            raise PauboxPayloadError(f"Paubox: {name!r} is not a valid header name.")
        value = "" if raw_value is None else force_str(raw_value)
        if any(c in LINE_BREAKS for c in value):
            raise PauboxHeaderError(
                f"Paubox: the value of the {name} header contains a line break."
            )
        if "\x00" in value:
            raise PauboxPayloadError(f"Paubox: the value of the {name} header contains a NUL.")
        out.append((name, value))
    return out


def _check_display_only_header(email: EmailMessage, kind: str, header: tuple[str, str]) -> None:
    name, value = header
    try:
        shown = {a.addr_spec.lower() for a in parse_address_list(value, f"extra_headers[{name!r}]")}
    except PauboxPayloadError:
        shown = None
    actual = {
        parse_address(entry, kind).addr_spec.lower()
        for entry in getattr(email, kind) or ()
        if entry
    }
    if shown != actual:
        raise PauboxPayloadError(
            f"Paubox: the {name} header in extra_headers names other addresses than `{kind}`. "
            f"Paubox shows exactly the addresses it delivers to, so it cannot send a {name} "
            "header that differs from them; use bcc to hide recipients."
        )


# ---------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------


def _content(email: EmailMessage) -> dict[str, str]:
    text: str | None = None
    html: str | None = None
    body = text_of(email.body, "the body")
    subtype = email.content_subtype
    if subtype == "plain":
        text = body
    elif subtype == "html":
        html = body
    else:
        raise PauboxPayloadError(
            f"Paubox: a text/{subtype} body cannot be sent; Paubox takes text/plain and text/html."
        )
    for part, mimetype in getattr(email, "alternatives", None) or ():
        mimetype = force_str(mimetype).lower()
        if mimetype == "text/html" and not html:
            html = text_of(part, "the text/html alternative")
        elif mimetype == "text/plain" and not text:
            text = text_of(part, "the text/plain alternative")
        elif mimetype in ("text/html", "text/plain"):
            raise PauboxPayloadError(f"Paubox: the message has more than one {mimetype} part.")
        else:
            raise PauboxPayloadError(
                f"Paubox: an alternative of type {mimetype} cannot be sent; Paubox takes one "
                "text/plain and one text/html part."
            )
    content: dict[str, str] = {}
    if text:
        content["text/plain"] = text
    if html:
        content["text/html"] = base64.b64encode(html.encode("utf-8")).decode("ascii")
    if not content:
        raise PauboxPayloadError(
            "Paubox: the message has no content (empty body and no HTML); Paubox needs "
            "text/plain or text/html."
        )
    return content


# ---------------------------------------------------------------------------------------------
# Attachments
# ---------------------------------------------------------------------------------------------


def _attachments(email: EmailMessage, conf: PauboxSettings) -> list[dict[str, str]]:
    files = [_file(attachment, n) for n, attachment in enumerate(email.attachments or (), 1)]
    total = sum(len(f.content) for f in files)
    if total > conf.max_attachment_bytes:
        sizes = ", ".join(f"#{n}: {len(f.content)}" for n, f in enumerate(files, 1))
        raise PauboxPayloadError(
            f"Paubox: the attachments total {total} bytes ({sizes}); Paubox takes at most "
            f'{conf.max_attachment_bytes} bytes per message (PAUBOX["MAX_ATTACHMENT_BYTES"]).'
        )
    return [
        {
            "fileName": f.filename,
            "contentType": f.mimetype,
            "content": base64.b64encode(f.content).decode("ascii"),
        }
        for f in files
    ]


def _file(attachment: Any, number: int) -> _File:
    """Normalise one ``email.attachments`` item (tuple, ``EmailAttachment`` or MIME part)."""
    if isinstance(attachment, MIMEMessageBase):
        filename: Any = attachment.get_filename()
        mimetype: Any = attachment.get_content_type()
        content = _mime_part_bytes(attachment, number)
    else:
        try:
            filename, raw, mimetype = attachment
        except (TypeError, ValueError):
            raise PauboxPayloadError(
                f"Paubox: attachment #{number} is neither a (filename, content, mimetype) tuple "
                "nor a MIME part."
            ) from None
        content = _content_bytes(raw, number)
    filename = force_str(filename) if filename else ""
    mimetype = force_str(mimetype).strip().lower() if mimetype else ""
    if any(is_control(c) for c in filename + mimetype):
        raise PauboxPayloadError(
            f"Paubox: the name or type of attachment #{number} contains a control character."
        )
    if not mimetype and filename:
        mimetype = mimetypes.guess_type(filename)[0] or ""
    mimetype = mimetype or DEFAULT_ATTACHMENT_MIMETYPE
    if "/" not in mimetype:
        raise PauboxPayloadError(f"Paubox: attachment #{number} has no valid MIME type.")
    if not filename:
        filename = "attachment" + (mimetypes.guess_extension(mimetype) or "")
    return _File(filename, content, mimetype)


def _content_bytes(raw: Any, number: int) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, (bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, EmailMessage):  # message/rfc822 given as a Django message
        return raw.message().as_bytes()
    if isinstance(raw, MIMEMessageBase):  # message/rfc822 given as a stdlib message
        return raw.as_bytes()
    if raw is None:
        raise PauboxPayloadError(f"Paubox: attachment #{number} has no content.")
    return force_str(raw).encode("utf-8")


def _mime_part_bytes(part: MIMEMessageBase, number: int) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload(0) if part.is_multipart() else part.get_payload()
        if isinstance(inner, MIMEMessageBase):
            return inner.as_bytes()
        return force_str(inner).encode("utf-8")
    if part.is_multipart():
        raise PauboxPayloadError(
            f"Paubox: attachment #{number} is a {part.get_content_type()} part; Paubox takes "
            "only single files as attachments."
        )
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    return b""


# ---------------------------------------------------------------------------------------------
# Per-message options
# ---------------------------------------------------------------------------------------------


def _flag(email: EmailMessage, attr: str, default: bool) -> bool:
    value = getattr(email, attr, None)
    return bool(default) if value is None else _require_bool(attr, value)


def _require_bool(attr: str, value: Any) -> bool:
    # A string such as "false" would be truthy: refuse rather than guess (allowNonTLS matters).
    if not isinstance(value, bool):
        raise PauboxPayloadError(
            f"Paubox: message.{attr} must be True or False, not a {type(value).__name__}."
        )
    return value


def _unsubscribe_url(value: Any) -> str:
    url = force_str(value).strip()
    parts = urlsplit(url)
    if (
        any(is_control(c) for c in url)
        or parts.scheme not in ("http", "https", "mailto")
        or not (parts.netloc or parts.scheme == "mailto")
    ):
        raise PauboxPayloadError(
            "Paubox: message.paubox_unsubscribe_url must be an absolute http(s) or mailto URL."
        )
    return url
