"""Django email backends that send through Paubox.

:class:`PauboxBackendBase` does what every backend shares: it turns each ``EmailMessage`` into a
Paubox payload (or the reason it cannot be one) and writes its ``Message`` row before anything is
sent. Subclasses decide only how the prepared messages leave: :class:`PauboxEmailBackend` sends
them during the call through the engine in :mod:`django_paubox.sending.dispatch`, and
:class:`PauboxCeleryEmailBackend` leaves them in the outbox for a Celery worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

from . import records, signals
from .client import PauboxClient, shared_client
from .conf import PauboxSettings, get_settings
from .exceptions import PauboxPayloadError
from .models import Message
from .sending import payload as payloads
from .sending.dispatch import Dispatcher, DispatchResult, Prepared, post_send, tag_email
from .sending.options import send_options

logger = logging.getLogger(__name__)

#: A message built for Paubox: (the EmailMessage, its body, its recipients as (kind, address)).
_Built = tuple[EmailMessage, dict[str, Any], list[tuple[str, str]]]
#: A message refused before sending, and why.
_Refused = tuple[EmailMessage, PauboxPayloadError]


class PauboxBackendBase(BaseEmailBackend):
    """Shared by every Paubox backend: settings, connection, payload building, records.

    ``get_connection(api_key=..., api_username=..., api_url=...)`` overrides the ``PAUBOX``
    settings for one connection. Configuration errors are raised even with ``fail_silently``:
    silence would hide that nothing can ever be sent.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        api_key: str | None = None,
        api_username: str | None = None,
        api_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Keep fail_silently ourselves and pass only the rest up: Django 6.1's MAILERS refuses
        # options a backend does not handle, and 6.1 deprecates the base class's attribute.
        super().__init__(**kwargs)
        self.fail_silently = fail_silently
        self._overrides = {"api_key": api_key, "api_username": api_username, "api_url": api_url}
        self.conf = get_settings(**self._overrides)
        if api_key:  # credentials given for this connection: no routing by From domain
            self.conf = replace(self.conf, domains=())
        self.conf.require_credentials()

    def prepare(
        self,
        email_messages: Sequence[EmailMessage],
        *,
        keep_payload: bool,
        state: str = Message.State.SENDING,
    ) -> tuple[list[Prepared], list[Prepared]]:
        """Rows for every message with recipients: (ready to send, refused before sending).

        All rows are written with two bulk inserts, before Paubox is called.
        """
        ready, refused = self.build(self.announce(email_messages))
        return self.write_rows(ready, refused, keep_payload=keep_payload, state=state)

    def announce(self, email_messages: Sequence[EmailMessage]) -> list[EmailMessage]:
        """The messages to send: those with recipients that no ``pre_send`` receiver cancelled.

        Runs before anything is recorded or sent, so that a receiver's exception stops the call
        with nothing done.
        """
        announced = []
        for email in email_messages:
            if not email.recipients():
                continue  # Django's contract: a message without recipients is skipped
            try:
                signals.pre_send.send(sender=Message, message=email, backend=self)
            except signals.CancelSend:
                continue
            announced.append(email)
        return announced

    def build(self, email_messages: Sequence[EmailMessage]) -> tuple[list[_Built], list[_Refused]]:
        """The Paubox payload of each announced message: (ready, refused before sending).

        No database."""
        ready: list[_Built] = []
        refused: list[_Refused] = []
        for email in email_messages:
            try:
                message = payloads.build_message(email, self.conf)
                self.conf.for_sender(message["headers"]["from"])  # a key for its domain?
                body = {
                    "message": message,
                    "extras": payloads.send_extras(email),
                    **send_options(email),  # template, send_at
                }
                ready.append((email, body, payloads.message_recipients(email)))
            except PauboxPayloadError as error:
                refused.append((email, error))
        return ready, refused

    def write_rows(
        self,
        ready: Sequence[_Built],
        refused: Sequence[_Refused],
        *,
        keep_payload: bool,
        state: str = Message.State.SENDING,
    ) -> tuple[list[Prepared], list[Prepared]]:
        """Write the rows of built messages (two bulk inserts); the refused ones are recorded
        as failed, with ``post_send``. Returns (ready to send, refused)."""
        rows = records.create_messages(
            [
                (str(email.subject), str(email.from_email), rcpts, body)
                for email, body, rcpts in ready
            ]
            + [
                (str(email.subject), str(email.from_email), _raw_recipients(email), {})
                for email, _ in refused
            ],
            self.conf,
            keep_payload=keep_payload,
            state=state,
        )
        prepared = [
            Prepared(row=row, payload=body, email=email, recipients=[a for _, a in rcpts])
            for row, (email, body, rcpts) in zip(rows[: len(ready)], ready, strict=True)
        ]
        failed = [
            Prepared(
                row=row,
                payload={},
                email=email,
                error=error,
                recipients=[a for _, a in _raw_recipients(email)],
            )
            for row, (email, error) in zip(rows[len(ready) :], refused, strict=True)
        ]
        for item in failed:
            records.mark_failed([item.row], item.error or "refused", self.conf)
            tag_email(item)
            post_send(item)
        return prepared, failed

    def by_domain(self, prepared: Sequence[Prepared]) -> dict[PauboxSettings, list[Prepared]]:
        """Group messages by the settings (API key) of their From domain, in order."""
        groups: dict[PauboxSettings, list[Prepared]] = {}
        for item in prepared:
            groups.setdefault(self.conf.for_sender(item.sender), []).append(item)
        return groups


def _raw_recipients(email: EmailMessage) -> list[tuple[str, str]]:
    """Recipients of a message refused before sending, kept so that the failure is findable."""
    seen: dict[str, str] = {}
    for kind, addresses in (("to", email.to), ("cc", email.cc), ("bcc", email.bcc)):
        for address in addresses:
            seen.setdefault(str(address).strip().lower()[:320], kind)
    return [(kind, address) for address, kind in seen.items()]


class PauboxEmailBackend(PauboxBackendBase):
    """Sends during the call: ``EMAIL_BACKEND = "django_paubox.backends.PauboxEmailBackend"``.

    Each message gets ``paubox_tracking_id`` (``None`` when it was not sent) and
    ``paubox_message`` (its :class:`~django_paubox.models.Message` row).
    """

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        super().__init__(fail_silently, **kwargs)
        #: One pooled client per sending domain's settings (one in all without DOMAINS).
        self.clients: dict[PauboxSettings, PauboxClient] = {}
        self.opened = False

    @property
    def client(self) -> PauboxClient | None:
        """The connection's client when it has exactly one (no ``DOMAINS``)."""
        return self.clients.get(self.conf)

    def open(self) -> bool:
        if self.opened:
            return False
        self.opened = True
        if not self.conf.domains:
            self.clients[self.conf] = shared_client(self.conf)
        return True

    def close(self) -> None:
        # The clients are the process's pooled ones (client.shared_client): this connection
        # lets go of them, and their kept-alive connections serve the next send_mail().
        self.clients = {}
        self.opened = False

    def client_for(self, conf: PauboxSettings) -> PauboxClient:
        if conf not in self.clients:
            self.clients[conf] = shared_client(conf)
        return self.clients[conf]

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        if len(email_messages) > 1 and not self.conf.domains:
            result = self._send_streaming(email_messages)
        else:
            result = self._send_prepared(email_messages)
        error = result.first_error
        if error is not None and not self.fail_silently:
            raise error
        return len(result.sent)

    def _send_prepared(self, email_messages: Sequence[EmailMessage]) -> DispatchResult:
        """Write every row, then send, grouped by the sending domain's settings."""
        prepared, refused = self.prepare(email_messages, keep_payload=False)
        result = DispatchResult(failed=list(refused))
        if prepared:
            new_connection = self.open()
            try:
                for conf, group in self.by_domain(prepared).items():
                    sent = Dispatcher(self.client_for(conf), conf).dispatch(group)
                    result.sent.extend(sent.sent)
                    result.failed.extend(sent.failed)
            finally:
                if new_connection:
                    self.close()
        return result

    def _send_streaming(self, email_messages: Sequence[EmailMessage]) -> DispatchResult:
        """Bulk with one set of credentials: built and written batch by batch.

        ``pre_send`` runs for every message first, so a receiver's exception still comes
        before anything is recorded or sent. Then batch k+1 is built and its rows written while
        batch k is on the wire (see
        :meth:`~django_paubox.sending.dispatch.Dispatcher.dispatch_batches`), instead of every
        row before the first request; each row still exists before its batch leaves.
        """
        announced = self.announce(email_messages)
        failed: list[Prepared] = []
        new_connection = self.open()
        try:
            dispatcher = Dispatcher(self.client_for(self.conf), self.conf)
            result = dispatcher.dispatch_batches(self._batches(announced, failed))
        finally:
            if new_connection:
                self.close()
        result.failed[:0] = failed
        return result

    def _batches(
        self, announced: Sequence[EmailMessage], failed: list[Prepared]
    ) -> Iterator[list[Prepared]]:
        """Batches of ``BATCH_SIZE``, built and written as each is taken; messages refused
        before sending are recorded as they are met (and added to ``failed``), and leave no gap
        in the batches."""
        size = self.conf.batch_size
        pending: list[Prepared] = []
        for start in range(0, len(announced), size):
            ready, refused = self.build(announced[start : start + size])
            prepared, refused_rows = self.write_rows(ready, refused, keep_payload=False)
            failed.extend(refused_rows)
            pending.extend(prepared)
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
        if pending:
            yield pending


class PauboxCeleryEmailBackend(PauboxBackendBase):
    """A transactional outbox: ``send_messages`` only writes rows, and Celery sends them.

    The rows (with the payload, until Paubox accepts it) commit with the caller's transaction,
    and the task is enqueued on commit: a rolled-back transaction sends nothing, and a message
    whose task was lost is found by ``sweep_outbox``. Returns the number of messages queued;
    ``paubox_tracking_id`` is ``None`` until a worker has sent the message (see
    ``paubox_message.tracking_id`` then).
    """

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        prepared, refused = self.prepare(
            email_messages, keep_payload=True, state=Message.State.QUEUED
        )
        for item in prepared:
            tag_email(item)
        ids = [item.row.pk for item in prepared]
        if ids:
            # Imported here because Celery is an optional dependency (the "celery" extra):
            # the plain backend must import without it.
            from .tasks import enqueue

            batch_size = self.conf.batch_size
            transaction.on_commit(lambda: enqueue(ids, batch_size))
        error = next((item.error for item in refused if item.error is not None), None)
        if error is not None and not self.fail_silently:
            raise error
        return len(prepared)


_MOVED = {
    name: "django_paubox.sending.dispatch"
    for name in ("Prepared", "Dispatcher", "DispatchResult", "resend_stored", "is_transient")
}


def __getattr__(name: str) -> Any:
    """The engine moved to :mod:`django_paubox.sending.dispatch`; the old names warn (0.2)."""
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(
            f"django_paubox.backends.{name} moved to {_MOVED[name]}.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
