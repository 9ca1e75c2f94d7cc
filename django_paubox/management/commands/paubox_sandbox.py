"""``manage.py paubox_sandbox``: run the local Paubox sandbox for this project.

The same options as ``python -m django_paubox.sandbox``; the API key and username default to
``PAUBOX["API_KEY"]``/``PAUBOX["API_USERNAME"]`` (or their environment variables) when set, so
the project's own settings work against it unchanged. The key is never printed.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_paubox.conf import get_settings
from django_paubox.exceptions import PauboxConfigError
from django_paubox.sandbox import cli


class Command(BaseCommand):
    help = "Run a local Paubox Email API sandbox (nothing leaves this machine)."
    requires_system_checks: list[str] = []  # a dev server for the API; checks would only slow it

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        key_source = "--api-key"
        try:
            conf = get_settings()
        except PauboxConfigError as error:
            raise CommandError(str(error)) from None
        if options.get("api_key") is None and conf.api_key:
            options["api_key"] = conf.api_key
            key_source = 'your PAUBOX["API_KEY"]'
        if options.get("api_username") is None and conf.api_username:
            options["api_username"] = conf.api_username
        try:
            cli.run(options, out=self.stdout, key_source=key_source)
        except (OSError, ValueError) as error:
            raise CommandError(f"Paubox sandbox: {error}") from None
