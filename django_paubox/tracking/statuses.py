"""Normalised delivery statuses; the one place that knows how Paubox's words map onto them.

Paubox reports a disposition in two ways: the ``deliveryStatus`` string of a message receipt
(eight documented values) and the name of a webhook event (four documented values). Both are
mapped here onto :class:`Status` plus two flags that are not statuses:

- *via secure portal* (the recipient's server offered no TLS, so Paubox delivered a pickup
  link instead of the content) is ``Delivery.via_secure_portal``;
- an *open* is ``Delivery.opened_at``, never a status: an opened message stays ``delivered``.

=============================================  ================  =======================
Paubox says                                    ``Status``        flags
=============================================  ================  =======================
``processing``                                 ``processing``
``TLS not offered, sending via Secure Portal``  ``processing``    via secure portal
``soft bounced``                               ``soft_bounced``
``soft bounced - mailbox full``                ``soft_bounced``
``hard bounced``                               ``hard_bounced``
``Internal error. Please check back later.``   (no change)       ask again later
``delivered``                                  ``delivered``
``delivered via secure portal``                ``delivered``     via secure portal
event ``api_mail_log_delivered``               ``delivered``
event ``api_mail_log_temporary_failure``       ``soft_bounced``
event ``api_mail_log_permanent_failure``       ``hard_bounced``
event ``api_mail_log_opened``                  (no change)       opened
anything else                                  (no change)       kept raw, never an error
=============================================  ================  =======================

"TLS not offered, sending via Secure Portal" is ``processing``, not ``sent`` or ``delivered``:
Paubox has the message and is still converting it into a Secure Portal notification; nothing
has reached the recipient yet. Strings are matched case-insensitively, with runs of whitespace
folded, so ``" Delivered  via secure PORTAL"`` is recognised too.

Forward-only rule
-----------------
Every status has a rank; a delivery only ever moves to a status of *higher* rank::

    queued (0) < sent (1) < processing (2) < soft_bounced (3)
              < delivered = hard_bounced = failed (4, final)

- ``soft_bounced`` is not final: Paubox retries a soft bounce, which may still end
  ``delivered`` or ``hard_bounced``; a late ``processing`` does not undo a soft bounce.
- ``delivered``, ``hard_bounced`` and ``failed`` are final and share the top rank, so none of
  them replaces another: the first final word wins, and a late, replayed or out-of-order
  event (a "delivered" webhook arriving after a receipt said "hard bounced", a stale receipt
  polled before the bounce) never changes it.
- ``failed`` means the message never reached Paubox (refused or not sent), so no report from
  Paubox can be about it; it is final too.
- Unknown statuses and "Internal error" never change a status (:func:`advance` is only called
  with known statuses; see :class:`Outcome`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.db import models


class Status(models.TextChoices):
    """``Delivery.status``: where a message stands for one recipient."""

    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    PROCESSING = "processing", "Processing"
    DELIVERED = "delivered", "Delivered"
    SOFT_BOUNCED = "soft_bounced", "Soft bounced"
    HARD_BOUNCED = "hard_bounced", "Hard bounced"
    FAILED = "failed", "Failed"


#: The forward-only order (see the module docstring). Equal ranks never replace each other.
RANK: dict[str, int] = {
    Status.QUEUED: 0,
    Status.SENT: 1,
    Status.PROCESSING: 2,
    Status.SOFT_BOUNCED: 3,
    Status.DELIVERED: 4,
    Status.HARD_BOUNCED: 4,
    Status.FAILED: 4,
}

FINAL_STATUSES: frozenset[str] = frozenset({Status.DELIVERED, Status.HARD_BOUNCED, Status.FAILED})


def rank(status: str) -> int:
    """The status's place in the forward-only order; unknown values rank lowest (-1)."""
    return RANK.get(str(status), -1)


def is_final(status: str) -> bool:
    """True when nothing Paubox says later can change ``status``."""
    return str(status) in FINAL_STATUSES


def advance(current: str, new: str) -> str:
    """The status to keep when ``new`` is reported for a delivery that is ``current``.

    ``new`` wins only when it ranks strictly higher; otherwise ``current`` is kept. An unknown
    ``new`` is ignored; an unknown ``current`` (a corrupt row) gives way to any known status.
    """
    if str(new) not in RANK:
        return current
    if str(current) not in RANK:
        return new
    return new if RANK[str(new)] > RANK[str(current)] else current


@dataclass(frozen=True)
class Outcome:
    """What one Paubox report means for a delivery.

    ``status`` is ``None`` when the report changes no status (an open, "Internal error", an
    unknown string); ``raw`` is always Paubox's own words, kept for the admin.
    """

    raw: str
    status: str | None = None
    via_secure_portal: bool = False
    opened: bool = False
    #: Paubox asked us to ask again later ("Internal error. Please check back later.").
    retry_later: bool = False
    #: False for strings and events this module has never heard of.
    known: bool = True


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().casefold()


INTERNAL_ERROR = "Internal error. Please check back later."

#: Paubox's eight ``deliveryStatus`` strings, folded, with what they mean.
_DELIVERY_STATUSES: dict[str, tuple[str | None, bool, bool]] = {
    # folded string: (status, via_secure_portal, retry_later)
    _fold("processing"): (Status.PROCESSING, False, False),
    _fold("TLS not offered, sending via Secure Portal"): (Status.PROCESSING, True, False),
    _fold("soft bounced"): (Status.SOFT_BOUNCED, False, False),
    _fold("soft bounced - mailbox full"): (Status.SOFT_BOUNCED, False, False),
    _fold("hard bounced"): (Status.HARD_BOUNCED, False, False),
    _fold(INTERNAL_ERROR): (None, False, True),
    _fold("delivered"): (Status.DELIVERED, False, False),
    _fold("delivered via secure portal"): (Status.DELIVERED, True, False),
}

EVENT_DELIVERED = "api_mail_log_delivered"
EVENT_TEMPORARY_FAILURE = "api_mail_log_temporary_failure"
EVENT_PERMANENT_FAILURE = "api_mail_log_permanent_failure"
EVENT_OPENED = "api_mail_log_opened"

#: Paubox's four webhook events (folded name -> status, or None for an open).
_WEBHOOK_EVENTS: dict[str, str | None] = {
    EVENT_DELIVERED: Status.DELIVERED,
    EVENT_TEMPORARY_FAILURE: Status.SOFT_BOUNCED,
    EVENT_PERMANENT_FAILURE: Status.HARD_BOUNCED,
    EVENT_OPENED: None,
}

#: The documented strings, as Paubox spells them (for tests, fixtures and the sandbox).
DELIVERY_STATUS_STRINGS: tuple[str, ...] = (
    "processing",
    "TLS not offered, sending via Secure Portal",
    "soft bounced",
    "soft bounced - mailbox full",
    "hard bounced",
    INTERNAL_ERROR,
    "delivered",
    "delivered via secure portal",
)
WEBHOOK_EVENT_NAMES: tuple[str, ...] = tuple(_WEBHOOK_EVENTS)


def from_delivery_status(raw: object) -> Outcome:
    """Map a receipt's ``deliveryStatus`` onto an :class:`Outcome`; never raises."""
    text = raw if isinstance(raw, str) else ("" if raw is None else str(raw))
    entry = _DELIVERY_STATUSES.get(_fold(text))
    if entry is None:
        return Outcome(raw=text, known=False)
    status, portal, retry_later = entry
    return Outcome(raw=text, status=status, via_secure_portal=portal, retry_later=retry_later)


def from_webhook_event(name: object) -> Outcome:
    """Map a webhook ``event_name`` onto an :class:`Outcome`; never raises."""
    text = name if isinstance(name, str) else ("" if name is None else str(name))
    key = _fold(text)
    if key not in _WEBHOOK_EVENTS:
        return Outcome(raw=text, known=False)
    status = _WEBHOOK_EVENTS[key]
    return Outcome(raw=text, status=status, opened=key == EVENT_OPENED)


# --- Words for people -------------------------------------------------------------------------
#
# The admin speaks one vocabulary to a support desk: one word per message or recipient, from
# the disposition (``Status``), the send (``Message.State``), a scheduled send and an open.
# ``docs/statuses.md`` ("In the admin") documents it; keep them in step.

#: Desk word key -> (label, what it means). In the order a message moves through them.
DESK_STATUSES: dict[str, tuple[str, str]] = {
    "queued": ("Queued", "Waiting in the outbox: not handed to Paubox yet."),
    "scheduled": ("Scheduled", "Paubox has it and sends it at the scheduled time."),
    "sent": ("Sent", "Paubox accepted it; no word from the recipient's server yet."),
    "processing": ("In progress", "Paubox is delivering it (or preparing a Secure Portal link)."),
    "soft_bounced": (
        "Soft bounced",
        "A temporary failure (mailbox full, server busy); Paubox keeps trying.",
    ),
    "delivered": ("Delivered", "The recipient's server took it; no open is known."),
    "opened": ("Opened", "Delivered, and the recipient opened it."),
    "hard_bounced": ("Hard bounced", "A permanent failure: the address does not take mail."),
    "failed": ("Failed", "It never went out: refused before or by Paubox."),
    "cancelled": ("Cancelled", "A scheduled send called off before its time: never sent."),
}


def desk_status(
    status: str,
    *,
    state: str = "",
    opened: bool = False,
    scheduled_pending: bool = False,
) -> str:
    """The one desk word (a :data:`DESK_STATUSES` key) for a message or a delivery.

    ``state`` is the message's send state (``Message.State``; empty for none), ``opened``
    whether an open is known, ``scheduled_pending`` whether it is a scheduled send still to
    come. An open shows only on a delivered disposition: a bounce or a failure stays visible.
    """
    if state == "cancelled":
        return "cancelled"
    if state in ("queued", "sending"):
        return "queued"
    if status == Status.QUEUED and state == "sent":
        return "scheduled" if scheduled_pending else "sent"
    if status == Status.DELIVERED and opened:
        return "opened"
    return str(status) if str(status) in DESK_STATUSES else ""


#: Paubox's webhook event names, in words (the raw name is shown beside them).
EVENT_LABELS: dict[str, str] = {
    EVENT_DELIVERED: "Delivered",
    EVENT_TEMPORARY_FAILURE: "Soft bounced (temporary failure)",
    EVENT_PERMANENT_FAILURE: "Hard bounced (permanent failure)",
    EVENT_OPENED: "Opened",
}


def event_label(name: str) -> str:
    """A webhook event's name in words; an unknown name as it came."""
    return EVENT_LABELS.get(_fold(name), name)
