"""What the sandbox's test modules share: request helpers, a webhook receiver, paths.

Not a test module (no tests, no fixtures): each ``test_sandbox*.py`` imports what it uses.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from django_paubox.sandbox import SandboxServer
from django_paubox.sandbox import pytest_plugin as plugin

ROOT = Path(__file__).resolve().parent.parent
#: Paubox's OpenAPI file, beside the repository checkout (``../shared``) as CI lays it out;
#: ``DJANGO_PAUBOX_OPENAPI_SPEC`` points elsewhere (a git worktree has no ``../shared``).
SPEC = Path(
    os.environ.get("DJANGO_PAUBOX_OPENAPI_SPEC") or ROOT.parent / "shared" / "paubox-openapi.json"
)
#: The skip reason of every test that needs :data:`SPEC`: loud, naming the missing path.
SPEC_MISSING = f"{SPEC} not found: the OpenAPI conformance tests did not run"
KEY = plugin.SANDBOX_API_KEY
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "recipients": ["patient@example.com"],
        "headers": {"from": "clinic@example.org", "subject": "Your appointment"},
        "content": {"text/plain": "See you tomorrow."},
    }
    base.update(overrides)
    return base


class Api:
    """Minimal Paubox calls through one pooled ``requests`` session."""

    def __init__(self, server: SandboxServer, key: str | None = KEY, scheme: str = "Token") -> None:
        self.server = server
        self.session = requests.Session()
        if key is not None:
            auth = f"Token token={key}" if scheme == "Token" else f"Bearer {key}"
            self.session.headers["Authorization"] = auth

    def post(self, endpoint: str, body: Any, **kwargs: Any) -> requests.Response:
        if isinstance(body, (dict, list)):
            kwargs["json"] = body
        else:
            kwargs["data"] = body
        kwargs.setdefault("timeout", 5)
        return self.session.post(f"{self.server.base_url}/{endpoint}", **kwargs)

    def send(self, msg: dict[str, Any] | None = None, **kwargs: Any) -> requests.Response:
        return self.post("messages", {"data": {"message": msg or message()}}, **kwargs)

    def send_ok(self, msg: dict[str, Any] | None = None) -> str:
        response = self.send(msg)
        assert response.status_code == 200, response.text
        return str(response.json()["sourceTrackingId"])

    def receipt(self, tracking_id: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.get(
            f"{self.server.base_url}/message_receipt",
            params={"sourceTrackingId": tracking_id},
            **kwargs,
        )

    def statuses(self, tracking_id: str) -> dict[str, dict[str, Any]]:
        response = self.receipt(tracking_id)
        assert response.status_code == 200, response.text
        deliveries = response.json()["data"]["message"]["message_deliveries"]
        return {d["recipient"]: d["status"] for d in deliveries}


def http(method: str, url: str, **kwargs: Any) -> requests.Response:
    timeout = kwargs.pop("timeout", 5)
    return requests.request(method, url, timeout=timeout, **kwargs)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def error_details(response: requests.Response) -> list[str]:
    body = response.json()
    assert set(body) == {"errors"}, body
    for error in body["errors"]:
        assert set(error) == {"code", "title", "details"}
        assert error["code"] == response.status_code
    return [e["details"] for e in body["errors"]]


class Receiver:
    """A tiny local webhook receiver recording every POSTed JSON body."""

    def __init__(self, status: int = 200) -> None:
        self.events: list[dict[str, Any]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                outer.events.append(json.loads(self.rfile.read(length)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/paubox/webhook/secret/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter without Django settings; its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


def plugin_args() -> list[str]:
    """Load the sandbox plugin explicitly unless an installed django-paubox registers it."""
    entry_points = importlib.metadata.entry_points(group="pytest11")
    if any(ep.value == "django_paubox.sandbox.pytest_plugin" for ep in entry_points):
        return []
    return ["-p", "django_paubox.sandbox.pytest_plugin"]


def wait_for_webhooks(sandbox: Any, count: int, timeout: float = 10.0) -> None:
    """Wait until the sandbox has fired ``count`` webhooks and had their answers, without
    touching the database: on SQLite's in-memory database the live server shares the test's
    connection, and a query from this thread while the server writes breaks both (Django's
    LiveServerTestCase documentation says to avoid it)."""
    wait_for(lambda: len(sandbox.webhook_attempts) >= count, timeout)
