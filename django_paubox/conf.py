"""The one place that reads ``settings.PAUBOX`` and the environment.

Settings are read on every call to :func:`get_settings` (it is cheap), so ``override_settings``
and changed environment variables take effect at once, as users expect in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings

from .exceptions import PauboxConfigError, PauboxPayloadError

DOCUMENTED_API_URL = "https://api.paubox.net/v1/"
AUTH_SCHEMES = ("Token", "Bearer")

#: Keys of ``settings.PAUBOX`` that fall back to an environment variable.
ENV_FALLBACKS = {
    "API_KEY": "PAUBOX_API_KEY",
    "API_USERNAME": "PAUBOX_API_USERNAME",
    "API_URL": "PAUBOX_API_URL",
}


@dataclass(frozen=True)
class DomainCredentials:
    """One entry of ``PAUBOX["DOMAINS"]``: Paubox issues one API key per verified domain.

    Empty fields fall back to the top-level settings (the endpoint username is usually the
    organisation's, shared by every domain).
    """

    api_key: str = field(default="", repr=False)
    api_username: str = ""
    api_url: str = ""
    auth_scheme: str = ""


@dataclass(frozen=True)
class PauboxSettings:
    """Validated, typed view of ``settings.PAUBOX`` with defaults applied.

    Attribute names are the lower-case ``PAUBOX`` keys; every key is documented in
    ``docs/configuration.md``.
    """

    api_key: str = field(default="", repr=False)
    api_username: str = ""
    api_url: str = DOCUMENTED_API_URL
    auth_scheme: str = "Token"
    #: (connect, read) timeout in seconds for every HTTP call.
    timeout: tuple[float, float] = (5.0, 30.0)
    #: Retries for requests that cannot duplicate a message (see client.py).
    max_retries: int = 3
    retry_backoff: float = 0.5
    batch_size: int = 50
    max_recipients: int = 100
    max_attachment_bytes: int = 10 * 1024 * 1024
    allow_non_tls: bool = False
    force_secure_notification: bool = False
    #: Drop headers Paubox cannot carry (logged by name) instead of refusing the message.
    drop_unsupported_headers: bool = False
    #: Keep bodies and attachments after a successful send (PHI: off by default).
    store_content: bool = False
    store_subject: bool = True
    webhook_secret: tuple[str, ...] = field(default=(), repr=False)
    webhook_allowed_ips: tuple[str, ...] = ()
    webhook_max_body_bytes: int = 256 * 1024
    #: Stop polling receipts for messages older than this.
    receipt_max_age_hours: float = 72.0
    #: Receipt requests in flight at once.
    receipt_concurrency: int = 16
    #: Keep polling a delivered single-recipient message until it is opened (or too old).
    receipt_poll_opens: bool = False
    purge_after_days: int | None = None
    #: Monthly message allowance of the Paubox plan (300 is the free plan).
    monthly_limit: int = 300
    #: Celery outbox: re-enqueue messages left queued longer than this.
    outbox_stale_seconds: float = 300.0
    send_max_attempts: int = 5
    #: Celery outbox: resend a message whose send may have reached Paubox (at least once)
    #: instead of failing it (at most once). Paubox has no idempotency key.
    resend_ambiguous: bool = False
    #: Celery outbox: first retry after about this many seconds, doubling with each attempt...
    outbox_retry_delay: float = 10.0
    #: ...up to this many seconds.
    outbox_retry_delay_max: float = 600.0

    #: Scheme and host of the site (``https://portal.clinic.example``), for absolute links in
    #: mail: the one-click unsubscribe URL.
    public_url: str = ""
    #: Do not mail addresses that hard bounced or unsubscribed (the ``Suppression`` rows).
    suppression: bool = True
    #: Add one-click unsubscribe to every single-recipient message of a multi-message send.
    unsubscribe_bulk: bool = False
    #: A mailbox for ``mailto:`` unsubscribes, offered beside the one-click URL.
    unsubscribe_mailto: str = ""
    #: How long an unsubscribe link works, in days.
    unsubscribe_max_age_days: int = 365

    #: ``PAUBOX["DOMAINS"]``: credentials per sending domain, routed by the From address.
    domains: tuple[tuple[str, DomainCredentials], ...] = field(default=(), repr=False)
    #: ``PAUBOX["CONNECTIONS"]``: named credentials for ``get_connection(label=...)`` (Django
    #: before 6.1, where there is no ``MAILERS`` alias to name them).
    connections: tuple[tuple[str, DomainCredentials], ...] = field(default=(), repr=False)

    @property
    def domain_names(self) -> list[str]:
        return [name for name, _ in self.domains]

    def for_domain(self, domain: str) -> PauboxSettings:
        """The settings for sending from ``domain``: its own key when ``DOMAINS`` is set.

        Raises :class:`PauboxPayloadError` (the message cannot be sent, nothing else is wrong)
        for a domain that ``DOMAINS`` does not list.
        """
        if not self.domains:
            return self
        wanted = domain.strip().lower()
        for name, credentials in self.domains:
            if name == wanted:
                return self.with_credentials(credentials)
        raise PauboxPayloadError(
            f'Paubox: no API key for the sending domain "{wanted}". Paubox issues one key per '
            f'verified domain: add it to PAUBOX["DOMAINS"] (configured: '
            f"{', '.join(self.domain_names)})."
        )

    def with_credentials(self, credentials: DomainCredentials) -> PauboxSettings:
        """These settings speaking for another account (a DOMAINS or CONNECTIONS entry)."""
        return replace(
            self,
            api_key=credentials.api_key,
            api_username=credentials.api_username or self.api_username,
            api_url=credentials.api_url or self.api_url,
            auth_scheme=credentials.auth_scheme or self.auth_scheme,
            domains=(),
        )

    def for_sender(self, from_email: str) -> PauboxSettings:
        return self.for_domain(sender_domain(from_email))

    @property
    def base_url(self) -> str:
        """The URL every API path is relative to, without a trailing slash."""
        base = self.api_url.rstrip("/")
        if self.api_username:
            base = f"{base}/{self.api_username}"
        return base

    @property
    def authorization(self) -> str:
        if self.auth_scheme == "Bearer":
            return f"Bearer {self.api_key}"
        return f"Token token={self.api_key}"

    def require_credentials(self) -> None:
        """Raise :class:`PauboxConfigError` naming the first missing credential."""
        if self.domains:
            for name in self.domain_names:
                self.for_domain(name).require_credentials()
            return
        if not self.api_key:
            raise PauboxConfigError(_missing("API_KEY"))
        if not self.api_username and _is_documented_host(self.api_url):
            raise PauboxConfigError(
                _missing("API_USERNAME")
                + " The documented API URL is https://api.paubox.net/v1/<API_USERNAME>; the "
                "username is the endpoint username shown in the Paubox console."
            )


def _missing(key: str) -> str:
    return (
        f'Paubox: PAUBOX["{key}"] is not set (nor the {ENV_FALLBACKS[key]} environment variable).'
    )


def _is_documented_host(api_url: str) -> bool:
    return urlsplit(api_url).hostname == "api.paubox.net"


@lru_cache(maxsize=1024)
def sender_domain(from_email: str) -> str:
    """The lower-cased domain of a From address: ``"C <a@Clinic.example>"`` → ``clinic.example``."""
    _, address = parseaddr(str(from_email))
    return (address or str(from_email)).rpartition("@")[2].strip(" >").lower()


KNOWN_KEYS = frozenset(f.name.upper() for f in fields(PauboxSettings))


def raw_settings() -> Mapping[str, Any]:
    value = getattr(django_settings, "PAUBOX", None) or {}
    if not isinstance(value, Mapping):
        raise PauboxConfigError("Paubox: settings.PAUBOX must be a dict.")
    return value


def get_settings(**overrides: Any) -> PauboxSettings:
    """Read ``settings.PAUBOX`` with environment fallbacks; ``overrides`` win (lower-case keys).

    Raises :class:`PauboxConfigError` for values of the wrong type; missing credentials are
    only an error when something needs them (:meth:`PauboxSettings.require_credentials`).
    """
    raw = dict(raw_settings())
    values: dict[str, Any] = {}
    for key, env in ENV_FALLBACKS.items():
        value = raw.get(key) or os.environ.get(env, "")
        if value:
            values[key.lower()] = str(value)
    for f in fields(PauboxSettings):
        key = f.name.upper()
        if key in ENV_FALLBACKS or key not in raw:
            continue
        values[f.name] = raw[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PauboxSettings(**_coerce(values))


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "auth_scheme" in out:
        scheme = str(out["auth_scheme"]).strip().capitalize()
        if scheme not in AUTH_SCHEMES:
            raise PauboxConfigError(
                f'Paubox: PAUBOX["AUTH_SCHEME"] must be "Token" or "Bearer", not {scheme!r}.'
            )
        out["auth_scheme"] = scheme
    if "timeout" in out:
        timeout = out["timeout"]
        if isinstance(timeout, (int, float)):
            timeout = (float(timeout), float(timeout))
        try:
            connect, read = (float(t) for t in timeout)
        except (TypeError, ValueError):
            raise PauboxConfigError(
                'Paubox: PAUBOX["TIMEOUT"] must be seconds, or a (connect, read) pair.'
            ) from None
        if connect <= 0 or read <= 0:
            raise PauboxConfigError('Paubox: PAUBOX["TIMEOUT"] must be positive.')
        out["timeout"] = (connect, read)
    for key in ("webhook_secret", "webhook_allowed_ips"):
        if key in out:
            value = out[key]
            if value is None or value == "":
                out[key] = ()
            elif isinstance(value, str):
                out[key] = (value,)
            else:
                out[key] = tuple(str(v) for v in value if v)
    for key in ("public_url", "unsubscribe_mailto"):
        if key in out:
            out[key] = str(out[key] or "").strip()
    for key in (
        "batch_size",
        "max_recipients",
        "max_attachment_bytes",
        "receipt_concurrency",
        "unsubscribe_max_age_days",
    ):
        if key in out:
            try:
                out[key] = int(out[key])
            except (TypeError, ValueError):
                raise PauboxConfigError(
                    f'Paubox: PAUBOX["{key.upper()}"] must be a whole number.'
                ) from None
            if out[key] < 1:
                raise PauboxConfigError(f'Paubox: PAUBOX["{key.upper()}"] must be at least 1.')
    if "domains" in out:
        out["domains"] = _domains(out["domains"])
    if "connections" in out:
        out["connections"] = _credential_entries(out["connections"], "CONNECTIONS", lower=False)
    if out.get("batch_size", 1) > 50:
        raise PauboxConfigError(
            'Paubox: PAUBOX["BATCH_SIZE"] may be at most 50 (Paubox\'s recommended bulk size).'
        )
    return out


def _domains(value: Any) -> tuple[tuple[str, DomainCredentials], ...]:
    return _credential_entries(value, "DOMAINS", lower=True)


def _credential_entries(
    value: Any, setting: str, *, lower: bool
) -> tuple[tuple[str, DomainCredentials], ...]:
    """``DOMAINS`` (keyed by lower-cased domain) or ``CONNECTIONS`` (keyed by label)."""
    if not value:
        return ()
    what = "<domain>" if lower else "<label>"
    if not isinstance(value, Mapping):
        raise PauboxConfigError(
            f'Paubox: PAUBOX["{setting}"] must be a dict of {{"{what}": {{"API_KEY": ...}}}}.'
        )
    domains = []
    for name, entry in value.items():
        domain = str(name).strip().lower() if lower else str(name)
        if not isinstance(entry, Mapping) or not entry.get("API_KEY"):
            raise PauboxConfigError(
                f'Paubox: PAUBOX["{setting}"]["{domain}"] needs an "API_KEY"'
                + (" (Paubox issues one key per verified sending domain)." if lower else ".")
            )
        unknown = set(entry) - {"API_KEY", "API_USERNAME", "API_URL", "AUTH_SCHEME"}
        if unknown:
            raise PauboxConfigError(
                f'Paubox: PAUBOX["{setting}"]["{domain}"] has unknown key(s): '
                f"{', '.join(sorted(unknown))}."
            )
        scheme = (
            _coerce({"auth_scheme": entry["AUTH_SCHEME"]})["auth_scheme"]
            if entry.get("AUTH_SCHEME")
            else ""
        )
        domains.append(
            (
                domain,
                DomainCredentials(
                    api_key=str(entry["API_KEY"]),
                    api_username=str(entry.get("API_USERNAME") or ""),
                    api_url=str(entry.get("API_URL") or ""),
                    auth_scheme=scheme,
                ),
            )
        )
    return tuple(sorted(domains))
