"""Django system checks for the ``PAUBOX`` settings: problems show at ``manage.py check`` time,
not when the first patient reminder fails to go out. No check ever prints a key."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.urls import NoReverseMatch, reverse

from .conf import KNOWN_KEYS, PauboxSettings, get_settings, raw_settings
from .exceptions import PauboxConfigError
from .sending.unsubscribe import URL_NAME

PAUBOX_BACKENDS = (
    "django_paubox.backends.PauboxEmailBackend",
    "django_paubox.backends.PauboxCeleryEmailBackend",
)


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
    if _paubox_backend_in_use():
        try:
            conf.require_credentials()
        except PauboxConfigError as error:
            found.append(checks.Error(str(error), id="django_paubox.E002"))
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


def _paubox_backend_in_use() -> bool:
    """``EMAIL_BACKEND``, or any of Django 6.1's ``MAILERS``, is one of ours."""
    mailers = getattr(settings, "MAILERS", None)
    if isinstance(mailers, dict) and mailers:
        # Django 6.1+: MAILERS replaces EMAIL_BACKEND (reading the latter would warn).
        backends = {m.get("BACKEND", "") for m in mailers.values() if isinstance(m, dict)}
    else:
        backends = {getattr(settings, "EMAIL_BACKEND", "")}
    return bool(backends & set(PAUBOX_BACKENDS))
