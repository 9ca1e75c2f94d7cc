"""The errors django-paubox raises.

Every message says what Paubox said (or what we refused before asking Paubox), and none ever
contains the API key or message content: they end up in logs and in the admin.
"""

from __future__ import annotations

from typing import Any

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
    ) -> None:
        self.status = status
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
        return text

    def __repr__(self) -> str:
        return f"PauboxAPIError(status={self.status!r}, title={self.title!r})"


class BulkItemError(PauboxAPIError):
    """One message of an accepted bulk request that Paubox answered without a tracking id."""


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
