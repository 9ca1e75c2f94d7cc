"""Shared test setup."""

from __future__ import annotations

import pytest

from tests.mailers import PLAIN, use_backend


def pytest_configure(config: pytest.Config) -> None:
    # The sandbox fixtures (paubox_sandbox, paubox_sandbox_server) come from an opt-in plugin
    # (docs/sandbox.md), loaded here for this repository's tests. Registered by hand rather than
    # with `pytest_plugins = [...]`: an older install of django-paubox (an editable one made
    # before the plugin became opt-in) still registers it through its pytest11 entry point, and
    # pytest refuses to load one module twice.
    from django_paubox.sandbox import pytest_plugin

    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "django_paubox.sandbox.pytest_plugin")

    # On Django 6.1+, any use of what 6.1 deprecates (EMAIL_BACKEND, get_connection(),
    # fail_silently/connection arguments...) fails the test that makes it, in every run
    # (.ci/run's .venv and tox alike), not only where PYTEST_ADDOPTS says so.
    import django

    if django.VERSION >= (6, 1):
        config.addinivalue_line(
            "filterwarnings", "error::django.utils.deprecation.RemovedInDjango70Warning"
        )


@pytest.fixture(autouse=True)
def _paubox_email_backend(settings):
    """Django's test runner swaps in the locmem backend; these tests are about ours."""
    use_backend(settings, PLAIN)


@pytest.fixture
def enqueued(monkeypatch):
    """What the outbox handed to the broker (the tasks themselves are called directly)."""
    from django_paubox import tasks  # Celery: only the tests that ask for it import it

    calls: list[list[int]] = []
    monkeypatch.setattr(
        tasks.send_queued, "apply_async", lambda args, **kw: calls.append(list(args[0]))
    )
    return calls
