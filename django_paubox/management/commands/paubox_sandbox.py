"""``manage.py paubox_sandbox``: run the local Paubox sandbox for this project.

The same options as ``python -m django_paubox.sandbox``; the API key and username default to
``PAUBOX["API_KEY"]``/``PAUBOX["API_USERNAME"]`` (or their environment variables) when set, so
the project's own settings work against it unchanged. The key is never printed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_paubox.conf import get_settings
from django_paubox.exceptions import PauboxConfigError
from django_paubox.sandbox import cli

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Command(BaseCommand):
    help = (
        "Run a local Paubox Email API sandbox (nothing leaves this machine) until stopped. "
        "Exit status: 0 when stopped (Ctrl-C), 1 when it cannot start (e.g. the port is "
        "taken), 2 for bad usage."
    )
    requires_system_checks: list[str] = []  # a dev server for the API; checks would only slow it

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            conf = get_settings()
        except PauboxConfigError as error:
            raise CommandError(str(error)) from None
        key_source = "--api-key"
        if options.get("api_key") is None and conf.api_key:
            options["api_key"] = conf.api_key
            key_source = 'your PAUBOX["API_KEY"]'
        if options.get("api_username") is None and conf.api_username:
            options["api_username"] = conf.api_username
        try:
            cli.run(
                options,
                out=self.stdout,
                key_source=key_source,
                notes=_url_notes(conf.api_url, options["port"]),
            )
        except (OSError, ValueError) as error:
            raise CommandError(f"Paubox sandbox: {error}") from None


def _url_notes(api_url: str, port: int) -> list[str]:
    """A reminder when the project's API_URL does not point at this sandbox."""
    parts = urlsplit(api_url)
    if parts.hostname in LOOPBACK and (port == 0 or parts.port == port):
        return []
    return [
        f'Note: PAUBOX["API_URL"] is {api_url}; set it to the API_URL below to use this sandbox.',
        "",
    ]
