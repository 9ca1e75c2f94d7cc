"""Email backends the way each Django version makes them: ``MAILERS`` on Django 6.1+ (where
``EMAIL_BACKEND`` and ``get_connection()`` are deprecated), ``EMAIL_BACKEND`` and
``get_connection()`` before. The suite runs on 6.1 with those deprecations as errors."""

from __future__ import annotations

from typing import Any

import django
from django.core.mail import get_connection
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.module_loading import import_string

DJANGO_61 = django.VERSION >= (6, 1)
PLAIN = "django_paubox.backends.PauboxEmailBackend"
CELERY = "django_paubox.backends.PauboxCeleryEmailBackend"


def use_backend(
    settings: Any, backend: str, options: dict[str, Any] | None = None, **mailers: Any
) -> None:
    """``backend`` as the default email backend (pytest-django's ``settings`` fixture);
    on 6.1, with ``options`` as its ``OPTIONS`` and ``mailers`` as further ``MAILERS``."""
    if DJANGO_61:
        settings.MAILERS = {"default": {"BACKEND": backend, "OPTIONS": options or {}}, **mailers}
    else:
        assert not mailers and not options, "MAILERS needs Django 6.1"
        settings.EMAIL_BACKEND = backend


def default_connection() -> BaseEmailBackend:
    """The default mailer: ``mailers.default`` on 6.1, ``get_connection()`` before."""
    if DJANGO_61:
        from django.core.mail import mailers  # type: ignore[attr-defined]

        return mailers.default
    return get_connection()


def new_connection(backend: str | None = PLAIN, **options: Any) -> BaseEmailBackend:
    """A new connection to ``backend`` (None: the default one's class): ``get_connection()``
    before 6.1; on 6.1 the class itself (what ``get_connection()`` did), so that no deprecated
    API is called."""
    if DJANGO_61:
        from django.conf import settings

        return import_string(backend or settings.MAILERS["default"]["BACKEND"])(**options)
    return get_connection(backend, **options)
