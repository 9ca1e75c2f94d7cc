"""The control API's routes: steer and inspect a sandbox over HTTP (the server side).

The routes live under ``/_sandbox/`` (JSON in, JSON out, no auth: the sandbox is a loopback
tool). :class:`~django_paubox.sandbox.control.SandboxControl` is their client; it mirrors
:class:`~django_paubox.sandbox.server.SandboxServer`'s Python API on top of them.

==========================  ==================================================================
``GET  /_sandbox/health``   ``{"ok": true}``
``GET  /_sandbox/messages`` ``{"messages": [captured message, ...]}`` (oldest first)
``GET  /_sandbox/messages/<tracking id>``  ``{"message": ..., "receipt": ...}``
``GET  /_sandbox/requests`` ``{"requests": [[method, path], ...]}``
``GET  /_sandbox/webhooks`` ``{"webhooks": [attempt, ...]}``
``GET  /_sandbox/config``   processing seconds, webhook URL, latency, fault rates (never the key)
``POST /_sandbox/reset``    clears messages, requests, faults and outcomes
``POST /_sandbox/faults``   any of ``latency``, ``fail_next`` ({status, count, body, headers,
                            endpoint}), ``fail_next_with`` ({kind, count, endpoint}), ``rates``
                            ({server_error, rate_limit, timeout, drop, seed})
``POST /_sandbox/outcomes`` ``{"address": ..., "outcome": ...}`` or ``{"outcomes": {addr: ...}}``
``POST /_sandbox/config``   any of ``processing_seconds``, ``webhook_url``,
                            ``timeout_hold_seconds``
``POST /_sandbox/finish``   every simulated delivery reaches its final state now
``GET  /_sandbox/templates`` ``{"templates": [template with body, ...]}``
``POST /_sandbox/templates`` ``{"name": ..., "body": ...}``: upload a template directly
``GET  /_sandbox/scheduled`` ``{"scheduled": [scheduled send, ...]}`` (any status)
``POST /_sandbox/send_scheduled``  every pending scheduled send is sent now
==========================  ==================================================================

``POST /_sandbox/config`` also takes ``unknown_template_status`` (200, 400, 404 or 422).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .core import Sandbox
from .faults import FaultRates

PREFIX = "/_sandbox/"


def handle_control(sandbox: Sandbox, method: str, path: str, body: bytes) -> tuple[int, Any]:
    """Answer one ``/_sandbox/...`` request: (status, JSON-able body)."""
    name = path[len(PREFIX) :].strip("/")
    payload: Any = json.loads(body.decode("utf-8")) if body.strip() else {}
    if not isinstance(payload, dict):
        raise ValueError("The body must be a JSON object.")
    if method == "GET":
        return _get(sandbox, name)
    if method != "POST":
        return 405, {"error": "Use GET or POST."}
    if name == "reset":
        sandbox.reset()
    elif name == "faults":
        _apply_faults(sandbox, payload)
    elif name == "outcomes":
        outcomes = dict(payload.get("outcomes") or {})
        if "address" in payload:
            outcomes[payload["address"]] = payload.get("outcome")
        for address, outcome in outcomes.items():
            sandbox.set_outcome(address, outcome)
    elif name == "config":
        if "processing_seconds" in payload:
            sandbox.processing_seconds = float(payload["processing_seconds"])
        if "webhook_url" in payload:
            sandbox.webhook_url = payload["webhook_url"] or None
        if "timeout_hold_seconds" in payload:
            sandbox.timeout_hold_seconds = float(payload["timeout_hold_seconds"])
        if "unknown_template_status" in payload:
            sandbox.unknown_template_status = int(payload["unknown_template_status"])
    elif name == "finish":
        sandbox.finish_processing()
    elif name == "templates":
        template = sandbox.add_template(str(payload["name"]), str(payload["body"]))
        return 200, template.to_dict()
    elif name == "send_scheduled":
        return 200, {"sent": sandbox.send_scheduled_now()}
    else:
        return 404, {"error": f"No control route {path!r}."}
    return 200, {"ok": True}


def _get(sandbox: Sandbox, name: str) -> tuple[int, Any]:
    if name == "health":
        return 200, {"ok": True}
    if name == "messages":
        return 200, {"messages": [m.to_dict() for m in sandbox.messages]}
    if name.startswith("messages/"):
        tracking_id = name[len("messages/") :]
        tracked = sandbox.state.get(tracking_id)
        if tracked is None:
            return 404, {"error": "No such message."}
        return 200, {
            "message": tracked.captured.to_dict(),
            "receipt": tracked.receipt(time.monotonic()),
        }
    if name == "requests":
        return 200, {"requests": [list(r) for r in sandbox.requests]}
    if name == "webhooks":
        return 200, {"webhooks": sandbox.webhook_attempts}
    if name == "config":
        return 200, sandbox.describe()
    if name == "templates":
        return 200, {"templates": [t.to_dict() for t in sandbox.templates]}
    if name == "scheduled":
        return 200, {"scheduled": [s.to_dict() for s in sandbox.scheduled]}
    return 404, {"error": f"No control route {name!r}."}


def _apply_faults(sandbox: Sandbox, payload: dict[str, Any]) -> None:
    if payload.get("clear"):
        sandbox.faults.reset()
    if "latency" in payload:
        sandbox.set_latency(float(payload["latency"]))
    if "rates" in payload:
        sandbox.set_fault_rates(FaultRates.from_dict(dict(payload["rates"])))
    if "fail_next" in payload:
        spec = dict(payload["fail_next"])
        sandbox.fail_next(
            status=int(spec.get("status", 503)),
            count=int(spec.get("count", 1)),
            body=spec.get("body"),
            headers=spec.get("headers"),
            endpoint=spec.get("endpoint"),
        )
    if "fail_next_with" in payload:
        spec = dict(payload["fail_next_with"])
        sandbox.fail_next_with(
            spec["kind"], count=int(spec.get("count", 1)), endpoint=spec.get("endpoint")
        )
