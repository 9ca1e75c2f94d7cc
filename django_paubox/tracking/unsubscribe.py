"""One-click unsubscribe (RFC 8058): ``paubox/unsubscribe/<token>/``.

Mail providers POST ``List-Unsubscribe=One-Click`` to the URL blind: no login, no CSRF token,
no cookies. So the view is CSRF-exempt and ``login_not_required``, renders without a request
context (no session, no CSRF cookie), and answers:

- a tampered, foreign or expired token -> 400, whatever the method, and nothing changes;
- ``GET`` (or ``HEAD``) -> 200, a small page with a button that posts: a GET never
  unsubscribes, because link scanners and previews fetch every URL in a message;
- ``POST`` with the body ``List-Unsubscribe=One-Click`` -> the address is suppressed (reason
  ``unsubscribed``) and 200; a POST without it -> 400; another method -> 405.

The path holds the token (which carries the address), so answers are never logged with it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.csrf import csrf_exempt

from ..conf import get_settings
from ..records import suppressions
from ..sending.unsubscribe import read_token

logger = logging.getLogger(__name__)

TEMPLATE = "django_paubox/unsubscribe.html"

try:  # Django 5.1+: exempt from LoginRequiredMiddleware
    from django.contrib.auth.decorators import login_not_required
except ImportError:  # pragma: no cover - Django 4.2

    def login_not_required(view_func: Any) -> Any:  # type: ignore[misc]
        return view_func


def _page(state: str, status: int = 200) -> HttpResponse:
    response = HttpResponse(render_to_string(TEMPLATE, {"state": state}), status=status)
    response["Cache-Control"] = "no-store"
    response["X-Robots-Tag"] = "noindex"
    response["Referrer-Policy"] = "no-referrer"
    if status >= 400:
        logger.info("Paubox unsubscribe: answered %s (%s) [path redacted]", status, state)
        response._has_been_logged = True  # type: ignore[attr-defined]  # keeps the path out
    return response


@csrf_exempt
@login_not_required
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """See the module docstring for the answers."""
    conf = get_settings()
    try:
        address, message_id = read_token(token, conf.unsubscribe_max_age_days)
    except signing.BadSignature:  # also SignatureExpired
        return _page("invalid", 400)
    if request.method in ("GET", "HEAD"):
        return _page("confirm")
    if request.method != "POST":
        response = _page("method", 405)
        response["Allow"] = "GET, HEAD, POST"
        return response
    if request.POST.get("List-Unsubscribe") != "One-Click":
        return _page("bad-request", 400)
    if suppressions.unsubscribe(address, message_id):
        logger.info("Paubox: a recipient unsubscribed (one click).")
    return _page("done")
