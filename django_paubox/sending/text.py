"""Text as a payload may hold it: what counts as a line break or control character (header
injection), and bytes that must be UTF-8."""

from __future__ import annotations

import unicodedata
from typing import Any

from django.utils.encoding import DjangoUnicodeDecodeError, force_str

from ..exceptions import PauboxPayloadError

#: Every character that ``str.splitlines`` (and so Python-based mail software) treats as a line
#: break: any of them in a header would allow header injection.
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def is_control(char: str) -> bool:
    return char in LINE_BREAKS or unicodedata.category(char) == "Cc"


def text_of(value: Any, what: str) -> str:
    if value is None:
        return ""
    try:
        return force_str(value)
    except DjangoUnicodeDecodeError:
        raise PauboxPayloadError(f"Paubox: {what} is bytes that are not UTF-8.") from None
