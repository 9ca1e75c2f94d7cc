"""Pytest fixtures for the Paubox sandbox (registered as the ``django_paubox`` pytest11 plugin).

- ``paubox_sandbox_server`` (session): one running :class:`SandboxServer` for the whole run.
- ``paubox_sandbox`` (function): the same server, reset (messages, requests, faults, outcomes,
  latency, webhook URL, credentials) with a short ``processing_seconds`` (0.2 s; assign
  ``paubox_sandbox.processing_seconds`` to change it for one test), and, when Django settings
  are configured, ``settings.PAUBOX`` pointed at it for the test (API_URL, API_KEY,
  API_USERNAME; other PAUBOX keys kept) and restored afterwards.

The server demands ``SANDBOX_API_KEY`` and ``SANDBOX_API_USERNAME`` (the settings get them), so a
client that sends the wrong key meets a real 401; a test may set ``paubox_sandbox.api_key = None``
(any key) or another value, and the next test gets the defaults back.

Django is imported only inside the fixture, so non-Django pytest runs are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import (
    DEFAULT_PROCESSING_SECONDS,
    SANDBOX_API_KEY,
    SANDBOX_API_USERNAME,
    sandbox_settings,
)
from .server import SandboxServer

__all__ = [
    "DEFAULT_PROCESSING_SECONDS",
    "SANDBOX_API_KEY",
    "SANDBOX_API_USERNAME",
    "paubox_sandbox",
    "paubox_sandbox_server",
    "sandbox_settings",
]


@pytest.fixture(scope="session")
def paubox_sandbox_server() -> Iterator[SandboxServer]:
    """A sandbox serving for the whole test session (use ``paubox_sandbox`` in tests)."""
    server = SandboxServer(
        api_key=SANDBOX_API_KEY,
        api_username=SANDBOX_API_USERNAME,
        processing_seconds=DEFAULT_PROCESSING_SECONDS,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def paubox_sandbox(paubox_sandbox_server: SandboxServer) -> Iterator[SandboxServer]:
    """A freshly reset sandbox, with ``settings.PAUBOX`` pointing at it during the test."""
    server = paubox_sandbox_server
    credentials = (server.api_key, server.api_username)
    _fresh(server, credentials)
    with sandbox_settings(server):
        try:
            yield server
        finally:
            _fresh(server, credentials)


def _fresh(server: SandboxServer, credentials: tuple[str | None, str | None]) -> None:
    server.api_key, server.api_username = credentials
    server.reset()
    server.processing_seconds = DEFAULT_PROCESSING_SECONDS
    server.webhook_url = None
    server.timeout_hold_seconds = 30.0
