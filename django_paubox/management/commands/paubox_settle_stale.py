"""``manage.py paubox_settle_stale``: settle messages left ``sending`` by a process that died.

What ``sweep_outbox`` does for stale claims, without Celery: a web worker killed during the
request to Paubox (gunicorn's timeout, an OOM kill, a deploy) leaves its rows ``sending``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import records
from ...conf import get_settings
from ...exceptions import PauboxConfigError
from ...models import Message

EXIT_USAGE = 2


class Command(BaseCommand):
    help = (
        "Fail Paubox messages left 'sending' for longer than PAUBOX['OUTBOX_STALE_SECONDS'] "
        "(the process sending them died), with a reason that says they may have reached "
        "Paubox. Outbox messages go back to the outbox instead with RESEND_AMBIGUOUS. Run it "
        "from cron when Celery's sweep_outbox does not run. Exit status: 0 on success, 2 for "
        "bad settings."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only count the stale messages.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            conf = get_settings()
        except PauboxConfigError as error:
            raise CommandError(str(error), returncode=EXIT_USAGE) from None
        _, stale = records.stale_outbox(conf)
        if options["dry_run"]:
            self.stdout.write(f"{len(stale)} message(s) stale in 'sending'.")
            return
        requeued = records.release_stale_claims(stale, conf)
        handed = _enqueue(requeued, conf.batch_size)
        failed = Message.objects.filter(pk__in=stale, state=Message.State.FAILED).count()
        self.stdout.write(
            f"Settled {len(stale)} stale message(s): {failed} failed as 'may have reached "
            f"Paubox', {len(requeued)} back in the outbox"
            + (f" ({handed} handed to Celery)." if requeued else ".")
        )


def _enqueue(message_ids: list[int], batch_size: int) -> int:
    """Hand requeued outbox messages to Celery when it is installed (else the sweeper will)."""
    if not message_ids:
        return 0
    try:
        from ...tasks import enqueue
    except ImportError:  # Celery is optional; the rows wait in the outbox
        return 0
    records.mark_enqueued(message_ids)
    return enqueue(message_ids, batch_size)
