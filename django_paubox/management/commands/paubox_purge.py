"""``manage.py paubox_purge``: delete old messages, deliveries and webhook events (retention)."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_settings
from ...exceptions import PauboxConfigError
from ...tracking.retention import PurgeSummary, parse_age, purge
from ..arguments import positive_int

EXIT_USAGE = 2


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


class Command(BaseCommand):
    help = (
        "Delete Paubox messages (with their deliveries and webhook events) created before the "
        "cutoff, and webhook events for unknown messages received before it, in batches. "
        "Webhook payloads hold names and addresses: they follow the same retention. "
        "Shows progress on a terminal. Exit status: 0 on success, 2 for bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=_age,
            metavar="AGE",
            help="Age of what to delete: a whole number and a unit, h (hours), d (days) or "
            "w (weeks), e.g. 90d, 12h, 2w. Default: PAUBOX['PURGE_AFTER_DAYS'] days.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be deleted."
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=1000,
            metavar="N",
            help="Rows deleted per transaction (default 1000).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options.get("older_than")
        if isinstance(older_than, str):  # call_command("paubox_purge", older_than="90d")
            older_than = self._parse(older_than)
        if older_than is None:
            older_than = self._default_age()
        batch_size = options.get("batch_size") or 1000
        if not isinstance(batch_size, int) or batch_size < 1:
            raise CommandError("--batch-size must be at least 1.", returncode=EXIT_USAGE)

        progress = None
        if self.stdout.isatty():

            def progress(running: PurgeSummary) -> None:
                self.stdout.write(
                    f"\r  deleted {running.messages} messages, "
                    f"{running.webhook_events} webhook events...",
                    ending="",
                )
                self.stdout.flush()

        summary = purge(
            older_than, dry_run=options["dry_run"], batch_size=batch_size, progress=progress
        )
        if progress is not None and summary.batches:
            self.stdout.write("")
        verb = "Would delete" if summary.dry_run else "Deleted"
        self.stdout.write(
            f"{verb} {summary.messages} messages, {summary.deliveries} deliveries and "
            f"{summary.webhook_events} webhook events older than "
            f"{summary.cutoff:%Y-%m-%d %H:%M} UTC"
            + ("." if summary.dry_run else f" in {summary.batches} batches.")
        )

    def _parse(self, text: str) -> timedelta:
        try:
            return parse_age(text)
        except ValueError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None

    def _default_age(self) -> timedelta:
        try:
            days = get_settings().purge_after_days
        except PauboxConfigError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None
        if days in (None, ""):
            raise CommandError(
                "Say how old: --older-than 90d, or set PAUBOX['PURGE_AFTER_DAYS'].",
                returncode=EXIT_USAGE,
            )
        try:
            age = timedelta(days=float(days))
        except (TypeError, ValueError):
            raise CommandError(
                "PAUBOX['PURGE_AFTER_DAYS'] must be a number of days.", returncode=EXIT_USAGE
            ) from None
        if age <= timedelta(0):
            raise CommandError(
                "PAUBOX['PURGE_AFTER_DAYS'] must be greater than zero.", returncode=EXIT_USAGE
            )
        return age
