"""The Celery outbox: handing queued messages to the broker, and queueing large sends.

Rows are the source of truth, the broker only a doorbell: a message is enqueued by id after
its row commits, and a row whose doorbell was lost (broker down, worker dead) is found again by
the ``sweep_outbox`` task. So a broker failure here is logged, never raised to the sender.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING

from django.core.mail import EmailMessage

if TYPE_CHECKING:
    from .backends import PauboxCeleryEmailBackend

logger = logging.getLogger(__name__)


def enqueue(message_ids: Sequence[int], batch_size: int) -> int:
    """Send one ``send_queued`` task per batch; returns how many messages were handed over."""
    from .tasks import send_queued

    handed = 0
    for start in range(0, len(message_ids), batch_size):
        batch = list(message_ids[start : start + batch_size])
        try:
            send_queued.apply_async(
                (batch,),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as error:  # any broker failure: the rows are safe, the sweeper retries
            logger.warning(
                "Paubox outbox: the broker is unreachable (%s); %d message(s) stay queued until "
                "sweep_outbox enqueues them",
                type(error).__name__,
                len(message_ids) - handed,
            )
            break
        handed += len(batch)
    return handed


def _chunked(items: Iterable[EmailMessage], size: int) -> Iterator[list[EmailMessage]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def queue_messages(
    messages: Iterable[EmailMessage],
    *,
    chunk_size: int = 500,
    connection: PauboxCeleryEmailBackend | None = None,
) -> int:
    """Queue any number of messages for bulk sending by Celery workers; returns how many.

    ``messages`` may be a generator: it is consumed ``chunk_size`` at a time, so 100,000
    reminders never sit in memory at once. Workers send them in ``/bulk_messages`` batches.
    """
    if connection is None:
        from .backends import PauboxCeleryEmailBackend

        connection = PauboxCeleryEmailBackend()
    return sum(connection.send_messages(chunk) for chunk in _chunked(messages, chunk_size))
