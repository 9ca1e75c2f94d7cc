"""One-click unsubscribe (RFC 8058): which messages get it, the signed token, the headers (pure).

A ``List-Unsubscribe`` header holds one URL per method, not one per recipient, so a token names
exactly one address and only single-recipient messages get the header: ``paubox_unsubscribe =
True`` on a message with several recipients is refused before any HTTP, and
``PAUBOX["UNSUBSCRIBE_BULK"]`` skips such messages. A caller's own ``List-Unsubscribe`` header
wins. The token is Django-signed (salted, timestamped) and expires after
``PAUBOX["UNSUBSCRIBE_MAX_AGE_DAYS"]`` days; it carries the address and the message's row id
(readable, not secret: the same address the recipient's mail shows).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core import signing
from django.urls import NoReverseMatch, reverse

from ..conf import PauboxSettings
from ..exceptions import PauboxPayloadError

_SALT = "django_paubox.unsubscribe"
URL_NAME = "django_paubox:unsubscribe"
POST_VALUE = "List-Unsubscribe=One-Click"


def unsubscribe_target(
    email: Any, recipients: list[tuple[str, str]], conf: PauboxSettings, *, bulk: bool
) -> str | None:
    """The address to put in the unsubscribe token, or None when the message gets no header.

    ``recipients`` is :func:`~django_paubox.sending.payload.message_recipients`; ``bulk``
    says the message is one of a multi-message send (``UNSUBSCRIBE_BULK`` applies).
    """
    wanted = getattr(email, "paubox_unsubscribe", None)
    if wanted is None:
        wanted = bulk and conf.unsubscribe_bulk and len(recipients) == 1
    if not wanted:
        return None
    headers = getattr(email, "extra_headers", None) or {}
    if any(str(name).lower() == "list-unsubscribe" for name in headers):
        return None  # the caller's own header wins
    if len(recipients) != 1:
        raise PauboxPayloadError(
            f"Paubox: paubox_unsubscribe needs a message with exactly one recipient (this one "
            f"has {len(recipients)}): a List-Unsubscribe header holds one URL, and its token "
            "names one address. Send one message per recipient."
        )
    if not conf.public_url:
        raise PauboxPayloadError(
            'Paubox: paubox_unsubscribe needs PAUBOX["PUBLIC_URL"] (e.g. '
            '"https://portal.clinic.example") to build the absolute unsubscribe URL.'
        )
    return recipients[0][1]


def make_token(address: str, message_pk: int | None) -> str:
    """A signed, timestamped token naming ``address`` (and the message that carried it)."""
    return signing.dumps({"a": address.lower(), "m": message_pk}, salt=_SALT, compress=True)


def read_token(token: str, max_age_days: float) -> tuple[str, int | None]:
    """``(address, message id or None)``; raises ``signing.BadSignature`` (or its subclass
    ``SignatureExpired``) for a tampered, foreign or expired token."""
    data = signing.loads(token, salt=_SALT, max_age=timedelta(days=max_age_days))
    if not isinstance(data, dict) or not isinstance(data.get("a"), str) or "@" not in data["a"]:
        raise signing.BadSignature("not an unsubscribe token")
    message = data.get("m")
    return data["a"], message if isinstance(message, int) else None


def unsubscribe_url(token: str, conf: PauboxSettings) -> str:
    """The absolute one-click URL: ``PUBLIC_URL`` + the ``django_paubox:unsubscribe`` path."""
    try:
        path = reverse(URL_NAME, args=[token])
    except NoReverseMatch:
        raise PauboxPayloadError(
            "Paubox: one-click unsubscribe needs django_paubox.urls in your URLconf "
            '(path("paubox/", include("django_paubox.urls"))).'
        ) from None
    return conf.public_url.rstrip("/") + path


def unsubscribe_headers(
    address: str, message_pk: int | None, conf: PauboxSettings
) -> dict[str, str]:
    """``List-Unsubscribe`` (the https URL, then ``mailto:`` if configured) and
    ``List-Unsubscribe-Post``."""
    links = [f"<{unsubscribe_url(make_token(address, message_pk), conf)}>"]
    if conf.unsubscribe_mailto:
        links.append(f"<mailto:{conf.unsubscribe_mailto}?subject=unsubscribe>")
    return {"List-Unsubscribe": ", ".join(links), "List-Unsubscribe-Post": POST_VALUE}
