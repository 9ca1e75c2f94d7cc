"""Django email backends that send through Paubox.

:class:`PauboxBackendBase` does what every backend shares: it turns each ``EmailMessage`` into a
Paubox payload (or the reason it cannot be one) and writes its ``Message`` row before anything is
sent. Subclasses decide only how the prepared messages leave: :class:`PauboxEmailBackend` sends
them during the call through the engine in :mod:`django_paubox.sending.dispatch`, and
:class:`PauboxCeleryEmailBackend` leaves them in the outbox for a Celery worker.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

from . import records, signals
from .client import PauboxClient, shared_client
from .conf import PauboxSettings
from .credentials import (
    MAILER_OPTIONS,
    UNNAMED_IDENTITY,
    configured_identity,
    connection_conf,
    connection_identity,
    identity_for_sender,
    label_identity,
    settings_for,
)
from .exceptions import (
    PauboxConfigError,
    PauboxHeaderError,
    PauboxPayloadError,
    RecipientsSuppressed,
)
from .models import Message
from .sending import payload as payloads
from .sending.dispatch import (
    Dispatcher,
    DispatchResult,
    Prepared,
    post_send,
    record_left_out,
    tag_email,
)
from .sending.metadata import read_metadata, read_tags
from .sending.options import send_options
from .sending.unsubscribe import unsubscribe_target

logger = logging.getLogger(__name__)

#: A message whose payload was built: (the EmailMessage, its body, its (kind, address) list).
_Built = tuple[EmailMessage, dict[str, Any], list[tuple[str, str]]]
#: A message refused before sending, and why.
_Refused = tuple[EmailMessage, PauboxPayloadError]


class PauboxBackendBase(BaseEmailBackend):
    """Shared by every Paubox backend: settings, connection, payload building, records.

    Django 6.1+: a ``MAILERS`` entry's ``OPTIONS`` are the lower-case ``PAUBOX`` keys listed in
    :data:`django_paubox.credentials.MAILER_OPTIONS` (``PAUBOX`` supplies the rest); an unknown
    one is refused, naming it. Django 4.2/5.2: ``get_connection(api_key=..., api_username=...,
    api_url=..., label=...)`` overrides the ``PAUBOX`` settings for one connection; ``label``
    names a ``PAUBOX["CONNECTIONS"]`` entry, so that later calls about its messages (outbox,
    receipts, cancel) find the same credentials. Configuration errors are raised even with
    ``fail_silently``: silence would hide that nothing can ever be sent.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        alias: str | None = None,
        label: str | None = None,
        **kwargs: Any,
    ) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k in MAILER_OPTIONS}
        # Keep fail_silently ourselves and pass only the rest up: Django 6.1's MAILERS refuses
        # options a backend does not handle (naming them), and deprecates the base attribute.
        if alias is not None:
            kwargs["alias"] = alias
        super().__init__(**kwargs)
        self.alias = alias
        self.fail_silently = fail_silently
        if label is not None:  # PAUBOX["CONNECTIONS"][label]; given credentials must match
            named = _credentials_of(settings_for(label_identity(label)))
            clash = sorted(
                key
                for key, value in options.items()
                if key in named and value is not None and str(value).rstrip("/") != named[key]
            )
            if clash:
                raise PauboxConfigError(
                    f"Paubox: {', '.join(clash)} given with label={label!r} differ from "
                    f'PAUBOX["CONNECTIONS"]["{label}"]; later calls about these messages would '
                    "use the latter. Pass the label alone, or fix the entry."
                )
            options = {**options, **named}
        self.conf = connection_conf(options)
        self.conf.require_credentials()
        #: The non-secret name of these credentials, recorded on every message it writes.
        self.identity = configured_identity(
            options, alias=alias, label=label
        ) or connection_identity(self.conf, alias=alias, label=label)
        if self.identity == UNNAMED_IDENTITY:
            self.unnamed_credentials()

    def unnamed_credentials(self) -> None:
        """Credentials in no setting: messages send, but nothing can speak about them later."""
        logger.warning(
            "Paubox: a connection was given credentials that are in no setting; receipts and "
            'cancellation of its messages will fail. Name them in PAUBOX["CONNECTIONS"] and '
            "pass get_connection(label=...), or use a MAILERS alias (Django 6.1+)."
        )

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
        announced = self.announce(email_messages)
        ready, refused = self.build(announced, bulk=len(email_messages) > 1)
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

    def build(
        self, email_messages: Sequence[EmailMessage], *, bulk: bool
    ) -> tuple[list[_Built], list[_Refused]]:
        """The Paubox payload of each announced message: (ready, refused before sending).

        ``bulk``: the call sends more than one message (``PAUBOX["UNSUBSCRIBE_BULK"]``). No
        database."""
        ready: list[_Built] = []
        refused: list[_Refused] = []
        for email in email_messages:
            try:
                message = payloads.build_message(email, self.conf)
                self.conf.for_sender(message["headers"]["from"])  # a key for its domain?
                recipients = payloads.message_recipients(email)
                body = {
                    "message": message,
                    "extras": payloads.send_extras(email),
                    **send_options(email),  # template, send_at
                    **_listing(email, recipients, self.conf, bulk=bulk),  # metadata, tags...
                }
                ready.append((email, body, recipients))
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
        """Write the rows of built messages (two bulk inserts and one suppression lookup, or
        one statement for one message on PostgreSQL); the refused ones are recorded as failed,
        with ``post_send``. Returns (ready to send, refused)."""
        rows_of = [
            (str(email.subject), str(email.from_email), rcpts, body) for email, body, rcpts in ready
        ] + [
            (
                _storable(str(email.subject)),
                _storable(str(email.from_email)),
                _raw_recipients(email),
                {},
            )
            for email, _ in refused
        ]
        options: dict[str, Any] = {
            "keep_payload": keep_payload,
            "state": state,
            "mailers": [
                identity_for_sender(self.identity, self.conf, body["message"]["headers"]["from"])
                for _, body, _ in ready
            ]
            + [self.identity] * len(refused),
            "display_names": [payloads.recipient_display_names(email) for email, _, _ in ready]
            + [{} for _ in refused],
        }
        if not self.conf.suppression:
            rows = records.create_messages(rows_of, self.conf, **options)
            suppressed = self.leave_out_suppressed(ready, {})
        elif not (keep_payload or self.conf.store_content):
            # Nothing written depends on the lookup: it comes with the rows (one statement
            # for a send_mail() on PostgreSQL).
            rows, listed = records.create_messages_checking_suppression(
                rows_of, self.conf, **options
            )
            suppressed = self.leave_out_suppressed(ready, listed)
        else:
            # The stored payloads leave suppressed recipients out: the lookup comes first, in
            # the rows' transaction.
            with transaction.atomic():
                listed = records.suppressed_addresses(a for _, _, rcpts in ready for _, a in rcpts)
                suppressed = self.leave_out_suppressed(ready, listed)
                rows = records.create_messages(rows_of, self.conf, **options)
        prepared = [
            Prepared(
                row=row,
                payload=body,
                email=email,
                recipients=[a for _, a in rcpts],
                suppressed=left_out,
                error=error,
            )
            for row, (email, body, rcpts), (left_out, error) in zip(
                rows[: len(ready)], ready, suppressed, strict=True
            )
        ]
        if any(item.suppressed for item in prepared):
            record_left_out(
                [(item.row, item.suppressed) for item in prepared if item.suppressed],
                [item for item in prepared if item.error is not None],
                self.conf,
            )
            prepared = [item for item in prepared if item.error is None]
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

    def leave_out_suppressed(
        self, ready: Sequence[_Built], listed: Mapping[str, str]
    ) -> list[tuple[dict[str, str], RecipientsSuppressed | None]]:
        """Take the ``listed`` (suppressed) addresses out of the payloads.

        Returns, per message, ``({address: reason}, error)``: the error when nobody (or only
        bcc) is left to send to.
        """
        out: list[tuple[dict[str, str], RecipientsSuppressed | None]] = []
        for _, body, rcpts in ready:
            left_out = {a: listed[a] for _, a in rcpts if a in listed}
            error = None
            if left_out:
                try:
                    body["message"] = payloads.without_recipients(body["message"], left_out)
                except RecipientsSuppressed as exc:
                    error = exc
            out.append((left_out, error))
        return out

    def by_domain(self, prepared: Sequence[Prepared]) -> dict[PauboxSettings, list[Prepared]]:
        """Group messages by the settings (API key) of their From domain, in order."""
        groups: dict[PauboxSettings, list[Prepared]] = {}
        for item in prepared:
            groups.setdefault(self.conf.for_sender(item.sender), []).append(item)
        return groups


def _listing(
    email: EmailMessage, recipients: list[tuple[str, str]], conf: PauboxSettings, *, bulk: bool
) -> dict[str, Any]:
    """What the row keeps beside the Paubox message: metadata and tags (validated by
    ``build_message`` already), and the address of a one-click unsubscribe, if any."""
    extra: dict[str, Any] = {
        "metadata": read_metadata(email),
        "tags": read_tags(email),
    }
    address = unsubscribe_target(email, recipients, conf, bulk=bulk)
    if address:
        extra["unsubscribe"] = address
    return extra


def _credentials_of(conf: PauboxSettings) -> dict[str, str]:
    return {
        "api_key": conf.api_key,
        "api_username": conf.api_username,
        "api_url": conf.api_url.rstrip("/"),
        "auth_scheme": conf.auth_scheme,
    }


def _raw_recipients(email: EmailMessage) -> list[tuple[str, str]]:
    """Recipients of a message refused before sending, kept so that the failure is findable."""
    seen: dict[str, str] = {}
    for kind, addresses in (("to", email.to), ("cc", email.cc), ("bcc", email.bcc)):
        for address in addresses:
            seen.setdefault(_storable(str(address)).strip().lower()[:320], kind)
    return [(kind, address) for address, kind in seen.items()]


def _storable(text: str) -> str:
    """Text of a refused message as a database can store it: PostgreSQL refuses NUL."""
    return text.replace("\x00", "\ufffd")


def _raise_header_error(refused: Sequence[Prepared]) -> None:
    """Header injection raises ``BadHeaderError`` even with ``fail_silently``, as Django's own
    backends do; the message was refused (and recorded) before any HTTP, the others went on."""
    for item in refused:
        if isinstance(item.error, PauboxHeaderError):
            raise item.error


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
        _raise_header_error(result.failed)
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
            ready, refused = self.build(announced[start : start + size], bulk=True)
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

    def unnamed_credentials(self) -> None:
        raise PauboxConfigError(
            "Paubox: the Celery outbox cannot send with credentials that are in no setting: the "
            'worker would not find them. Name them in PAUBOX["CONNECTIONS"] and pass '
            "get_connection(label=...), or use a MAILERS alias (Django 6.1+)."
        )

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
        _raise_header_error(refused)
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
