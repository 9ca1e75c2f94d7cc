"""The one place that reads ``settings.PAUBOX`` and the environment.

Settings are read on every call to :func:`get_settings` (it is cheap), so ``override_settings``
and changed environment variables take effect at once, as users expect in tests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings as django_settings

from .exceptions import PauboxConfigError

DOCUMENTED_API_URL = "https://api.paubox.net/v1/"
AUTH_SCHEMES = ("Token", "Bearer")

#: Keys of ``settings.PAUBOX`` that fall back to an environment variable.
ENV_FALLBACKS = {
    "API_KEY": "PAUBOX_API_KEY",
    "API_USERNAME": "PAUBOX_API_USERNAME",
    "API_URL": "PAUBOX_API_URL",
}


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


KNOWN_KEYS = frozenset(f.name.upper() for f in fields(PauboxSettings)) | {"DOMAINS"}


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
    for key in ("batch_size", "max_recipients", "max_attachment_bytes", "receipt_concurrency"):
        if key in out:
            try:
                out[key] = int(out[key])
            except (TypeError, ValueError):
                raise PauboxConfigError(
                    f'Paubox: PAUBOX["{key.upper()}"] must be a whole number.'
                ) from None
            if out[key] < 1:
                raise PauboxConfigError(f'Paubox: PAUBOX["{key.upper()}"] must be at least 1.')
    if out.get("batch_size", 1) > 50:
        raise PauboxConfigError(
            'Paubox: PAUBOX["BATCH_SIZE"] may be at most 50 (Paubox\'s recommended bulk size).'
        )
    return out
