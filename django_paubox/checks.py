"""Django system checks for the ``PAUBOX`` settings: problems show at ``manage.py check`` time,
not when the first patient reminder fails to go out. No check ever prints a key."""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit

import django
from django.conf import settings
from django.core import checks
from django.urls import NoReverseMatch, reverse

from .conf import KNOWN_KEYS, PauboxSettings, get_settings, raw_settings
from .credentials import PAUBOX_BACKENDS, connection_conf, mailer_options, paubox_mailers
from .exceptions import PauboxConfigError
from .sending.unsubscribe import URL_NAME

__all__ = ["PAUBOX_BACKENDS", "check_paubox_settings"]

#: Django reads ``MAILERS`` from 6.1 on (and ignores it before).
MAILERS_SUPPORTED = django.VERSION >= (6, 1)


@checks.register(checks.Tags.compatibility)
def check_paubox_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        raw = raw_settings()
        conf = get_settings()
    except PauboxConfigError as error:
        return [checks.Error(str(error), id="django_paubox.E001")]
    found: list[checks.CheckMessage] = []
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        found.append(
            checks.Warning(
                f"Unknown PAUBOX setting(s): {', '.join(unknown)}.",
                hint="See the configuration reference in the django-paubox docs; is it a typo?",
                id="django_paubox.W001",
            )
        )
    if _legacy_backend_in_use():
        try:
            conf.require_credentials()
        except PauboxConfigError as error:
            found.append(checks.Error(str(error), id="django_paubox.E002"))
    found.extend(_check_mailers(raw))
    if conf.domains:
        found.append(
            checks.Info(
                f"Paubox sends from {len(conf.domains)} domain(s), each with its own API key: "
                f"{', '.join(conf.domain_names)}.",
                id="django_paubox.I002",
            )
        )
    if not conf.webhook_secret:
        found.append(
            checks.Info(
                'PAUBOX["WEBHOOK_SECRET"] is not set: the webhook view refuses every request.',
                hint="Set it to a long random string and register "
                "https://<host>/paubox/webhook/<secret>/ in the Paubox console.",
                id="django_paubox.I001",
            )
        )
    elif any(len(secret) < 16 for secret in conf.webhook_secret):
        found.append(
            checks.Warning(
                'PAUBOX["WEBHOOK_SECRET"] is shorter than 16 characters.',
                hint="The secret is the webhook's only authentication: use a long random one.",
                id="django_paubox.W002",
            )
        )
    if conf.allow_non_tls:
        found.append(
            checks.Warning(
                'PAUBOX["ALLOW_NON_TLS"] is on: messages may be delivered without TLS, which '
                "is not HIPAA compliant for messages that carry PHI.",
                id="django_paubox.W003",
            )
        )
    found.extend(_unsubscribe_checks(conf))
    longest_send = sum(conf.timeout)
    if conf.outbox_stale_seconds < 2 * longest_send:
        found.append(
            checks.Warning(
                f'PAUBOX["OUTBOX_STALE_SECONDS"] ({conf.outbox_stale_seconds:g} s) is not well '
                f'above PAUBOX["TIMEOUT"] (connect + read: {longest_send:g} s): a send still '
                "waiting for Paubox's answer could be settled as failed ('may have reached "
                "Paubox') by sweep_outbox or paubox_settle_stale.",
                hint="Keep it at least twice the connect and read timeouts together.",
                id="django_paubox.W006",
            )
        )
    return found


def _unsubscribe_checks(conf: PauboxSettings) -> list[checks.CheckMessage]:
    """One-click unsubscribe needs an absolute ``PUBLIC_URL`` and the app's URLconf."""
    found: list[checks.CheckMessage] = []
    if conf.public_url:
        parts = urlsplit(conf.public_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            found.append(
                checks.Error(
                    f'PAUBOX["PUBLIC_URL"] must be an absolute http(s) URL such as '
                    f'"https://portal.clinic.example", not {conf.public_url!r}.',
                    id="django_paubox.E021",
                )
            )
    if not (conf.unsubscribe_bulk or conf.unsubscribe_mailto):
        return found
    if not conf.public_url:
        found.append(
            checks.Error(
                'One-click unsubscribe is on (PAUBOX["UNSUBSCRIBE_BULK"] or '
                '["UNSUBSCRIBE_MAILTO"]) but PAUBOX["PUBLIC_URL"] is not set: the absolute '
                "unsubscribe URL cannot be built.",
                hint='Set PAUBOX["PUBLIC_URL"] to your site\'s scheme and host, e.g. '
                '"https://portal.clinic.example".',
                id="django_paubox.E020",
            )
        )
    try:
        reverse(URL_NAME, args=["token"])
    except NoReverseMatch:
        found.append(
            checks.Error(
                "One-click unsubscribe is on but django_paubox.urls is not in the URLconf.",
                hint='Add path("paubox/", include("django_paubox.urls")) to your urlpatterns.',
                id="django_paubox.E022",
            )
        )
    return found


def _mailers() -> dict[str, Any]:
    mailers = getattr(settings, "MAILERS", None)
    return dict(mailers) if isinstance(mailers, dict) else {}


def _is_set(name: str) -> bool:
    """Whether the project's settings set ``name`` (not Django's default)."""
    return bool(settings.is_overridden(name))  # type: ignore[misc]


def _legacy_backend_in_use() -> bool:
    """``EMAIL_BACKEND`` is one of ours (Django before 6.1, or 6.1 without ``MAILERS``).

    Read only when set, and without the deprecation warning Django 6.1 gives on reading it:
    the user has had that warning at startup already.
    """
    if MAILERS_SUPPORTED and hasattr(settings, "MAILERS"):
        return False
    if not _is_set("EMAIL_BACKEND"):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = getattr(settings, "EMAIL_BACKEND", "")
    return backend in PAUBOX_BACKENDS


def _check_mailers(raw: Any) -> list[checks.CheckMessage]:
    """Django 6.1's ``MAILERS``: each Paubox mailer's options and credentials; settings that
    are set but not used."""
    found: list[checks.CheckMessage] = []
    if _mailers() and _is_set("EMAIL_BACKEND"):
        found.append(
            checks.Warning(
                "Both EMAIL_BACKEND and MAILERS are set.",
                hint="Django 6.1+ uses MAILERS only (EMAIL_BACKEND is deprecated); Django "
                "before 6.1 ignores MAILERS. Keep the one your Django version reads.",
                id="django_paubox.W004",
            )
        )
    aliases = paubox_mailers() if MAILERS_SUPPORTED else []
    own_keys = 0
    for alias in aliases:
        try:
            options = mailer_options(alias)
            conf = connection_conf(options)
        except PauboxConfigError as error:
            found.append(checks.Error(str(error), id="django_paubox.E001"))
            continue
        own_keys += bool(options.get("api_key") or options.get("domains"))
        try:
            conf.require_credentials()
        except PauboxConfigError as error:
            found.append(
                checks.Error(
                    f'MAILERS["{alias}"]: {error}',
                    hint=f'Set "api_key" (and "api_username") in MAILERS["{alias}"]["OPTIONS"], '
                    "or in PAUBOX for every mailer.",
                    id="django_paubox.E002",
                )
            )
    if aliases and own_keys == len(aliases) and raw.get("API_KEY") and not _legacy_backend_in_use():
        found.append(
            checks.Warning(
                'PAUBOX["API_KEY"] is set, but every Paubox mailer has its own "api_key": it is '
                "not used.",
                hint="Remove it from PAUBOX, so that one key is not kept in two places (and "
                "rotated in one only).",
                id="django_paubox.W005",
            )
        )
    return found
