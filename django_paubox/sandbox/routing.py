"""What every route module shares: the request it is given, and Paubox's error answers.

A route module (:mod:`.messages`, :mod:`.templates`, :mod:`.schedule`) offers

- ``ENDPOINTS``: the first path segments after ``/v1/<username>/`` it answers;
- ``methods(endpoint, rest) -> frozenset[str]``: the methods Paubox defines for that path
  (empty: no such path, the gateway's HTML 404; a method outside the set: a 405);
- ``handle(sandbox, request) -> (status, JSON body)`` for an authorised request.

A route answers early by raising :class:`~django_paubox.exceptions.SandboxAnswer` (built by
:func:`errors` and :func:`bad_request` here); the handler writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from ..exceptions import SandboxAnswer


@dataclass(frozen=True)
class ApiRequest:
    """One authorised API request, as a route sees it."""

    method: str
    #: ``messages``, ``dynamic_templates``, ...
    endpoint: str
    #: The path after the endpoint (``""``, ``"/template_1"``, ``"/<id>/cancel"``).
    rest: str
    query: str
    body: bytes
    content_type: str

    @property
    def segments(self) -> list[str]:
        """The non-empty segments of ``rest``."""
        return [part for part in self.rest.split("/") if part]

    def param(self, name: str) -> str:
        """The first value of query parameter ``name`` (``""`` when absent)."""
        return (parse_qs(self.query).get(name) or [""])[0]


def title_of(status: int) -> str:
    """Paubox's error title for ``status`` (its own words for 429)."""
    if status == 429:
        return "Too Many Requests"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def paubox_error(status: int, title: str, *details: str) -> dict[str, Any]:
    """Paubox's error shape: ``{"errors": [{"code", "title", "details"}, ...]}``."""
    return {"errors": [{"code": status, "title": title, "details": d} for d in details]}


def errors(status: int, title: str, *details: str, **extra: Any) -> SandboxAnswer:
    """An answer in Paubox's error shape; ``extra`` keys go beside ``errors``."""
    return SandboxAnswer(status, {**paubox_error(status, title, *details), **extra})


def bad_request(*details: str) -> SandboxAnswer:
    return errors(400, "Bad Request", *details)


def method_not_allowed(method: str, allowed: frozenset[str]) -> SandboxAnswer:
    """405 with ``Allow``, in Paubox's error shape."""
    listed = ", ".join(sorted(allowed))
    return SandboxAnswer(
        405,
        paubox_error(405, "Method Not Allowed", f"{method} is not allowed here; use {listed}"),
        {"Allow": listed},
    )


def json_data(body: bytes) -> dict[str, Any]:
    """The ``data`` object of a JSON request body; a 400 when there is none."""
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad_request("Request body is not valid JSON") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("data"), dict):
        raise bad_request("data is missing")
    return parsed["data"]  # type: ignore[no-any-return]
