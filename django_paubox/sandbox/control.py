"""``SandboxControl``: steer and inspect a sandbox running in another process, over HTTP.

It mirrors :class:`~django_paubox.sandbox.server.SandboxServer`'s Python API on top of the
control API (``/_sandbox/``, see :mod:`.control_routes`), so benchmarks and the example project
use the same calls as tests. Standard library HTTP; proxies from the environment are ignored.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

from ..exceptions import SandboxControlError
from .control_routes import PREFIX
from .faults import FaultRates
from .state import CapturedMessage

__all__ = ["SandboxControl", "SandboxControlError"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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

    def set_fault_rates(self, rates: FaultRates | None = None, /, **shares: Any) -> None:
        """As :meth:`SandboxServer.set_fault_rates`: a :class:`FaultRates` or its fields."""
        chosen = rates if rates is not None else FaultRates(**shares)
        self._call("POST", "faults", {"rates": chosen.to_dict()})

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
