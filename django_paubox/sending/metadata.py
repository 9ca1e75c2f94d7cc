"""``paubox_metadata`` and ``paubox_tags`` as custom ``X-`` headers, and the link header (pure).

Paubox carries any ``X-`` header and echoes them in every webhook event (``custom_headers``),
so what a message is about comes back with each event. The names, and the limits enforced here
before any HTTP (``PauboxPayloadError`` otherwise), are in ``docs/metadata.md``:

- ``X-Paubox-Meta-<key>: <value>``, one per metadata item;
- ``X-Paubox-Tags: <tag>,<tag>``;
- ``X-Paubox-Ref: <row id>:<signature>``, added when the message is sent, so that an event
  whose tracking id is unknown here (it arrived before the send was recorded, or the send's
  answer was lost) still finds its row. Signed with ``SECRET_KEY``: another deployment sharing
  the Paubox account cannot link its events to this one's rows.

Metadata is not PHI by contract (recipients can read these headers in the raw message), and it
is never logged: error texts name a key, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.core import signing

from ..exceptions import PauboxPayloadError

META_PREFIX = "X-Paubox-Meta-"
TAGS_HEADER = "X-Paubox-Tags"
REF_HEADER = "X-Paubox-Ref"

MAX_KEYS = 10
MAX_KEY_LENGTH = 40
MAX_VALUE_LENGTH = 200
MAX_TAGS = 10
MAX_TAG_LENGTH = 64

#: A key becomes part of a header name: letters, digits, ``_`` and ``-``, starting alnum.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
#: A tag travels in a comma-separated header: no commas, quotes or control characters.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/ -]*\Z")
_REF_SALT = "django_paubox.ref"


def read_metadata(email: Any) -> dict[str, str]:
    """``email.paubox_metadata`` validated (``{}`` when unset)."""
    value = getattr(email, "paubox_metadata", None)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PauboxPayloadError("Paubox: paubox_metadata must be a dict of str to str.")
    if len(value) > MAX_KEYS:
        raise PauboxPayloadError(
            f"Paubox: paubox_metadata has {len(value)} keys; at most {MAX_KEYS} are sent."
        )
    out: dict[str, str] = {}
    seen: set[str] = set()
    for key, item in value.items():
        if not isinstance(key, str):
            raise PauboxPayloadError("Paubox: paubox_metadata keys must be str.")
        if len(key) > MAX_KEY_LENGTH or not _KEY.match(key):
            raise PauboxPayloadError(
                f"Paubox: the paubox_metadata key {key[:20]!r} cannot be a header "
                f"name: use 1 to {MAX_KEY_LENGTH} letters, digits, _ or -, starting with a "
                "letter or digit."
            )
        if key.lower() in seen:  # header names ignore case
            raise PauboxPayloadError(
                f"Paubox: the paubox_metadata key {key!r} differs from another only by case."
            )
        seen.add(key.lower())
        if not isinstance(item, str):
            raise PauboxPayloadError(
                f"Paubox: the paubox_metadata value of {key!r} must be a str (no nesting)."
            )
        if len(item) > MAX_VALUE_LENGTH or not _printable(item):
            raise PauboxPayloadError(
                f"Paubox: the paubox_metadata value of {key!r} must be at most "
                f"{MAX_VALUE_LENGTH} printable characters (no line breaks)."
            )
        out[key] = item
    return out


def read_tags(email: Any) -> list[str]:
    """``email.paubox_tags`` validated, duplicates dropped (``[]`` when unset)."""
    value = getattr(email, "paubox_tags", None)
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise PauboxPayloadError("Paubox: paubox_tags must be a list of str.")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str):
            raise PauboxPayloadError("Paubox: paubox_tags must be a list of str.")
        if len(tag) > MAX_TAG_LENGTH or not _TAG.match(tag):
            raise PauboxPayloadError(
                f"Paubox: the tag {tag[:20]!r} is not allowed: use 1 to "
                f"{MAX_TAG_LENGTH} letters, digits, spaces or _ . : / -, starting with a "
                "letter or digit."
            )
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise PauboxPayloadError(
            f"Paubox: paubox_tags has {len(tags)} tags; at most {MAX_TAGS} are sent."
        )
    return tags


def metadata_headers(metadata: Mapping[str, str], tags: list[str]) -> dict[str, str]:
    """The ``X-`` headers that carry ``metadata`` and ``tags`` (validated already)."""
    headers = {f"{META_PREFIX}{key}": value for key, value in metadata.items()}
    if tags:
        headers[TAGS_HEADER] = ",".join(tags)
    return headers


def ref_value(message_pk: int) -> str:
    """The ``X-Paubox-Ref`` value naming one ``Message`` row."""
    return signing.Signer(salt=_REF_SALT).sign(str(message_pk))


def read_ref(custom_headers: object) -> int | None:
    """The ``Message`` id an event's ``custom_headers`` name, if its signature is ours."""
    if not isinstance(custom_headers, Mapping):
        return None
    value = next(
        (v for k, v in custom_headers.items() if str(k).lower() == REF_HEADER.lower()), None
    )
    if not isinstance(value, str) or len(value) > 200:
        return None
    try:
        pk = signing.Signer(salt=_REF_SALT).unsign(value.strip())
    except signing.BadSignature:
        return None
    return int(pk) if pk.isdigit() else None


def _printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)
