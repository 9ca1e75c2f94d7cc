"""Shared test setup."""

from __future__ import annotations

import pytest

from tests.mailers import PLAIN, use_backend


def pytest_configure(config: pytest.Config) -> None:
    # The sandbox fixtures (paubox_sandbox, paubox_sandbox_server). An installed django-paubox
    # registers this plugin through its pytest11 entry point already; register it only once.
    from django_paubox.sandbox import pytest_plugin

    if not config.pluginmanager.is_registered(pytest_plugin):
        config.pluginmanager.register(pytest_plugin, "django_paubox")


@pytest.fixture(autouse=True)
def _paubox_email_backend(settings):
    """Django's test runner swaps in the locmem backend; these tests are about ours."""
    use_backend(settings, PLAIN)
