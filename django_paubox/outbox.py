"""Queueing large sends through the Celery outbox, a chunk at a time.

This is a front door beside the backends (it uses :class:`PauboxCeleryEmailBackend` as your
code would); handing rows to the broker is :func:`django_paubox.tasks.enqueue`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from django.core.mail import EmailMessage

from .backends import PauboxCeleryEmailBackend


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
        connection = PauboxCeleryEmailBackend()
    return sum(connection.send_messages(chunk) for chunk in _chunked(messages, chunk_size))
