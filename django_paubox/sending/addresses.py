"""Email addresses as Paubox takes them: one mailbox per entry, display names readable.

Parsing uses the standard library's strict RFC 5322 parser; results are cached, since a bulk
send repeats the same From, Reply-To and often the same recipients."""

from __future__ import annotations

import re
from email import _header_value_parser as header_parser
from email.errors import NonASCIILocalPartDefect, ObsoleteHeaderDefect
from email.headerregistry import Address
from functools import lru_cache
from typing import Any, NamedTuple

from django.utils.encoding import force_str

from ..exceptions import PauboxHeaderError, PauboxPayloadError
from .text import LINE_BREAKS, is_control

#: A display name that needs no quoting: atoms (RFC 6532 allows UTF-8 in them) joined by
#: single spaces. Anything else is sent as a quoted string.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_PLAIN_PHRASE = re.compile(rf"{_ATEXT}(?: {_ATEXT})*\Z")
#: Parser defects that leave an address usable: UTF-8 local parts (RFC 6531) and obsolete but
#: unambiguous syntax such as the period in ``J. Smith <js@example.com>``.
_TOLERATED_DEFECTS = (NonASCIILocalPartDefect, ObsoleteHeaderDefect)


class ParsedAddress(NamedTuple):
    """One mailbox: its display name (may be empty) and its bare address."""

    display_name: str
    addr_spec: str

    @property
    def formatted(self) -> str:
        """``Name <addr>`` (name quoted when needed) or the bare address."""
        if not self.display_name:
            return self.addr_spec
        name = self.display_name
        if not _PLAIN_PHRASE.match(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.addr_spec}>"


def parse_address(value: Any, field: str) -> ParsedAddress:
    """Parse exactly one mailbox from ``value`` or raise :class:`PauboxPayloadError`."""
    return _parse_one(_address_text(value, field), field)


# Parsing is the costliest part of building a payload, and a bulk send repeats the same From,
# Reply-To and often the same recipients: the parsed results (immutable) are cached.
@lru_cache(maxsize=4096)
def _parse_one(text: str, field: str) -> ParsedAddress:
    address, rest = _take_mailbox(text, text, field)
    if rest.strip():
        hint = " (a display name with a comma must be quoted)" if rest.lstrip()[:1] == "," else ""
        raise PauboxPayloadError(
            f"Paubox: {text!r} in {field} is not one email address{hint}; give one address "
            "per entry."
        )
    return address


def parse_address_list(value: Any, field: str) -> list[ParsedAddress]:
    """Parse a comma-separated list of mailboxes (empty for an empty string)."""
    return list(_parse_list(_address_text(value, field), field))


@lru_cache(maxsize=1024)
def _parse_list(text: str, field: str) -> tuple[ParsedAddress, ...]:
    addresses: list[ParsedAddress] = []
    rest = text
    while rest.strip():
        address, rest = _take_mailbox(rest, text, field)
        addresses.append(address)
        rest = rest.lstrip()
        if rest and not rest.startswith(","):
            raise PauboxPayloadError(f"Paubox: {text!r} in {field} is not a list of addresses.")
        rest = rest[1:]
    return tuple(addresses)


def _address_text(value: Any, field: str) -> str:
    text = "" if value is None else force_str(value)
    bad = next((c for c in text if is_control(c)), None)
    if bad is not None:
        if bad in LINE_BREAKS:
            raise PauboxHeaderError(
                f"Paubox: the address {text!r} in {field} contains a line break."
            )
        raise PauboxPayloadError(
            f"Paubox: the address {text!r} in {field} contains a control character."
        )
    return text


def _take_mailbox(text: str, whole: str, field: str) -> tuple[ParsedAddress, str]:
    """Parse the mailbox at the start of ``text``; return it and the unparsed rest."""
    invalid = f"Paubox: {whole!r} in {field} is not a valid email address"
    if not text.strip():
        raise PauboxPayloadError(f"Paubox: an empty address in {field}.")
    try:
        token, rest = header_parser.get_mailbox(text)
    except Exception:  # HeaderParseError, and IndexError etc. from the parser's corners
        raise PauboxPayloadError(invalid + ".") from None
    defects = [d for d in token.all_defects if not isinstance(d, _TOLERATED_DEFECTS)]
    local_part, domain = token.local_part, token.domain
    if defects or not local_part or not domain:
        hint = "" if "@" in whole else " (no @)"
        if rest.lstrip().startswith(","):
            hint = " (a display name with a comma must be quoted)"
        raise PauboxPayloadError(f"{invalid}{hint}.")
    name = (token.display_name or "").strip()
    addr_spec = Address(username=local_part, domain=domain).addr_spec
    return ParsedAddress(name, addr_spec), rest
