"""The Paubox webhook endpoint: ``paubox/webhook/<WEBHOOK_SECRET>/``.

Paubox signs nothing, so the secret in the URL is the authentication (Paubox's own advice),
optionally with an IP allowlist. The view fails closed, in this order:

1. no ``WEBHOOK_SECRET`` configured -> 404 for everything (and one warning in the log);
2. a path secret that matches none of the configured ones (constant-time) -> 404, whatever the
   method, so the endpoint does not reveal itself;
3. ``WEBHOOK_ALLOWED_IPS`` set and ``REMOTE_ADDR`` not in it -> 403. The address is the
   connection's: behind a reverse proxy, set ``REMOTE_ADDR`` from the proxy's header in a
   middleware you trust (never trust ``X-Forwarded-For`` blindly), or every request will come
   from the proxy;
4. not POST -> 405;
5. a body over ``WEBHOOK_MAX_BODY_BYTES`` -> 413 (the declared length is checked before
   reading, the actual length while reading);
6. not UTF-8 JSON, or not a Paubox event -> 400 with a short JSON error;
7. otherwise the event is stored (once: a replay is recognised) and applied -> 200
   ``{"status": "ok"}``, also for replays and for event names we do not know.

Nothing is stored unless the answer is 200. Paubox does not retry a webhook that failed, so
receipt polling (``manage.py paubox_refresh_receipts``) is the backstop for missed events.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .. import records
from ..conf import get_settings
from ..exceptions import InvalidWebhookEvent

logger = logging.getLogger(__name__)

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_warned_no_secret = False


def _error(status: int, error: str) -> JsonResponse:
    """A 4xx answer, logged here without the path: the path holds the webhook secret, and
    Django's ``django.request`` logger would otherwise write it to the log."""
    logger.warning("Paubox webhook: answered %s (%s) [path redacted]", status, error)
    response = JsonResponse({"error": error}, status=status)
    response._has_been_logged = True  # type: ignore[attr-defined]  # see log_response
    return response


def _secret_matches(candidate: str, secrets: Iterable[str]) -> bool:
    """Compare against every configured secret in constant time (no early exit)."""
    given = candidate.encode("utf-8", "surrogatepass")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret.encode("utf-8", "surrogatepass"))
    return matched


def _networks(allowed: Iterable[str]) -> list[_IPNetwork]:
    networks = []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            # Fail closed: an entry we cannot read allows nobody.
            logger.error("Paubox: WEBHOOK_ALLOWED_IPS entry %r is not an IP or network.", entry)
    return networks


def _ip_allowed(remote_addr: str, allowed: Iterable[str]) -> bool:
    try:
        address = ipaddress.ip_address(remote_addr.strip().split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(allowed))


def _login_not_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Exempt from Django 5.1's ``LoginRequiredMiddleware``: Paubox never logs in, and it does
    not retry an event it was refused (or redirected to a login page for). Django 4.2 has no
    such middleware, so nothing to exempt from."""
    try:
        from django.contrib.auth.decorators import login_not_required
    except ImportError:
        return view
    return login_not_required(view)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes."""
    body = request.read(limit + 1)
    return None if len(body) > limit else body


@_login_not_required
@csrf_exempt
def webhook(request: HttpRequest, secret: str) -> HttpResponse:
    """Receive one Paubox webhook event (see the module docstring for the answers)."""
    global _warned_no_secret
    conf = get_settings()
    if not conf.webhook_secret:
        if not _warned_no_secret:
            _warned_no_secret = True
            logger.warning(
                'Paubox: PAUBOX["WEBHOOK_SECRET"] is not set; the webhook refuses every call.'
            )
        return _error(404, "Not found.")
    if not _secret_matches(secret, conf.webhook_secret):
        return _error(404, "Not found.")
    if conf.webhook_allowed_ips and not _ip_allowed(
        request.META.get("REMOTE_ADDR") or "", conf.webhook_allowed_ips
    ):
        return _error(403, "Forbidden.")
    if request.method != "POST":
        response = _error(405, "Method not allowed; Paubox POSTs events.")
        response["Allow"] = "POST"
        return response

    limit = conf.webhook_max_body_bytes
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        if int(declared) > limit:
            return _error(413, "Body too large.")
    except ValueError:
        return _error(400, "Invalid Content-Length.")
    body = _read_body(request, limit)
    if body is None:
        return _error(413, "Body too large.")

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return _error(400, "The body is not UTF-8.")
    except (ValueError, RecursionError):
        return _error(400, "The body is not JSON.")
    try:
        event, created = records.apply_webhook_event(data, conf)
    except InvalidWebhookEvent as exc:
        return _error(400, str(exc))
    logger.info(
        "Paubox: webhook event %r for %r %s.",
        event.event_name,
        event.source_tracking_id or "an unknown message",
        "stored" if created else "already stored",
    )
    return JsonResponse({"status": "ok"})
