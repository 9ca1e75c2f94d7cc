"""``manage.py paubox_refresh_receipts``: poll Paubox for deliveries that are not final yet."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_settings
from ...exceptions import PauboxConfigError
from ...tracking.polling import poll_receipts
from ...tracking.schedule import due_messages, stop_expired
from ..arguments import positive_int

EXIT_ERRORS = 1
EXIT_USAGE = 2


class Command(BaseCommand):
    help = (
        "Ask Paubox (GET /message_receipt) for the receipts of sent messages whose deliveries "
        "are not final, on each message's back-off schedule, and record what changed. "
        "Exit status: 0 when every receipt was had (or Paubox asked to check back later), "
        "1 when some could not be had (API or network errors; they are retried on the next "
        "run), 2 for bad usage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--limit",
            type=positive_int,
            metavar="N",
            help="Check at most N messages (the most overdue first).",
        )
        parser.add_argument(
            "--tracking-id",
            dest="tracking_ids",
            action="extend",
            nargs="+",
            metavar="ID",
            default=[],
            help="Check these messages (Paubox sourceTrackingId) now, whatever their schedule, "
            "age or status. Repeatable.",
        )
        parser.add_argument(
            "--all",
            action="store_true",
            dest="include_all",
            help="Ignore the schedule: check every sent message with a delivery that is not "
            "final and that is younger than PAUBOX['RECEIPT_MAX_AGE_HOURS'].",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            metavar="N",
            help="Requests in flight at once (default: PAUBOX['RECEIPT_CONCURRENCY'], 16).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # No global key is needed: each message is asked about with the credentials that sent
        # it (its MAILERS alias, DOMAINS entry or label); those that are gone count as errors.
        try:
            conf = get_settings(receipt_concurrency=options.get("concurrency"))
        except PauboxConfigError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None
        for name in ("limit", "concurrency"):  # call_command() bypasses argparse types
            value = options.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise CommandError(f"--{name} must be at least 1.", returncode=EXIT_USAGE)

        stop_expired(conf=conf)
        messages = list(
            due_messages(
                limit=options.get("limit"),
                include_all=options["include_all"],
                tracking_ids=options["tracking_ids"] or None,
                conf=conf,
            ).only("pk", "tracking_id", "sent_at", "created_at", "mailer", "from_email")
        )
        if options["tracking_ids"]:
            missing = sorted(set(options["tracking_ids"]) - {m.tracking_id for m in messages})
            for tracking_id in missing:
                self.stderr.write(f"No sent message with tracking id {tracking_id}.")
        if not messages:
            self.stdout.write("No receipts due.")
            if options["tracking_ids"]:
                raise CommandError("None of the tracking ids is known.", returncode=EXIT_ERRORS)
            return

        on_terminal = self.stdout.isatty()
        progress = self._show_progress if on_terminal else None
        summary = poll_receipts(messages, conf=conf, progress=progress)
        if on_terminal:
            self.stdout.write("")
        self.stdout.write(
            f"Checked {summary.checked}: {summary.changed} deliveries changed, "
            f"{summary.finished} messages final, {summary.not_found_yet} not known to Paubox "
            f"yet, {summary.expired} too old to poll further, {summary.errors} errors."
        )
        for identity, reason in summary.unresolved.items():
            self.stderr.write(f"Not polled ({identity}): {reason}")
        if summary.errors:
            shown = ", ".join(summary.error_tracking_ids[:10])
            more = " …" if summary.errors > 10 else ""
            raise CommandError(
                f"{summary.errors} receipts could not be had ({shown}{more}); they will be "
                "asked for again on the next run.",
                returncode=EXIT_ERRORS,
            )

    def _show_progress(self, done: int, total: int) -> None:
        self.stdout.write(f"\r checked {done}/{total}", ending="")
        self.stdout.flush()
