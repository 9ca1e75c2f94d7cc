"""Which credentials sent a message, and finding them again.

Every Message row records the non-secret identity of the credentials that sent it
(``Message.mailer``), and everything that later speaks to Paubox about it (the outbox worker,
receipts, cancel and reschedule, resend) turns that identity back into settings here, through
:func:`settings_for`. Settings themselves are read by :mod:`django_paubox.conf`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from django.conf import settings as django_settings

from .conf import PauboxSettings, get_settings, sender_domain
from .exceptions import CredentialsNotFound, PauboxConfigError, PauboxError

# --- Which credentials sent a message -----------------------------------------------------------
#
# Every Message row records the non-secret identity of the credentials that sent it
# (``Message.mailer``), and everything that later speaks to Paubox about it (the outbox worker,
# receipts, cancel and reschedule, resend) turns that identity back into settings here. An
# identity is a name, never the key nor anything derived from it:
#
#   "default"                            the global PAUBOX settings
#   "domain:clinic.example"              a PAUBOX["DOMAINS"] entry
#   "mailer:billing"                     a Django 6.1 MAILERS alias (its OPTIONS over PAUBOX)
#   "mailer:billing/domain:clinic.example"  a DOMAINS entry of that mailer's OPTIONS
#   "label:billing"                      a PAUBOX["CONNECTIONS"] entry: get_connection(label=)
#   "unnamed"                            credentials given to get_connection() that are in no
#                                        setting: they cannot be found again
#   ""                                   rows written before 0.2: the global settings, routed
#                                        by the From domain, as they were sent

#: The Paubox backends (a ``MAILERS`` entry or ``EMAIL_BACKEND`` naming one is ours).
PAUBOX_BACKENDS = (
    "django_paubox.backends.PauboxEmailBackend",
    "django_paubox.backends.PauboxCeleryEmailBackend",
)

#: Lower-case ``PAUBOX`` keys that a ``MAILERS`` entry's ``OPTIONS`` (and ``get_connection()``)
#: may set for one connection; ``PAUBOX`` supplies the rest. Process-wide keys (webhook,
#: receipts polling, retention, the outbox sweeper) stay in ``PAUBOX``.
MAILER_OPTIONS = frozenset(
    {
        "api_key",
        "api_username",
        "api_url",
        "auth_scheme",
        "timeout",
        "max_retries",
        "retry_backoff",
        "domains",
        "batch_size",
        "max_recipients",
        "max_attachment_bytes",
        "allow_non_tls",
        "force_secure_notification",
        "drop_unsupported_headers",
        "store_content",
        "store_subject",
        "send_max_attempts",
        "resend_ambiguous",
        "outbox_retry_delay",
        "outbox_retry_delay_max",
    }
)

DEFAULT_IDENTITY = "default"
UNNAMED_IDENTITY = "unnamed"
_DOMAIN = "domain:"
_MAILER = "mailer:"
_LABEL = "label:"


def mailer_identity(alias: str) -> str:
    return f"{_MAILER}{alias}"


def label_identity(label: str) -> str:
    return f"{_LABEL}{label}"


def identity_for_sender(identity: str, conf: PauboxSettings, from_email: str) -> str:
    """The identity of the credentials ``conf`` uses for ``from_email`` (its DOMAINS entry)."""
    if not conf.domains:
        return identity
    domain = sender_domain(from_email)
    if identity == DEFAULT_IDENTITY:
        return f"{_DOMAIN}{domain}"
    return f"{identity}/{_DOMAIN}{domain}"


def _mailers() -> Mapping[str, Any]:
    value = getattr(django_settings, "MAILERS", None) or {}
    return value if isinstance(value, Mapping) else {}


def paubox_mailers() -> list[str]:
    """The aliases of the ``MAILERS`` entries that are Paubox backends, ``default`` first."""
    aliases = [
        str(alias)
        for alias, entry in _mailers().items()
        if isinstance(entry, Mapping) and entry.get("BACKEND") in PAUBOX_BACKENDS
    ]
    return sorted(aliases, key=lambda alias: alias != "default")


def mailer_settings(alias: str) -> PauboxSettings:
    """``PAUBOX`` with the ``OPTIONS`` of ``MAILERS[alias]`` over it (:func:`mailer_options`)."""
    return connection_conf(mailer_options(alias))


def mailer_options(alias: str) -> dict[str, Any]:
    """The ``OPTIONS`` of ``MAILERS[alias]``, checked; raises :class:`CredentialsNotFound` when
    the alias is not configured and :class:`PauboxConfigError` naming an unknown option."""
    entry = _mailers().get(alias)
    if not isinstance(entry, Mapping):
        raise CredentialsNotFound(
            mailer_identity(alias),
            f'Paubox: MAILERS["{alias}"] is not configured (any more), so the credentials of '
            "the mailer that sent this message cannot be found; no other key is used instead. "
            f'Restore MAILERS["{alias}"] (with its OPTIONS) to send or track it.',
        )
    options = dict(entry.get("OPTIONS") or {})
    options.pop("fail_silently", None)  # a backend argument, not a setting
    check_options(options, f'MAILERS["{alias}"]["OPTIONS"]')
    return options


def check_options(options: Mapping[str, Any], where: str) -> None:
    """Refuse options a Paubox connection does not take, naming them (Django 6.1's rule)."""
    unknown = sorted(set(options) - MAILER_OPTIONS)
    if unknown:
        raise PauboxConfigError(
            f"Paubox: {where} has unknown option(s): {', '.join(map(repr, unknown))}. "
            f"Paubox mailers take: {', '.join(sorted(MAILER_OPTIONS))}."
        )


def connection_conf(options: Mapping[str, Any]) -> PauboxSettings:
    """``PAUBOX`` with one connection's options over it (lower-case keys).

    A connection given its own ``api_key`` does not route by From domain, unless its options
    bring their own ``domains``.
    """
    given = {k: v for k, v in options.items() if v is not None}
    conf = get_settings(**given)
    if given.get("api_key") and "domains" not in given:
        conf = replace(conf, domains=())
    return conf


def _labelled(label: str) -> PauboxSettings:
    conf = get_settings()
    for name, credentials in conf.connections:
        if name == label:
            return conf.with_credentials(credentials)
    raise CredentialsNotFound(
        label_identity(label),
        f'Paubox: PAUBOX["CONNECTIONS"]["{label}"] is not configured (any more), so the '
        f"credentials of get_connection(label={label!r}) cannot be found; no other key is used "
        "instead.",
    )


def _base_settings(base: str) -> PauboxSettings:
    """The settings of a connection identity, before routing by From domain."""
    if base == DEFAULT_IDENTITY:
        return get_settings()
    if base.startswith(_MAILER):
        return mailer_settings(base[len(_MAILER) :])
    if base.startswith(_LABEL):
        return _labelled(base[len(_LABEL) :])
    if base == UNNAMED_IDENTITY:
        raise CredentialsNotFound(
            base,
            "Paubox: this message was sent with credentials given to get_connection() that are "
            "in no setting, so they cannot be found again; no other key is used instead. Name "
            'them in PAUBOX["CONNECTIONS"] and pass get_connection(label=...), or use a MAILERS '
            "alias (Django 6.1+).",
        )
    raise CredentialsNotFound(base, f"Paubox: unknown credentials identity {base!r}.")


def settings_for(identity: str, *, sender: str = "") -> PauboxSettings:
    """The settings of the credentials recorded as ``identity`` (``Message.mailer``).

    Everything that speaks to Paubox about a message after its send uses this, so that it
    speaks with the key that sent it. Raises :class:`CredentialsNotFound` when they are gone
    from the settings (never falls back to another key). ``sender`` (the From address) matters
    only for rows written before 0.2, which recorded no identity.
    """
    if not identity:
        conf = get_settings()
        return conf.for_sender(sender) if sender else conf
    base, _, domain = identity.partition(f"/{_DOMAIN}")
    if base.startswith(_DOMAIN):
        base, domain = DEFAULT_IDENTITY, base[len(_DOMAIN) :]
    conf = _base_settings(base)
    if not domain:
        return replace(conf, domains=())
    if domain not in conf.domain_names:
        where = 'PAUBOX["DOMAINS"]' if base == DEFAULT_IDENTITY else f"the DOMAINS of {base}"
        raise CredentialsNotFound(
            identity,
            f'Paubox: {where} has no entry "{domain}" (any more), so the credentials that sent '
            "this message cannot be found; no other key is used instead.",
        )
    return conf.for_domain(domain)


def _account(conf: PauboxSettings) -> tuple[Any, ...]:
    """What makes two settings speak for the same Paubox account(s)."""
    return (
        conf.api_key,
        conf.api_username,
        conf.api_url.rstrip("/"),
        conf.auth_scheme,
        conf.domains,
    )


def _configured_identities() -> Iterator[str]:
    yield DEFAULT_IDENTITY  # before reading the settings: the common answer costs no more
    conf = get_settings()
    yield from (f"{_DOMAIN}{name}" for name in conf.domain_names)
    yield from (label_identity(name) for name, _ in conf.connections)
    yield from (mailer_identity(alias) for alias in paubox_mailers())


def configured_identity(
    options: Mapping[str, Any], *, alias: str | None = None, label: str | None = None
) -> str | None:
    """The identity of a connection whose options are exactly what a setting gives it (none:
    ``PAUBOX`` itself; the ``OPTIONS`` of ``MAILERS[alias]``), without building and comparing
    settings; None otherwise (see :func:`connection_identity`). A ``send_mail()`` makes a
    connection every time: this keeps that cheap."""
    if label is not None:
        return None
    if alias is None:
        return None if options else DEFAULT_IDENTITY
    try:
        configured = mailer_options(alias)
    except PauboxError:
        return None
    given = {k: v for k, v in options.items() if v is not None}
    return mailer_identity(alias) if given == configured else None


def connection_identity(
    conf: PauboxSettings, *, alias: str | None = None, label: str | None = None
) -> str:
    """The identity to record for a connection whose settings are ``conf``.

    Its ``MAILERS`` alias or label when those name exactly these credentials; else whichever
    configured entry does (``get_connection(api_key=...)`` with a configured key); else
    :data:`UNNAMED_IDENTITY`, which cannot be resolved later.
    """
    wanted = _account(conf)
    first = [label_identity(label)] if label else []
    first += [mailer_identity(alias)] if alias is not None else []
    for identity in itertools.chain(first, _configured_identities()):
        try:
            candidates = [_base_settings(identity.partition(f"/{_DOMAIN}")[0])]
            if identity.startswith(_DOMAIN):
                candidates = [settings_for(identity)]
        except PauboxError:
            continue
        if any(_account(candidate) == wanted for candidate in candidates):
            return identity
    return UNNAMED_IDENTITY
