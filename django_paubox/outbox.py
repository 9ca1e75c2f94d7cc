"""Queueing large sends through the Celery outbox, a chunk at a time.

This is a front door beside the backends (it uses :class:`PauboxCeleryEmailBackend` as your
code would); handing rows to the broker is :func:`django_paubox.tasks.enqueue`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import django
from django.core.mail import EmailMessage

from .backends import PauboxCeleryEmailBackend
from .exceptions import PauboxConfigError


def _chunked(items: Iterable[EmailMessage], size: int) -> Iterator[list[EmailMessage]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def queue_messages(
    messages: Iterable[EmailMessage],
    *,
    chunk_size: int = 500,
    connection: PauboxCeleryEmailBackend | None = None,
    using: str | None = None,
) -> int:
    """Queue any number of messages for bulk sending by Celery workers; returns how many.

    ``messages`` may be a generator: it is consumed ``chunk_size`` at a time, so 100,000
    reminders never sit in memory at once. Workers send them in ``/bulk_messages`` batches.
    ``using`` names a ``MAILERS`` alias (Django 6.1+) whose backend is the Celery one; without
    it (or ``connection``), the global ``PAUBOX`` settings are used.
    """
    if connection is None:
        connection = _outbox(using) if using is not None else PauboxCeleryEmailBackend()
    return sum(connection.send_messages(chunk) for chunk in _chunked(messages, chunk_size))


def _outbox(alias: str) -> PauboxCeleryEmailBackend:
    """``mailers[alias]``, which must be the Celery outbox backend."""
    if django.VERSION < (6, 1):
        raise PauboxConfigError("queue_messages(using=...) needs Django 6.1's MAILERS.")
    from django.core.mail import mailers  # type: ignore[attr-defined,unused-ignore]

    backend = mailers[alias]
    if not isinstance(backend, PauboxCeleryEmailBackend):
        raise PauboxConfigError(
            f'Paubox: MAILERS["{alias}"] is not a PauboxCeleryEmailBackend, so queue_messages() '
            "cannot queue through it."
        )
    return backend
