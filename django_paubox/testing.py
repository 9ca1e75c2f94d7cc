"""A test kit for your own test suite: the Paubox sandbox in Django ``TestCase`` classes.

pytest users have the ``paubox_sandbox`` fixture (installed with the package as a pytest
plugin); ``unittest``/``manage.py test`` users mix :class:`PauboxSandboxMixin` into a
``TestCase``. Both give the same :class:`~django_paubox.sandbox.SandboxServer`::

    class ReminderTests(PauboxSandboxMixin, TestCase):
        def test_bounce_is_recorded(self):
            self.paubox_sandbox.set_outcome("pat@example.com", "hard_bounced")
            send_reminder("pat@example.com")
            self.assertEqual(self.paubox_sandbox.last_message.recipients, ["pat@example.com"])
            self.paubox_sandbox.fail_next(503)   # the next API call fails
"""

from __future__ import annotations

from typing import Any, ClassVar

import django
from django.test import override_settings

from .sandbox import SandboxServer
from .sandbox.harness import SANDBOX_API_KEY, SANDBOX_API_USERNAME, sandbox_settings


class PauboxSandboxMixin:
    """One sandbox per test class, reset before each test, with ``PAUBOX`` pointed at it and
    ``paubox_email_backend`` as the email backend for the test: the ``"default"`` entry of
    ``MAILERS`` on Django 6.1+ (other aliases kept), ``EMAIL_BACKEND`` before (Django's test
    runner swaps in its memory backend for either)."""

    paubox_sandbox: ClassVar[SandboxServer]
    #: Seconds before a simulated delivery leaves ``processing``.
    paubox_processing_seconds: ClassVar[float] = 0.2
    paubox_email_backend: ClassVar[str] = "django_paubox.backends.PauboxEmailBackend"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        cls.paubox_sandbox = SandboxServer(
            api_key=SANDBOX_API_KEY,
            api_username=SANDBOX_API_USERNAME,
            processing_seconds=cls.paubox_processing_seconds,
        ).start()
        cls.addClassCleanup(cls.paubox_sandbox.stop)  # type: ignore[attr-defined]

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        sandbox = self.paubox_sandbox
        sandbox.reset()
        sandbox.processing_seconds = self.paubox_processing_seconds
        for manager in (
            sandbox_settings(sandbox),
            email_backend_settings(self.paubox_email_backend),
        ):
            manager.__enter__()
            self.addCleanup(_exit, manager)  # type: ignore[attr-defined]


def email_backend_settings(
    backend: str = "django_paubox.backends.PauboxEmailBackend",
) -> override_settings:
    """``override_settings`` making ``backend`` the default email backend: the ``"default"``
    entry of ``MAILERS`` on Django 6.1+ (other aliases kept), ``EMAIL_BACKEND`` before.

    Django's test runner swaps in its in-memory backend; tests that should reach the sandbox
    put the Paubox backend back with this (a context manager or a decorator), on any Django.
    """
    if django.VERSION >= (6, 1):
        from django.conf import settings

        mailers = dict(getattr(settings, "MAILERS", None) or {})
        mailers["default"] = {"BACKEND": backend}
        return override_settings(MAILERS=mailers)
    return override_settings(EMAIL_BACKEND=backend)


def _exit(manager: Any) -> None:
    manager.__exit__(None, None, None)
