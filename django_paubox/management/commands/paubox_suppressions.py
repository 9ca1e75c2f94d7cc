"""``manage.py paubox_suppressions``: list, add, remove and export suppressed addresses."""

from __future__ import annotations

import csv
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email

from ...models import Suppression
from ...records import suppressions

REASONS = [choice.value for choice in Suppression.Reason]


class Command(BaseCommand):
    help = (
        "The suppression list (addresses that are not mailed again): list, add, remove or "
        "export them. Exit status: 0 on success, 1 for a bad address."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listing = actions.add_parser("list", help="Print suppressed addresses, newest first.")
        listing.add_argument("--reason", choices=REASONS, help="Only those of this reason.")
        listing.add_argument("--search", metavar="TEXT", help="Only addresses containing TEXT.")
        add = actions.add_parser("add", help="Suppress addresses (reason: manual).")
        add.add_argument("addresses", nargs="+", metavar="ADDRESS")
        add.add_argument("--note", default="", help="A note kept with each new row.")
        remove = actions.add_parser("remove", help="Take addresses off the list.")
        remove.add_argument("addresses", nargs="+", metavar="ADDRESS")
        export = actions.add_parser("export", help="Write the list as CSV to stdout.")
        export.add_argument("--reason", choices=REASONS, help="Only those of this reason.")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action in ("list", "export"):
            rows = Suppression.objects.order_by("-created_at", "-id")
            if options.get("reason"):
                rows = rows.filter(reason=options["reason"])
            if options.get("search"):
                rows = rows.filter(address__icontains=options["search"].strip().lower())
            if action == "export":
                self._export(rows)
            else:
                for row in rows.iterator():
                    self.stdout.write(f"{row.address}\t{row.reason}\t{row.created_at.isoformat()}")
            return
        addresses = [suppressions.normalise(a) for a in options["addresses"]]
        if action == "add":
            for address in addresses:
                try:
                    validate_email(address)
                except ValidationError:
                    raise CommandError(f"Not an email address: {address!r}") from None
            for address in addresses:
                row, created = suppressions.add(address, note=options.get("note") or "")
                self.stdout.write(
                    f"{address}: added"
                    if created
                    else f"{address}: already suppressed ({row.reason})"
                )
            return
        removed = suppressions.remove(addresses)
        self.stdout.write(f"Removed {removed} of {len(set(addresses))} address(es).")

    def _export(self, rows: Any) -> None:
        writer = csv.writer(self.stdout, lineterminator="\n")
        writer.writerow(["address", "reason", "created_at", "message_tracking_id", "note"])
        for row in rows.select_related("message").iterator():
            writer.writerow(
                [
                    row.address,
                    row.reason,
                    row.created_at.isoformat(),
                    (row.message.tracking_id or "") if row.message else "",
                    row.note,
                ]
            )
