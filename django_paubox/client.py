"""PauboxClient: the only code that speaks HTTP to Paubox.

One pooled ``requests.Session`` per client, a timeout on every call, and retries only where a
retry cannot deliver a message twice: a GET is retried on connection errors, 429 and 5xx (with
back-off, honouring ``Retry-After``); a POST only when the connection failed before the request
was written. Paubox has no idempotency key, so a POST that may have arrived is never repeated here:
the caller learns so from :attr:`PauboxConnectionError.may_have_been_sent`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.retry import Retry

from . import __version__, answers
from .conf import PauboxSettings, get_settings
from .exceptions import (
    PauboxAmbiguousResponse,
    PauboxAPIError,
    PauboxConnectionError,
)
from .sending import bodies

logger = logging.getLogger(__name__)


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class _Retry(Retry):
    """urllib3's Retry with ``Retry-After`` capped, so a bad header cannot stall a worker."""

    MAX_RETRY_AFTER = 30.0

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, self.MAX_RETRY_AFTER)


class PauboxClient:
    """Sends messages and reads receipts. Thread-safe for concurrent calls (pooled session)."""

    def __init__(self, conf: PauboxSettings | None = None) -> None:
        self.conf = conf or get_settings()
        self.conf.require_credentials()
        self.base_url = self.conf.base_url
        self._session: requests.Session | None = None

    @classmethod
    def from_settings(cls, **overrides: Any) -> PauboxClient:
        return cls(get_settings(**overrides))

    def __repr__(self) -> str:
        return f"PauboxClient(base_url={self.base_url!r})"

    # -- connection ------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = self._new_session()
        return self._session

    def _new_session(self) -> requests.Session:
        retry = _Retry(
            total=None,
            connect=self.conf.max_retries,
            read=self.conf.max_retries,
            status=self.conf.max_retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"GET"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.conf.retry_backoff,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        pool = max(10, self.conf.receipt_concurrency)
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=retry)
        session = requests.Session()
        # The environment (proxies, no_proxy, a CA bundle) is read once, here, not on every
        # request: requests re-reads it (and ~/.netrc) per call when trust_env is on, which cost
        # about a third of the client's own time per send. The Authorization header is ours.
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update(
            {
                "Authorization": self.conf.authorization,
                "Accept": "application/json",
                "User-Agent": f"django-paubox/{__version__}",
            }
        )
        return session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> PauboxClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- API -------------------------------------------------------------------------------

    def send_message(self, message: Mapping[str, Any], **extras: Any) -> str:
        """POST /messages; returns Paubox's ``sourceTrackingId``."""
        data = self._request("POST", "messages", json=bodies.single_send_body(message, extras))
        return answers.tracking_id_of(data, status=200)

    def send_bulk(self, messages: Sequence[Mapping[str, Any]]) -> list[str | PauboxAPIError]:
        """POST /bulk_messages; one tracking id per message, in order.

        An entry Paubox answered without a usable tracking id comes back as a
        :class:`BulkItemError` in its place, so that one odd answer does not discard the ids of
        the others. A success whose body is not one result per message raises
        :class:`PauboxAmbiguousResponse`: Paubox probably took the batch, so it is never
        mistaken for a refusal (which would send every message again, one by one).
        """
        data = self._request("POST", "bulk_messages", json=bodies.bulk_send_body(messages))
        return answers.bulk_results(data, len(messages))

    def get_receipt(self, tracking_id: str) -> dict[str, Any]:
        """GET /message_receipt; the parsed body. Unknown ids raise PauboxAPIError (404)."""
        data = self._request("GET", "message_receipt", params={"sourceTrackingId": tracking_id})
        if not isinstance(data, dict):
            raise PauboxAPIError(200, title="Unexpected receipt response", details="not an object")
        error = answers.error_in_body(data)
        if error is not None:
            raise error
        return data

    # -- dynamic templates -----------------------------------------------------------------

    def send_templated(
        self,
        message: Mapping[str, Any],
        template_name: str,
        template_values: str | Mapping[str, Any],
        **extras: Any,
    ) -> str:
        """POST /templated_messages; returns the ``sourceTrackingId``.

        ``message`` has no ``content`` (the template is the content); ``template_values`` is
        sent as a JSON-encoded string, as Paubox wants (a mapping is encoded here). An unknown
        template name raises :class:`PauboxAPIError`, also when Paubox answers it with status
        200 and ``{"error": ...}``. ``extras`` (tracking overrides) go beside the message, as
        for ``/messages``: an assumption, Paubox documents them for ``/messages`` only.
        """
        values = (
            template_values
            if isinstance(template_values, str)
            else json.dumps(dict(template_values), ensure_ascii=False, allow_nan=False)
        )
        body = bodies.templated_send_body(message, template_name, values, extras)
        data = self._request("POST", "templated_messages", json=body)
        return answers.tracking_id_of(data, status=200)

    def list_templates(self) -> list[dict[str, Any]]:
        """GET /dynamic_templates: every template as ``{"id": int, "name": str, ...}``.

        Paubox answers a bare array (its OpenAPI spec says ``{"templates": [...]}``: both are
        read). Entries may lack ``body``: :meth:`get_template` has it.
        """
        data = self._request("GET", "dynamic_templates")
        if isinstance(data, dict):
            error = answers.error_in_body(data)
            if error is not None:
                raise error
            data = data.get("templates", data.get("data"))
        if not isinstance(data, list):
            raise PauboxAPIError(
                200, title="Unexpected template list", details="not a list of templates"
            )
        return [answers.template_of(item) for item in data]

    def get_template(self, template_id: int | str) -> dict[str, Any]:
        """GET /dynamic_templates/{id}; unknown ids raise :class:`PauboxAPIError` (404)."""
        return answers.template_of(
            self._request("GET", f"dynamic_templates/{_template_path_id(template_id)}")
        )

    def create_template(self, name: str, body: str) -> dict[str, Any]:
        """POST /dynamic_templates (multipart ``data[name]``, ``data[body]`` as a .hbs file)."""
        data = self._request("POST", "dynamic_templates", files=_template_form(name, body))
        return answers.template_of(data)

    def update_template(
        self, template_id: int | str, name: str | None = None, body: str | None = None
    ) -> dict[str, Any]:
        """PATCH /dynamic_templates/{id} with whichever of name and body is given."""
        if name is None and body is None:
            raise ValueError("update_template needs a new name, a new body, or both.")
        data = self._request(
            "PATCH",
            f"dynamic_templates/{_template_path_id(template_id)}",
            files=_template_form(name, body),
        )
        return answers.template_of(data, default_id=str(template_id))

    def delete_template(self, template_id: int | str) -> None:
        """DELETE /dynamic_templates/{id}; unknown ids raise :class:`PauboxAPIError` (404)."""
        data = self._request("DELETE", f"dynamic_templates/{_template_path_id(template_id)}")
        if isinstance(data, dict):
            error = answers.error_in_body(data)
            if error is not None:
                raise error

    # -- scheduled sends -------------------------------------------------------------------

    def schedule_message(
        self, message: Mapping[str, Any], scheduled_at: datetime | str, **extras: Any
    ) -> str:
        """POST /schedule: Paubox sends ``message`` at ``scheduled_at``; returns its tracking id.

        ``scheduled_at`` is sent as ISO 8601 in UTC (``2026-09-14T09:00:00Z``): Paubox
        documents no format. ``extras`` go beside the message, as for ``/messages``.
        """
        body = bodies.schedule_body(message, _scheduled_at(scheduled_at), extras)
        data = self._request("POST", "schedule", json=body)
        return answers.tracking_id_of(data, status=200)

    def get_scheduled(self, tracking_id: str) -> dict[str, Any]:
        """GET /schedule/{sourceTrackingId}: the parsed body (shape undocumented by Paubox)."""
        return answers.object_of(self._request("GET", f"schedule/{_path_id(tracking_id)}"))

    def reschedule(self, tracking_id: str, scheduled_at: datetime | str) -> dict[str, Any]:
        """PATCH /schedule/{sourceTrackingId} with ``{"data": {"scheduled_at": ...}}``."""
        body = bodies.reschedule_body(_scheduled_at(scheduled_at))
        path = f"schedule/{_path_id(tracking_id)}"
        return answers.object_of(self._request("PATCH", path, json=body))

    def cancel_scheduled(self, tracking_id: str) -> dict[str, Any]:
        """POST /schedule/{sourceTrackingId}/cancel: Paubox will not send the message."""
        return answers.object_of(self._request("POST", f"schedule/{_path_id(tracking_id)}/cancel"))

    # -- plumbing --------------------------------------------------------------------------

    def _request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
        url = f"{self.base_url}/{endpoint}"
        started = time.monotonic()
        try:
            # A redirected POST would be re-sent elsewhere (307) or turned into a GET (302)
            # whose answer we would take for the send's: a 3xx is answered as what it is.
            kwargs.setdefault("allow_redirects", method == "GET")
            response = self.session.request(method, url, timeout=self.conf.timeout, **kwargs)
        except requests.RequestException as exc:
            sent = method != "GET" and _may_have_been_sent(exc)
            logger.warning(
                "Paubox %s /%s failed after %.0f ms: %s",
                method,
                endpoint,
                (time.monotonic() - started) * 1000,
                type(exc).__name__,
            )
            raise PauboxConnectionError(_describe(exc), may_have_been_sent=sent) from None
        logger.debug(
            "Paubox %s /%s -> %s in %.0f ms",
            method,
            endpoint,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        if response.status_code >= 400:
            raise answers.api_error_from_response(response)
        try:
            return response.json()
        except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to read
            # A success Paubox may have acted on: for anything but a GET, ambiguous.
            error_class = PauboxAPIError if method == "GET" else PauboxAmbiguousResponse
            raise error_class(
                response.status_code,
                title="Unreadable response",
                details=f"Paubox answered {response.status_code} with a body that is not JSON "
                f"({response.headers.get('Content-Type', 'no content type')})",
                request_id=answers.request_id_of(response),
            ) from None


def _template_path_id(template_id: int | str) -> str:
    """A template id as a path segment: integer or text, quoted (never a path of its own)."""
    return quote(str(template_id).strip(), safe="")


def _template_form(name: str | None, body: str | None) -> dict[str, tuple[Any, ...]]:
    """Multipart fields; the name as a plain field, the body as a ``.hbs`` file, as documented.

    Given as ``files=`` even for the name alone, so that requests always sends
    multipart/form-data (a ``data=`` form alone would be urlencoded).
    """
    form: dict[str, tuple[Any, ...]] = {}
    if name is not None:
        form["data[name]"] = (None, name.encode("utf-8"))
    if body is not None:
        filename = re.sub(r"[^A-Za-z0-9_.-]+", "_", name or "template")[:100] + ".hbs"
        form["data[body]"] = (filename, body.encode("utf-8"), "text/x-handlebars-template")
    return form


def _scheduled_at(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("scheduled_at must be a timezone-aware datetime.")
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path_id(tracking_id: str) -> str:
    return quote(str(tracking_id), safe="")


def _may_have_been_sent(exc: requests.RequestException) -> bool:
    """False only when the connection failed before any byte of the request was written."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the cause
        return not isinstance(reason, (NewConnectionError, ConnectTimeoutError))
    return True


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "connecting timed out"
    if isinstance(exc, requests.ReadTimeout):
        return "no answer before the read timeout"
    if isinstance(exc, requests.ConnectionError):
        reason = exc.args[0] if exc.args else None
        reason = getattr(reason, "reason", reason)
        if isinstance(reason, NewConnectionError):
            return "the connection was refused or the host is unreachable"
        return "the connection was dropped"
    return type(exc).__name__


def shared_client(conf: PauboxSettings) -> PauboxClient:
    """The process's pooled client for ``conf``, reused across backends and tasks.

    ``send_mail()`` opens a new backend for every call; sharing the client keeps its
    connections (and their TLS sessions) alive between calls. Keyed by process id too, so a
    forked worker never shares a parent's sockets.
    """
    return _shared_client(conf, os.getpid())


@lru_cache(maxsize=16)
def _shared_client(conf: PauboxSettings, pid: int) -> PauboxClient:
    return PauboxClient(conf)
