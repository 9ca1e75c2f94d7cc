"""Steer and inspect a sandbox over HTTP, for a sandbox running in another process.

The routes live under ``/_sandbox/`` (JSON in, JSON out, no auth: the sandbox is a loopback
tool). :class:`SandboxControl` mirrors :class:`~django_paubox.sandbox.server.SandboxServer`'s
Python API on top of them, so benchmarks and the example project use the same calls as tests.

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
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .state import CapturedMessage

if TYPE_CHECKING:
    from .server import SandboxServer

PREFIX = "/_sandbox/"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- server side -----------------------------------------------------------------------------
def handle_control(sandbox: SandboxServer, method: str, path: str, body: bytes) -> tuple[int, Any]:
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


def _get(sandbox: SandboxServer, name: str) -> tuple[int, Any]:
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


def _apply_faults(sandbox: SandboxServer, payload: dict[str, Any]) -> None:
    if payload.get("clear"):
        sandbox.faults.reset()
    if "latency" in payload:
        sandbox.set_latency(float(payload["latency"]))
    if "rates" in payload:
        sandbox.set_fault_rates(**payload["rates"])
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


# -- client side -----------------------------------------------------------------------------
class SandboxControlError(RuntimeError):
    """The control API refused a request (bad argument) or could not be reached."""


class SandboxControl:
    """Steer a sandbox in another process; ``url`` is any URL of it (API_URL works)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"Not a sandbox URL: {url!r}")
        self.root = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SandboxControl({self.root!r})"

    def _call(self, method: str, name: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(  # noqa: S310 (http(s) only: checked in __init__)
            self.root + PREFIX + name,
            data=data,
            headers={"Content-Type": "application/json"},
            method=method,
        )
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise SandboxControlError(
                f"Sandbox control {name}: HTTP {error.code} {detail}"
            ) from None
        except (OSError, ValueError) as error:
            raise SandboxControlError(f"Sandbox control {name}: {error}") from error

    def wait_until_up(self, timeout: float = 10.0) -> SandboxControl:
        """Block until the sandbox answers (for one just started in another process)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call("GET", "health")
                return self
            except SandboxControlError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    # -- inspection --
    @property
    def messages(self) -> list[CapturedMessage]:
        return [CapturedMessage.from_dict(m) for m in self._call("GET", "messages")["messages"]]

    @property
    def last_message(self) -> CapturedMessage | None:
        messages = self.messages
        return messages[-1] if messages else None

    def get_message(self, tracking_id: str) -> CapturedMessage | None:
        try:
            answer = self._call("GET", "messages/" + quote(tracking_id, safe=""))
        except SandboxControlError as error:
            if "HTTP 404" in str(error):
                return None
            raise
        return CapturedMessage.from_dict(answer["message"])

    @property
    def requests(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self._call("GET", "requests")["requests"]]

    @property
    def webhook_attempts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "webhooks")["webhooks"])

    def config(self) -> dict[str, Any]:
        return dict(self._call("GET", "config"))

    # -- steering --
    def reset(self) -> None:
        self._call("POST", "reset", {})

    def set_latency(self, seconds: float) -> None:
        self._call("POST", "faults", {"latency": seconds})

    def fail_next(
        self,
        status: int = 503,
        count: int = 1,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        endpoint: str | None = None,
    ) -> None:
        spec = {"status": status, "count": count, "body": body, "headers": headers}
        self._call("POST", "faults", {"fail_next": {**spec, "endpoint": endpoint}})

    def fail_next_with(self, kind: str, count: int = 1, *, endpoint: str | None = None) -> None:
        spec = {"kind": kind, "count": count, "endpoint": endpoint}
        self._call("POST", "faults", {"fail_next_with": spec})

    def set_fault_rates(
        self,
        server_error: float = 0.0,
        rate_limit: float = 0.0,
        timeout: float = 0.0,
        drop: float = 0.0,
        seed: int | None = None,
    ) -> None:
        rates = {
            "server_error": server_error,
            "rate_limit": rate_limit,
            "timeout": timeout,
            "drop": drop,
            "seed": seed,
        }
        self._call("POST", "faults", {"rates": rates})

    def set_outcome(self, address: str, outcome: str | None) -> None:
        self._call("POST", "outcomes", {"address": address, "outcome": outcome})

    def finish_processing(self) -> None:
        self._call("POST", "finish", {})

    @property
    def processing_seconds(self) -> float:
        return float(self.config()["processing_seconds"])

    @processing_seconds.setter
    def processing_seconds(self, seconds: float) -> None:
        self._call("POST", "config", {"processing_seconds": seconds})

    @property
    def webhook_url(self) -> str | None:
        return self.config()["webhook_url"]  # type: ignore[no-any-return]

    @webhook_url.setter
    def webhook_url(self, url: str | None) -> None:
        self._call("POST", "config", {"webhook_url": url})

    def set_timeout_hold(self, seconds: float) -> None:
        self._call("POST", "config", {"timeout_hold_seconds": seconds})

    # -- dynamic templates and scheduled sends --
    @property
    def templates(self) -> list[dict[str, Any]]:
        """Uploaded templates as Paubox shows one (``id``, ``name``, ``body``, times)."""
        return list(self._call("GET", "templates")["templates"])

    def add_template(self, name: str, body: str) -> dict[str, Any]:
        return dict(self._call("POST", "templates", {"name": name, "body": body}))

    @property
    def scheduled(self) -> list[dict[str, Any]]:
        """Scheduled sends as ``GET /schedule/{id}`` shows them (any status)."""
        return list(self._call("GET", "scheduled")["scheduled"])

    def send_scheduled_now(self) -> list[str]:
        return list(self._call("POST", "send_scheduled", {})["sent"])

    def set_unknown_template_status(self, status: int) -> None:
        self._call("POST", "config", {"unknown_template_status": status})
