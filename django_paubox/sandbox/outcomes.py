"""Simulated delivery outcomes: which recipient gets which disposition, and when.

An outcome is a short list of stages. Each stage happens a multiple of the sandbox's
``processing_seconds`` after the send, may change the receipt's ``deliveryStatus`` (or mark the
message opened), and may fire one Paubox webhook event. Kept free of I/O and locks so it is
trivial to reason about.
"""

from __future__ import annotations

from dataclasses import dataclass

# Paubox's deliveryStatus strings (paubox-api.md).
PROCESSING = "processing"
TLS_NOT_OFFERED = "TLS not offered, sending via Secure Portal"
SOFT_BOUNCED = "soft bounced"
MAILBOX_FULL = "soft bounced - mailbox full"
HARD_BOUNCED = "hard bounced"
INTERNAL_ERROR = "Internal error. Please check back later."
DELIVERED = "delivered"
DELIVERED_VIA_PORTAL = "delivered via secure portal"

#: Statuses whose receipt carries a ``deliveryTime``.
DELIVERED_STATUSES = frozenset({DELIVERED, DELIVERED_VIA_PORTAL})

EVENT_DELIVERED = "api_mail_log_delivered"
EVENT_TEMPORARY_FAILURE = "api_mail_log_temporary_failure"
EVENT_PERMANENT_FAILURE = "api_mail_log_permanent_failure"
EVENT_OPENED = "api_mail_log_opened"


@dataclass(frozen=True)
class StageSpec:
    """One step of an outcome, ``after`` times ``processing_seconds`` past the send."""

    after: float
    status: str | None = None  # new deliveryStatus; None for "opened"
    opened: bool = False
    event: str | None = None


#: Outcome name -> stages. Names are what ``set_outcome`` and the control API take.
OUTCOMES: dict[str, tuple[StageSpec, ...]] = {
    "delivered": (StageSpec(1, DELIVERED, event=EVENT_DELIVERED),),
    "hard_bounced": (StageSpec(1, HARD_BOUNCED, event=EVENT_PERMANENT_FAILURE),),
    "soft_bounced": (StageSpec(1, SOFT_BOUNCED, event=EVENT_TEMPORARY_FAILURE),),
    "mailbox_full": (StageSpec(1, MAILBOX_FULL, event=EVENT_TEMPORARY_FAILURE),),
    "portal": (StageSpec(1, DELIVERED_VIA_PORTAL, event=EVENT_DELIVERED),),
    "notls": (
        StageSpec(1, TLS_NOT_OFFERED),
        StageSpec(2, DELIVERED_VIA_PORTAL, event=EVENT_DELIVERED),
    ),
    "error": (StageSpec(1, INTERNAL_ERROR),),
    "opened": (
        StageSpec(1, DELIVERED, event=EVENT_DELIVERED),
        StageSpec(2, opened=True, event=EVENT_OPENED),
    ),
    # Never leaves "processing" (and fires nothing): for tests of polling give-up rules.
    "processing": (),
}

#: Recipient local part (before any ``+tag``) -> outcome name.
LOCAL_PARTS: dict[str, str] = {
    "bounce": "hard_bounced",
    "hard": "hard_bounced",
    "soft": "soft_bounced",
    "full": "mailbox_full",
    "portal": "portal",
    "notls": "notls",
    "error": "error",
    "open": "opened",
}

_PAUBOX_STRINGS: dict[str, str] = {
    PROCESSING: "processing",
    DELIVERED: "delivered",
    HARD_BOUNCED: "hard_bounced",
    SOFT_BOUNCED: "soft_bounced",
    MAILBOX_FULL: "mailbox_full",
    DELIVERED_VIA_PORTAL: "portal",
    TLS_NOT_OFFERED: "notls",
    INTERNAL_ERROR: "error",
}

_ALIASES: dict[str, str] = {
    **LOCAL_PARTS,
    "open": "opened",
    "bounced": "hard_bounced",
    "secure_portal": "portal",
    "internal_error": "error",
}


def normalise_outcome(name: str) -> str:
    """Map an outcome given by name, alias, local-part word or Paubox string to its name."""
    if name in OUTCOMES:
        return name
    if name in _PAUBOX_STRINGS:
        return _PAUBOX_STRINGS[name]
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key in OUTCOMES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    choices = ", ".join(sorted(OUTCOMES))
    raise ValueError(f"Unknown sandbox outcome {name!r}; choose one of: {choices}.")


def outcome_for(
    address: str,
    overrides: dict[str, str],
    *,
    allow_non_tls: bool = False,
    force_secure_notification: bool = False,
    single_recipient: bool = True,
) -> str:
    """The outcome of one recipient: an override, else its local part, else ``delivered``.

    ``forceSecureNotification`` turns a plain delivery into a portal delivery; ``allowNonTLS``
    lets a ``notls@`` recipient get a plain delivery. Opens are only tracked for messages with a
    single recipient (as Paubox), so ``open@`` among several recipients is just delivered.
    """
    lowered = address.lower()
    if lowered in overrides:
        outcome = overrides[lowered]
    else:
        local = lowered.rpartition("@")[0].split("+", 1)[0]
        outcome = LOCAL_PARTS.get(local, "delivered")
    if outcome == "opened" and not single_recipient:
        outcome = "delivered"
    if outcome == "notls" and allow_non_tls:
        outcome = "delivered"
    if force_secure_notification and outcome in ("delivered", "notls"):
        outcome = "portal"
    return outcome
