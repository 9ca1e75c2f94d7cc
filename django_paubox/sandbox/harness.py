"""What the pytest fixtures and the ``TestCase`` mixin share: the credentials their sandbox
demands, and pointing ``settings.PAUBOX`` at a sandbox. No pytest here, so that
:mod:`django_paubox.testing` works in suites that run with ``manage.py test`` alone."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from .server import SandboxServer

#: Credentials the test sandbox demands (a wrong key in a test is a real 401).
SANDBOX_API_KEY = "sandbox-test-key"
SANDBOX_API_USERNAME = "sandbox-user"
DEFAULT_PROCESSING_SECONDS = 0.2


def _django_settings_ready() -> bool:
    if "django" not in sys.modules and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return False
    try:
        from django.conf import settings
    except ImportError:
        return False
    return bool(settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"))


def sandbox_settings(server: SandboxServer) -> AbstractContextManager[Any]:
    """``override_settings(PAUBOX=...)`` for ``server``, or nothing without Django settings.

    Public: :class:`django_paubox.testing.PauboxSandboxMixin` uses it too."""
    if not _django_settings_ready():
        return nullcontext()
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    try:
        current = dict(getattr(settings, "PAUBOX", None) or {})
    except ImproperlyConfigured:
        return nullcontext()
    current.update(
        API_URL=server.url,
        API_KEY=server.api_key or SANDBOX_API_KEY,
        API_USERNAME=server.username,
    )
    return override_settings(PAUBOX=current)
