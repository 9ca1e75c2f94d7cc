"""The errors django-paubox raises.

Every message says what Paubox said (or what we refused before asking Paubox), and none ever
contains the API key or message content: they end up in logs and in the admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured


class PauboxError(Exception):
    """Base of every django-paubox error."""


class PauboxConfigError(PauboxError, ImproperlyConfigured):
    """The ``PAUBOX`` settings are missing something or hold a wrong value."""


class CredentialsNotFound(PauboxConfigError):
    """The credentials that sent a message cannot be found in the settings any more.

    ``identity`` is the non-secret name recorded on the message (``Message.mailer``): a
    ``MAILERS`` alias that was removed, a ``DOMAINS`` or ``CONNECTIONS`` entry that is gone, or
    credentials given to ``get_connection()`` that were never in the settings. Nothing falls
    back to another key: the message fails, or its receipts stop being polled, with this reason.
    """

    def __init__(self, identity: str, reason: str) -> None:
        super().__init__(reason)
        self.identity = identity


class PauboxPayloadError(PauboxError, ValueError):
    """A message cannot be sent through Paubox as it is; raised before any HTTP."""


_HEADER_ERROR_DOC = """A line break in a subject, header value or address (header injection).

    Also Django's ``BadHeaderError``, so that a view written as Django's docs teach catches it;
    raised before any HTTP, with or without ``fail_silently``, as Django's own backends do.
    """

if TYPE_CHECKING:
    from django.core.mail.message import BadHeaderError

    class PauboxHeaderError(PauboxPayloadError, BadHeaderError):
        __doc__ = _HEADER_ERROR_DOC


def _header_error_class() -> type[PauboxPayloadError]:
    """``PauboxHeaderError``, made on first use: ``BadHeaderError`` lives in Django's mail
    package, which imports settings, and the sandbox imports this module without a project.
    (Taken from ``django.core.mail.message``: Django 6.1 deprecates importing it from
    ``django.core.mail``, and makes it ``ValueError`` itself.)"""
    from django.core.mail.message import BadHeaderError

    cls = type(
        "PauboxHeaderError",
        (PauboxPayloadError, BadHeaderError),
        {"__doc__": _HEADER_ERROR_DOC, "__module__": __name__},
    )
    globals()["PauboxHeaderError"] = cls
    return cls


def __getattr__(name: str) -> Any:
    if name == "PauboxHeaderError":
        return _header_error_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class PauboxConnectionError(PauboxError):
    """No usable answer from Paubox: connection refused or reset, or a timeout.

    ``may_have_been_sent`` is true when the request may have reached Paubox (it was written
    before the failure), so sending again could deliver the message twice.
    """

    def __init__(self, description: str, *, may_have_been_sent: bool) -> None:
        self.description = description
        self.may_have_been_sent = may_have_been_sent
        super().__init__(description)

    @property
    def status(self) -> None:
        return None

    def __str__(self) -> str:
        ambiguity = (
            " The request may have reached Paubox."
            if self.may_have_been_sent
            else " The request did not reach Paubox."
        )
        return f"Paubox could not be reached: {self.description}.{ambiguity}"


class PauboxAPIError(PauboxError):
    """Paubox answered with an error status (or an unusable body).

    Attributes hold what Paubox said: ``status`` (HTTP), and from the first error of its body
    ``code``, ``title`` and ``details``; ``request_id`` when the response carried one;
    ``tracking_id`` for receipt look-ups; ``hint`` is our own advice (401, HTML 404).
    ``may_have_been_sent`` is true when Paubox may have taken the request all the same (see
    :class:`PauboxAmbiguousResponse`): sending again could deliver the message twice.
    """

    def __init__(
        self,
        status: int,
        *,
        code: Any = None,
        title: str = "",
        details: str = "",
        request_id: str = "",
        tracking_id: str = "",
        hint: str = "",
        errors: list[dict[str, Any]] | None = None,
        may_have_been_sent: bool = False,
    ) -> None:
        self.status = status
        self.may_have_been_sent = may_have_been_sent
        self.code = code
        self.title = title
        self.details = details
        self.request_id = request_id
        self.tracking_id = tracking_id
        self.hint = hint
        self.errors = errors or []
        super().__init__(str(self))

    @property
    def retryable(self) -> bool:
        """True for statuses that mean "try again later" (rate limits, server errors)."""
        return self.status == 429 or self.status >= 500

    def __str__(self) -> str:
        said = ": ".join(part for part in (self.title, self.details) if part) or "no details"
        text = f"Paubox API error {self.status}: {said}"
        if self.tracking_id:
            text += f" (sourceTrackingId {self.tracking_id})"
        if self.request_id:
            text += f" (request id {self.request_id})"
        if self.hint:
            text += f". {self.hint}"
        if self.may_have_been_sent:
            text += ". The request may have reached Paubox: it was not sent again"
        return text

    def __repr__(self) -> str:
        return f"PauboxAPIError(status={self.status!r}, title={self.title!r})"


class PauboxAmbiguousResponse(PauboxAPIError):
    """Paubox answered a send with success (2xx) but an answer we cannot use.

    A body that is not JSON, has no usable ``sourceTrackingId`` (missing, too long to store,
    given twice) or, for ``/bulk_messages``, not one result per message: Paubox probably took
    the request, so this is never a refusal and the message is not sent again (unless
    ``RESEND_AMBIGUOUS``), exactly like a read timeout.
    """

    def __init__(self, status: int, **kwargs: Any) -> None:
        kwargs.setdefault("may_have_been_sent", True)
        super().__init__(status, **kwargs)


class BulkItemError(PauboxAPIError):
    """One message of an accepted bulk request that Paubox answered without a tracking id.

    ``may_have_been_sent`` is true unless Paubox's entry for it said why it was refused.
    """


class NotScheduled(PauboxError, ValueError):
    """The message is not a scheduled send that has yet to go out, or the new time is wrong."""


class InvalidWebhookEvent(PauboxError, ValueError):
    """A webhook body that is not a Paubox event; the message is short and safe to return."""


class CancelSend(PauboxError):
    """Raised by a ``pre_send`` receiver to drop one message without sending it."""


class HandlebarsError(PauboxError, ValueError):
    """A template this renderer cannot render."""


class HandlebarsSyntaxError(HandlebarsError):
    """The template is not valid Handlebars (an unclosed block, a stray ``{{/if}}``...)."""


class HandlebarsUnsupported(HandlebarsError):
    """Valid Handlebars that uses something beyond the supported subset (a helper, partial...)."""


class SandboxControlError(PauboxError, RuntimeError):
    """The sandbox's control API refused a request (bad argument) or could not be reached.

    Raised by :class:`django_paubox.sandbox.SandboxControl`; also importable from
    ``django_paubox.sandbox`` and ``django_paubox.sandbox.control``.
    """


class SandboxAnswer(Exception):
    """Raised inside a sandbox route to answer at once with ``status`` and a JSON ``body``.

    Control flow of :mod:`django_paubox.sandbox` only: the sandbox's handler catches it and
    writes the answer (a Paubox error body, usually); it never reaches the sandbox's callers.
    """

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


class RecipientsSuppressed(PauboxError):
    """Nothing was sent: every recipient is on the suppression list (or only bcc ones are left).

    Recorded as the message's error and passed to ``post_send``; the backends do not raise it,
    since not mailing a suppressed address is the policy working, not a failure of the caller.
    """
