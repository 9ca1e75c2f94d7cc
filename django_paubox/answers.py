"""Reading Paubox's answers: tracking ids, bulk results, templates, and every shape of error.

Pure (it takes parsed JSON, or a ``requests.Response`` already received): the client, the only
code that speaks HTTP, hands each answer here. Anything we cannot use becomes a
:class:`~django_paubox.exceptions.PauboxAPIError`, ambiguous where Paubox may have acted on it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import requests

from .exceptions import BulkItemError, PauboxAmbiguousResponse, PauboxAPIError
from .tracking.parsing import MAX_TRACKING_ID

REQUEST_ID_HEADERS = ("X-Request-Id", "X-Amzn-RequestId", "X-Amz-Cf-Id", "CF-Ray")
HINT_401 = (
    'Check PAUBOX["API_KEY"] and PAUBOX["API_USERNAME"]: Paubox answers 401 when the key is '
    "missing, wrong, or was issued for another endpoint username or sending domain"
)
HINT_HTML_404 = (
    "Paubox's gateway answered with an HTML page, which means the URL is wrong: check "
    'PAUBOX["API_URL"] and PAUBOX["API_USERNAME"] (requested {url})'
)


def tracking_id_of(data: Any, *, status: int) -> str:
    """The ``sourceTrackingId`` of a successful send.

    An error in the body (``{"error": ...}``, e.g. an unknown template) is Paubox's refusal;
    any other answer without a usable id is ambiguous: Paubox answered success, so it probably
    took the message.
    """
    details = "Paubox returned no sourceTrackingId"
    if isinstance(data, dict):
        tracking_id = data.get("sourceTrackingId")
        if isinstance(tracking_id, str) and tracking_id.strip():
            if len(tracking_id) <= MAX_TRACKING_ID:
                return tracking_id
            details = (
                f"Paubox returned a sourceTrackingId of {len(tracking_id)} characters, longer "
                f"than the {MAX_TRACKING_ID} that can be recorded"
            )
        else:
            error = error_in_body(data, status=status)
            if error is not None:
                raise error
    raise PauboxAmbiguousResponse(status, title="Unexpected response", details=details)


def bulk_results(data: Any, expected: int) -> list[str | PauboxAPIError]:
    """One tracking id (or :class:`BulkItemError`) per message of an accepted bulk request."""
    items = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) != expected:
        got = str(len(items)) if isinstance(items, list) else "none"
        said = error_in_body(data) if isinstance(data, dict) else None
        raise PauboxAmbiguousResponse(
            200,
            title="Unexpected bulk response",
            details=f"expected {expected} results in 'messages', got {got}"
            + (f" ({said.title or said.details})" if said is not None else ""),
        )
    results: list[str | PauboxAPIError] = []
    for item in items:
        try:
            results.append(tracking_id_of(item, status=200))
        except PauboxAPIError as error:
            results.append(
                BulkItemError(
                    200,
                    title=error.title,
                    details=error.details,
                    may_have_been_sent=error.may_have_been_sent,
                )
            )
    counts = Counter(r for r in results if isinstance(r, str))
    repeated = {tracking_id for tracking_id, count in counts.items() if count > 1}
    if repeated:  # which message has the id? Unknowable: none of them is recorded as sent
        results = [
            BulkItemError(
                200,
                title="Unexpected bulk response",
                details="Paubox gave the same sourceTrackingId to several messages",
                may_have_been_sent=True,
            )
            if isinstance(r, str) and r in repeated
            else r
            for r in results
        ]
    return results


def template_of(data: Any, *, default_id: str | None = None) -> dict[str, Any]:
    """One template answer as ``{"id": str, "name": str, "body": str | None, "created_at":
    str | None, "updated_at": str | None}``; ``{"data": {...}}`` wrappers are unwrapped."""
    if isinstance(data, dict):
        error = error_in_body(data)
        if error is not None:
            raise error
        if isinstance(data.get("data"), dict):
            data = data["data"]
    if not isinstance(data, dict):
        raise PauboxAPIError(200, title="Unexpected template response", details="not an object")
    # Paubox's OpenAPI description has string ids ("template_123"), its prose docs integers:
    # both are read, and kept as text.
    raw_id = data.get("id", default_id)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)) or not str(raw_id).strip():
        raise PauboxAPIError(200, title="Unexpected template response", details="no template id")
    template_id = str(raw_id).strip()

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) else None

    return {
        "id": template_id,
        "name": text("name") or "",
        "body": text("body"),
        "created_at": text("created_at"),
        "updated_at": text("updated_at"),
    }


def object_of(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PauboxAPIError(200, title="Unexpected response", details="not an object")
    error = error_in_body(data)
    if error is not None:
        raise error
    return data


def error_in_body(data: dict[str, Any], *, status: int = 200) -> PauboxAPIError | None:
    """Paubox sometimes answers 200 with an error body (e.g. an unknown template)."""
    if any(key in data for key in ("errors", "error")):
        return error_from_json(status, data, request_id="")
    return None


def api_error_from_response(response: requests.Response) -> PauboxAPIError:
    """Turn any of Paubox's error shapes into one :class:`PauboxAPIError`."""
    status = response.status_code
    request_id = request_id_of(response)
    try:
        data = response.json()
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        return error_from_json(status, data, request_id=request_id)
    content_type = response.headers.get("Content-Type", "")
    hint = ""
    if status == 404 and ("html" in content_type or response.text.lstrip().startswith("<")):
        hint = HINT_HTML_404.format(url=without_query(response.url))
    elif status == 401:
        hint = HINT_401
    return PauboxAPIError(
        status,
        title=response.reason or "",
        details=f"non-JSON body ({content_type or 'no content type'})",
        request_id=request_id,
        hint=hint,
    )


def error_from_json(status: int, data: dict[str, Any], *, request_id: str) -> PauboxAPIError:
    errors = data.get("errors")
    code: Any = None
    title = details = ""
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        code = first.get("code", first.get("status"))
        title = str(first.get("title") or "")
        details = str(first.get("details") or first.get("detail") or "")
    elif isinstance(data.get("error"), str):
        title = data["error"]
    elif isinstance(data.get("message"), str):
        title = data["message"]
    tracking_id = data.get("sourceTrackingId")
    return PauboxAPIError(
        status,
        code=code,
        title=title[:500],
        details=details[:1000],
        request_id=request_id,
        tracking_id=tracking_id if isinstance(tracking_id, str) else "",
        hint=HINT_401 if status == 401 else "",
        errors=[e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else None,
    )


def request_id_of(response: requests.Response) -> str:
    for header in REQUEST_ID_HEADERS:
        value = response.headers.get(header)
        if value:
            return value[:200]
    return ""


def without_query(url: str) -> str:
    return url.split("?", 1)[0]
