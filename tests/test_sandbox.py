"""The Paubox sandbox, exercised over real HTTP with ``requests``: auth, validation, bulk order,
receipts, outcomes, faults, the control API, webhooks, the HTML page and the pytest fixture."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from django_paubox.conf import get_settings
from django_paubox.sandbox import (
    SandboxControl,
    SandboxControlError,
    SandboxServer,
)
from django_paubox.sandbox import pytest_plugin as plugin
from django_paubox.sandbox.outcomes import normalise_outcome

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT.parent / "shared" / "paubox-openapi.json"
KEY = plugin.SANDBOX_API_KEY
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# -- helpers ---------------------------------------------------------------------------------
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


@pytest.fixture
def api(paubox_sandbox: SandboxServer) -> Api:
    return Api(paubox_sandbox)


@pytest.fixture
def own_server() -> Iterator[SandboxServer]:
    """A separate sandbox accepting any key and username."""
    with SandboxServer(processing_seconds=0) as server:
        yield server


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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# -- auth and routing ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [None, "", "token=sandbox-test-key", "sandbox-test-key", "Basic c2FuZGJveA==", "Token token="],
)
def test_missing_or_ill_formed_authorization_is_401(paubox_sandbox, header):
    headers = {} if header is None else {"Authorization": header}
    response = http(
        "POST",
        paubox_sandbox.base_url + "/messages",
        json={"data": {"message": message()}},
        headers=headers,
    )
    assert response.status_code == 401
    body = response.json()
    assert body["errors"][0]["code"] == 401
    assert body["errors"][0]["title"] == "Unauthorized"
    assert paubox_sandbox.messages == []


def test_wrong_key_is_401_and_right_key_in_both_schemes_is_accepted(paubox_sandbox):
    wrong = Api(paubox_sandbox, key="not-the-key").send()
    assert wrong.status_code == 401
    assert error_details(wrong) == ["Invalid API key"]
    assert Api(paubox_sandbox).send().status_code == 200
    assert Api(paubox_sandbox, scheme="Bearer").send().status_code == 200
    assert len(paubox_sandbox.messages) == 2


def test_username_must_match_when_configured(paubox_sandbox):
    url = paubox_sandbox.url + "someone-else/messages"
    headers = {"Authorization": f"Token token={KEY}"}
    response = http("POST", url, json={"data": {"message": message()}}, headers=headers)
    assert response.status_code == 401
    # Paubox's newer username-less form is accepted.
    newer = http(
        "POST",
        paubox_sandbox.url + "email/messages",
        json={"data": {"message": message()}},
        headers=headers,
    )
    assert newer.status_code == 200


def test_any_key_and_username_when_not_configured(own_server):
    response = Api(own_server, key="whatever").send()
    assert response.status_code == 200
    other = http(
        "POST",
        own_server.url + "another-user/messages",
        json={"data": {"message": message()}},
        headers={"Authorization": "Bearer k"},
    )
    assert other.status_code == 200
    assert Api(own_server, key=None).send().status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "v1/messages"),  # no username: a wrong base path
        ("POST", "v2/sandbox-user/messages"),
        ("POST", "v1/sandbox-user/nothing"),
        ("GET", "v1/sandbox-user/messages"),
        ("POST", "v1/sandbox-user/message_receipt"),
        ("GET", "api/v1/sandbox-user/message_receipt"),
    ],
)
def test_unknown_paths_get_the_gateways_html_404(paubox_sandbox, method, path):
    response = http(
        method,
        paubox_sandbox.root_url + path,
        json={"data": {"message": message()}},
        headers={"Authorization": f"Token token={KEY}"},
    )
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "404 Not Found" in response.text


# -- sending and validation ------------------------------------------------------------------
def test_send_returns_tracking_id_and_captures_the_message(api, paubox_sandbox):
    msg = message(
        recipients=["Pat Doe <patient@example.com>"],
        cc=["cc@example.com"],
        bcc=["BCC@example.com", "patient@example.com"],
        headers={"from": "clinic@example.org", "subject": "Hi", "X-Clinic": "north"},
        content={"text/plain": "plain", "text/html": "<p>html</p>"},
        attachments=[{"fileName": "a.txt", "contentType": "text/plain", "content": "SGVsbG8="}],
        allowNonTLS=False,
        forceSecureNotification=False,
    )
    response = api.post("messages", {"data": {"message": msg, "override_open_tracking": True}})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == "Service OK"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        body["sourceTrackingId"],
    )
    assert body["customHeaders"] == {"X-Clinic": "north"}
    captured = paubox_sandbox.last_message
    assert captured.tracking_id == body["sourceTrackingId"]
    assert captured.endpoint == "messages"
    assert captured.message == msg
    assert captured["message"] == msg
    assert captured.recipients == ["patient@example.com", "cc@example.com", "BCC@example.com"]
    assert captured.options == {"override_open_tracking": True}
    assert captured.received_at.tzinfo is not None
    assert paubox_sandbox.get_message(captured.tracking_id) is captured
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["Connection"] == "keep-alive"


def _recipients(count: int) -> list[str]:
    return [f"r{i}@example.com" for i in range(count)]


INVALID = [
    ("not json", "not valid JSON"),
    ({"message": message()}, "data is missing"),
    ({"data": {}}, "data.message is missing"),
    ({"data": {"message": "text"}}, "message must be a JSON object"),
    ({"data": {"message": {**message(), "recipients": None}}}, "recipients is missing"),
    ({"data": {"message": message(recipients=[])}}, "recipients must be a non-empty list"),
    ({"data": {"message": message(recipients=["not an address"])}}, "recipients[0] is not a valid"),
    ({"data": {"message": message(cc=["ok@example.com", "bad"])}}, "cc[1] is not a valid"),
    ({"data": {"message": message(headers={"subject": "s"})}}, "headers.from is missing"),
    (
        {"data": {"message": message(headers={"from": "a@example.org"})}},
        "headers.subject is missing",
    ),
    (
        {"data": {"message": {k: v for k, v in message().items() if k != "headers"}}},
        "headers is missing",
    ),
    ({"data": {"message": message(content={})}}, "content must have text/plain or text/html"),
    ({"data": {"message": message(content={"text/plain": ""})}}, "content must have"),
    (
        {"data": {"message": {k: v for k, v in message().items() if k != "content"}}},
        "content is missing",
    ),
    (
        {
            "data": {
                "message": message(attachments=[{"contentType": "text/plain", "content": "SGk="}])
            }
        },
        "attachments[0].fileName is missing",
    ),
    (
        {"data": {"message": message(attachments=[{"fileName": "a", "content": "SGk="}])}},
        "attachments[0].contentType is missing",
    ),
    (
        {
            "data": {
                "message": message(attachments=[{"fileName": "a", "contentType": "text/plain"}])
            }
        },
        "attachments[0].content is missing",
    ),
    (
        {
            "data": {
                "message": message(
                    attachments=[{"fileName": "a", "contentType": "text/plain", "content": "**!"}]
                )
            }
        },
        "attachments[0].content is not valid base64",
    ),
    (
        {
            "data": {
                "message": message(
                    recipients=_recipients(50), cc=_recipients(30), bcc=_recipients(21)
                )
            }
        },
        "too many recipients: 101",
    ),
]


@pytest.mark.parametrize(("body", "expected"), INVALID)
def test_invalid_messages_are_400_in_paubox_shape(api, paubox_sandbox, body, expected):
    response = api.post("messages", body)
    assert response.status_code == 400, response.text
    details = error_details(response)
    assert any(expected in d for d in details), details
    assert all(e["title"] for e in response.json()["errors"])
    assert paubox_sandbox.messages == []


def test_exactly_100_recipients_and_both_content_parts_are_fine(api):
    msg = message(
        recipients=_recipients(60),
        cc=_recipients(40),
        content={"text/plain": "a", "text/html": "<b>b</b>"},
    )
    assert api.send(msg).status_code == 200


def test_bulk_answers_in_request_order(api, paubox_sandbox):
    batch = [message(headers={"from": "c@example.org", "subject": f"m{i}"}) for i in range(7)]
    response = api.post("bulk_messages", {"data": {"messages": batch}})
    assert response.status_code == 200
    answers = response.json()["messages"]
    assert [a["data"] for a in answers] == ["Service OK"] * 7
    ids = [a["sourceTrackingId"] for a in answers]
    assert len(set(ids)) == 7
    captured = paubox_sandbox.messages
    assert [m.tracking_id for m in captured] == ids
    assert [m.subject for m in captured] == [f"m{i}" for i in range(7)]
    assert {m.endpoint for m in captured} == {"bulk_messages"}
    assert [m.batch_index for m in captured] == list(range(7))


def test_bulk_with_one_invalid_message_is_refused_whole_naming_the_index(api, paubox_sandbox):
    batch = [message(), message(), message(headers={"from": "c@example.org"}), message()]
    response = api.post("bulk_messages", {"data": {"messages": batch}})
    assert response.status_code == 400
    assert error_details(response) == ["messages[2]: headers.subject is missing"]
    assert paubox_sandbox.messages == []


@pytest.mark.parametrize(
    "body", [{"data": {}}, {"data": {"messages": []}}, {"data": {"messages": {}}}]
)
def test_bulk_without_messages_is_400(api, body):
    response = api.post("bulk_messages", body)
    assert response.status_code == 400
    assert "data.messages" in error_details(response)[0]


def test_chunked_request_bodies_are_read(api, paubox_sandbox):
    body = json.dumps({"data": {"message": message()}}).encode()
    chunks = (body[i : i + 10] for i in range(0, len(body), 10))
    response = api.post("messages", chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert paubox_sandbox.last_message.message == message()
    assert api.send().status_code == 200  # the connection is still in step


def test_oversized_body_is_413_and_closes(paubox_sandbox):
    with socket.create_connection((paubox_sandbox.host, paubox_sandbox.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/sandbox-user/messages HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 999999999999\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"Connection: close" in answer


def test_a_sandbox_bug_answers_500_not_a_dropped_connection(api, monkeypatch, caplog):
    from django_paubox.sandbox import handler

    def broken(message: Any) -> list[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr(handler, "validate_message", broken)
    with caplog.at_level("ERROR", logger="django_paubox.sandbox"):
        response = api.send()
    assert response.status_code == 500
    assert response.json()["errors"][0]["code"] == 500
    assert "failed answering" in caplog.text


# -- receipts --------------------------------------------------------------------------------
def test_receipt_progresses_from_processing_to_delivered(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0.5
    msg = message(recipients=["a@example.com"], cc=["b@example.com"], bcc=["c@example.com"])
    tracking_id = api.send_ok(msg)
    first = api.receipt(tracking_id).json()
    assert first["sourceTrackingId"] == tracking_id
    deliveries = first["data"]["message"]["message_deliveries"]
    assert [d["recipient"] for d in deliveries] == [
        "a@example.com",
        "b@example.com",
        "c@example.com",
    ]
    assert all(d["status"] == {"deliveryStatus": "processing"} for d in deliveries)
    assert re.fullmatch(r"<[0-9a-f-]{36}@example\.org>", first["data"]["message"]["id"])
    final = wait_for(
        lambda: (
            all(s["deliveryStatus"] == "delivered" for s in api.statuses(tracking_id).values())
            and api.statuses(tracking_id)
        )
    )
    for status in final.values():
        delivered = parsedate_to_datetime(status["deliveryTime"])
        assert delivered.tzinfo is not None
        assert "openedStatus" not in status  # several recipients: no open tracking
    sent = paubox_sandbox.last_message.received_at
    assert 0 <= (delivered - sent.replace(microsecond=0)).total_seconds() <= 2


def test_unknown_tracking_id_is_404_with_the_id(api):
    response = api.receipt("6e1cf9a4-7bde-4834-8200-ed424b50c8a7")
    assert response.status_code == 404
    assert response.json() == {
        "errors": [
            {
                "code": 404,
                "title": "Message was not found",
                "details": "Message with this tracking id was not found",
            }
        ],
        "sourceTrackingId": "6e1cf9a4-7bde-4834-8200-ed424b50c8a7",
    }


def test_receipt_without_tracking_id_is_400(api, paubox_sandbox):
    response = api.session.get(paubox_sandbox.base_url + "/message_receipt")
    assert response.status_code == 400
    assert "sourceTrackingId" in error_details(response)[0]


def test_receipt_needs_auth(paubox_sandbox, api):
    tracking_id = api.send_ok()
    response = http(
        "GET",
        paubox_sandbox.base_url + "/message_receipt",
        params={"sourceTrackingId": tracking_id},
    )
    assert response.status_code == 401


FINAL = {
    "someone": "delivered",
    "bounce": "hard bounced",
    "hard": "hard bounced",
    "soft": "soft bounced",
    "full": "soft bounced - mailbox full",
    "portal": "delivered via secure portal",
    "notls": "delivered via secure portal",
    "error": "Internal error. Please check back later.",
    "open": "delivered",
    "bounce+42": "hard bounced",
}


@pytest.mark.parametrize(("local", "expected"), FINAL.items())
def test_each_outcome_address(api, paubox_sandbox, local, expected):
    paubox_sandbox.processing_seconds = 0
    address = f"{local}@example.com"
    status = api.statuses(api.send_ok(message(recipients=[address])))[address]
    assert status["deliveryStatus"] == expected
    if expected.startswith("delivered"):
        parsedate_to_datetime(status["deliveryTime"])
        assert status["openedStatus"] == ("opened" if local == "open" else "not opened")
    else:
        assert "deliveryTime" not in status
        assert "openedStatus" not in status


def test_opened_single_recipient_carries_open_fields_and_counters(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0
    tracking_id = api.send_ok(message(recipients=["Reader <open@example.com>"]))
    body = api.receipt(tracking_id).json()["data"]["message"]
    status = body["message_deliveries"][0]["status"]
    assert status["openedStatus"] == "opened"
    assert parsedate_to_datetime(status["openedTime"]) >= parsedate_to_datetime(
        status["deliveryTime"]
    )
    assert body["total_opens"] == 1
    assert body["distinct_opens"] == 1


def test_open_among_several_recipients_is_only_delivered(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0
    tracking_id = api.send_ok(message(recipients=["open@example.com", "b@example.com"]))
    body = api.receipt(tracking_id).json()["data"]["message"]
    assert "total_opens" not in body
    for delivery in body["message_deliveries"]:
        assert delivery["status"]["deliveryStatus"] == "delivered"
        assert "openedStatus" not in delivery["status"]


def test_intermediate_stages_notls_and_open(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0.25
    notls = api.send_ok(message(recipients=["notls@example.com"]))
    opened = api.send_ok(message(recipients=["open@example.com"]))
    seen_notls: list[str] = []
    seen_open: list[str] = []

    def poll() -> bool:
        s = api.statuses(notls)["notls@example.com"]["deliveryStatus"]
        if not seen_notls or seen_notls[-1] != s:
            seen_notls.append(s)
        o = api.statuses(opened)["open@example.com"].get("openedStatus", "-")
        if not seen_open or seen_open[-1] != o:
            seen_open.append(o)
        return s == "delivered via secure portal" and o == "opened"

    wait_for(poll)
    assert seen_notls == [
        "processing",
        "TLS not offered, sending via Secure Portal",
        "delivered via secure portal",
    ]
    assert seen_open == ["-", "not opened", "opened"]


def test_set_outcome_overrides_and_message_flags(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0
    paubox_sandbox.set_outcome("Plain <plain@example.com>", "hard bounced")
    paubox_sandbox.set_outcome("other@example.com", "soft_bounced")
    overridden = api.statuses(
        api.send_ok(message(recipients=["PLAIN@example.com", "other@example.com"]))
    )
    assert overridden["PLAIN@example.com"]["deliveryStatus"] == "hard bounced"
    assert overridden["other@example.com"]["deliveryStatus"] == "soft bounced"
    paubox_sandbox.set_outcome("plain@example.com", None)
    forced = api.statuses(api.send_ok(message(forceSecureNotification=True)))
    assert forced["patient@example.com"]["deliveryStatus"] == "delivered via secure portal"
    non_tls = api.statuses(api.send_ok(message(recipients=["notls@example.com"], allowNonTLS=True)))
    assert non_tls["notls@example.com"]["deliveryStatus"] == "delivered"
    with pytest.raises(ValueError, match="Unknown sandbox outcome"):
        paubox_sandbox.set_outcome("x@example.com", "lost in the mail")


def test_processing_outcome_never_finishes(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 0
    paubox_sandbox.set_outcome("slow@example.com", "processing")
    tracking_id = api.send_ok(message(recipients=["slow@example.com"]))
    paubox_sandbox.finish_processing()
    assert api.statuses(tracking_id)["slow@example.com"] == {"deliveryStatus": "processing"}


def test_finish_processing_makes_everything_final(api, paubox_sandbox):
    paubox_sandbox.processing_seconds = 60
    tracking_id = api.send_ok(message(recipients=["notls@example.com"]))
    assert api.statuses(tracking_id)["notls@example.com"]["deliveryStatus"] == "processing"
    paubox_sandbox.finish_processing()
    status = api.statuses(tracking_id)["notls@example.com"]
    assert status["deliveryStatus"] == "delivered via secure portal"


def test_outcome_names_normalise():
    assert normalise_outcome("hard bounced") == "hard_bounced"
    assert normalise_outcome("Soft-Bounced") == "soft_bounced"
    assert normalise_outcome("open") == "opened"
    assert normalise_outcome("TLS not offered, sending via Secure Portal") == "notls"


# -- faults ----------------------------------------------------------------------------------
def test_fail_next_503_in_paubox_shape_then_recovers(api, paubox_sandbox):
    paubox_sandbox.fail_next()
    failed = api.send()
    assert failed.status_code == 503
    assert failed.json()["errors"][0]["code"] == 503
    assert paubox_sandbox.messages == []
    assert api.send().status_code == 200
    assert len(paubox_sandbox.requests) == 2


def test_fail_next_429_count_and_custom_body(api, paubox_sandbox):
    paubox_sandbox.fail_next(429, count=2, headers={"Retry-After": "1"})
    paubox_sandbox.fail_next(502, body="<html><body>Bad gateway</body></html>")
    paubox_sandbox.fail_next(500, body={"error": "boom"})
    first, second = api.send(), api.send()
    assert [first.status_code, second.status_code] == [429, 429]
    assert error_details(first) == ["rate limit exceeded"]
    assert first.headers["Retry-After"] == "1"
    html = api.send()
    assert html.status_code == 502
    assert html.headers["Content-Type"].startswith("text/html")
    assert "Bad gateway" in html.text
    other = api.send()
    assert (other.status_code, other.json()) == (500, {"error": "boom"})
    assert api.send().status_code == 200


def test_faults_can_target_one_endpoint(api, paubox_sandbox):
    paubox_sandbox.fail_next(503, endpoint="message_receipt")
    tracking_id = api.send_ok()
    assert api.receipt(tracking_id).status_code == 503
    assert api.receipt(tracking_id).status_code == 200
    with pytest.raises(ValueError):
        paubox_sandbox.fail_next(503, endpoint="nowhere")
    with pytest.raises(ValueError):
        paubox_sandbox.fail_next(200)


def test_faults_apply_to_bulk_too(api, paubox_sandbox):
    paubox_sandbox.fail_next(504)
    response = api.post("bulk_messages", {"data": {"messages": [message()]}})
    assert response.status_code == 504


def test_timeout_holds_the_answer_past_the_read_timeout(api, paubox_sandbox):
    paubox_sandbox.fail_next_with("timeout")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.send(timeout=(2, 0.3))
    assert time.monotonic() - started < 2
    # The send itself was processed: the client cannot know, which is the point.
    assert len(paubox_sandbox.messages) == 1
    assert api.send().status_code == 200


def test_timeout_hold_is_released_by_reset(api, paubox_sandbox):
    paubox_sandbox.fail_next_with("timeout")
    result: dict[str, Any] = {}

    def call() -> None:
        started = time.monotonic()
        response = Api(paubox_sandbox).send(timeout=10)
        result["status"] = response.status_code
        result["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: paubox_sandbox.messages)
    time.sleep(0.1)
    assert thread.is_alive()
    paubox_sandbox.reset()
    thread.join(5)
    assert result["status"] == 200
    assert result["elapsed"] < 5


def test_drop_closes_the_connection_without_answer(api, paubox_sandbox):
    paubox_sandbox.fail_next_with("drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        api.send()
    assert paubox_sandbox.messages == []
    assert len(paubox_sandbox.requests) == 1
    assert api.send().status_code == 200  # a new connection works


def test_html404_fault(api, paubox_sandbox):
    paubox_sandbox.fail_next_with("html404", endpoint="messages")
    response = api.send()
    assert response.status_code == 404
    assert "404 Not Found" in response.text
    with pytest.raises(ValueError):
        paubox_sandbox.fail_next_with("status")


def test_fault_rates_are_seeded_and_cover_each_kind(paubox_sandbox):
    paubox_sandbox.set_fault_rates(server_error=1.0)
    api = Api(paubox_sandbox)
    assert {api.send().status_code for _ in range(8)} <= {500, 502, 503, 504}
    paubox_sandbox.set_fault_rates(rate_limit=1.0)
    assert api.send().status_code == 429
    paubox_sandbox.set_fault_rates(drop=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        api.send()
    paubox_sandbox.timeout_hold_seconds = 1
    paubox_sandbox.set_fault_rates(timeout=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.send(timeout=(2, 0.2))

    def outcomes(seed: int) -> list[int]:
        paubox_sandbox.set_fault_rates(server_error=0.3, rate_limit=0.2, seed=seed)
        return [Api(paubox_sandbox).receipt("x").status_code for _ in range(30)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert {404, 429} <= set(first)
    assert set(first) & {500, 502, 503, 504}
    with pytest.raises(ValueError):
        paubox_sandbox.set_fault_rates(server_error=0.8, drop=0.5)
    paubox_sandbox.set_fault_rates()
    assert api.send().status_code == 200


def test_latency_sleeps_per_request_without_blocking_others(paubox_sandbox):
    paubox_sandbox.set_latency(0.3)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda _: Api(paubox_sandbox).send().status_code, range(4)))
    elapsed = time.monotonic() - started
    assert codes == [200] * 4
    assert 0.3 <= elapsed < 0.9  # in parallel, not 4 x 0.3 s
    paubox_sandbox.reset()
    started = time.monotonic()
    Api(paubox_sandbox).send()
    assert time.monotonic() - started < 0.25


def test_keep_alive_answers_do_not_stall(api, paubox_sandbox):
    tracking_id = api.send_ok()
    started = time.monotonic()
    for _ in range(50):
        assert api.receipt(tracking_id).status_code == 200
    # A delayed-ACK stall would cost ~40 ms per answer (2 s here).
    assert time.monotonic() - started < 1.0


# -- control API -----------------------------------------------------------------------------
def test_control_api_mirrors_the_python_api(api, paubox_sandbox):
    control = SandboxControl(paubox_sandbox.url).wait_until_up()
    assert control.root == paubox_sandbox.root_url.rstrip("/")
    config = control.config()
    assert config["api_key_required"] is True
    assert KEY not in json.dumps(config)
    control.processing_seconds = 0
    assert paubox_sandbox.processing_seconds == 0
    assert control.processing_seconds == 0
    control.set_outcome("who@example.com", "hard_bounced")
    tracking_id = api.send_ok(message(recipients=["who@example.com"]))
    assert api.statuses(tracking_id)["who@example.com"]["deliveryStatus"] == "hard bounced"
    [captured] = control.messages
    assert captured.tracking_id == tracking_id
    assert captured.message == paubox_sandbox.last_message.message
    assert captured.received_at == paubox_sandbox.last_message.received_at
    assert control.last_message.tracking_id == tracking_id
    assert control.get_message(tracking_id).recipients == ["who@example.com"]
    assert control.get_message("nope") is None
    assert control.requests == paubox_sandbox.requests
    assert len(control.requests) == 2  # control calls are not counted

    control.fail_next(503, count=2)
    assert [api.send().status_code for _ in range(3)] == [503, 503, 200]
    control.fail_next(429, endpoint="message_receipt")
    assert api.receipt(tracking_id).status_code == 429
    control.fail_next_with("drop")
    with pytest.raises(requests.exceptions.ConnectionError):
        api.send()
    control.set_fault_rates(rate_limit=1.0, seed=1)
    assert api.send().status_code == 429
    control.set_fault_rates()
    control.set_latency(0.2)
    started = time.monotonic()
    api.send()
    assert time.monotonic() - started >= 0.2
    control.set_latency(0)

    control.processing_seconds = 60
    pending = api.send_ok()
    control.finish_processing()
    assert api.statuses(pending)["patient@example.com"]["deliveryStatus"] == "delivered"
    control.webhook_url = "http://127.0.0.1:9/hook"
    assert paubox_sandbox.webhook_url == "http://127.0.0.1:9/hook"
    control.webhook_url = None
    control.set_timeout_hold(2.5)
    assert paubox_sandbox.timeout_hold_seconds == 2.5

    control.reset()
    assert control.messages == [] and paubox_sandbox.requests == []
    with pytest.raises(SandboxControlError, match="HTTP 400"):
        control.fail_next_with("meteor")
    with pytest.raises(SandboxControlError, match="HTTP 400"):
        control.set_outcome("a@example.com", "lost")
    with pytest.raises(ValueError):
        SandboxControl("not a url")


def test_control_api_raw_routes(paubox_sandbox, api):
    root = paubox_sandbox.root_url + "_sandbox/"
    assert http("GET", root + "health").json() == {"ok": True}
    assert http("GET", root + "nothing").status_code == 404
    assert http("POST", root + "faults", data="[]").status_code == 400
    assert http("PUT", root + "reset").status_code == 405
    ok = http(
        "POST",
        root + "outcomes",
        json={"outcomes": {"a@example.com": "soft", "b@example.com": "open"}},
    )
    assert ok.status_code == 200
    paubox_sandbox.processing_seconds = 0
    tracking_id = api.send_ok(message(recipients=["a@example.com"]))
    detail = http("GET", root + "messages/" + tracking_id).json()
    assert detail["message"]["tracking_id"] == tracking_id
    status = detail["receipt"]["data"]["message"]["message_deliveries"][0]["status"]
    assert status["deliveryStatus"] == "soft bounced"
    assert http("POST", root + "faults", json={"fail_next": {"status": 500}, "clear": True}).ok
    assert api.send().status_code == 500


def test_control_unreachable_raises():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    control = SandboxControl(f"http://127.0.0.1:{port}/v1/", timeout=1)
    with pytest.raises(SandboxControlError):
        control.wait_until_up(timeout=0.2)


# -- webhooks --------------------------------------------------------------------------------
def test_webhooks_fire_paubox_shaped_events(api, paubox_sandbox, receiver):
    paubox_sandbox.processing_seconds = 0.05
    paubox_sandbox.webhook_url = receiver.url
    sent = {
        local: api.send_ok(
            message(
                recipients=[f"{local}@example.com"],
                headers={"from": "Clinic <clinic@example.org>", "subject": "Hi", "X-Ref": "7"},
            )
        )
        for local in ("someone", "bounce", "soft", "full", "open", "notls", "error")
    }
    events = wait_for(lambda: len(receiver.events) >= 7 and receiver.events)
    time.sleep(0.1)  # nothing more is due
    events = receiver.events
    by_name: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        assert set(event) == {"event_name", "payload"}
        by_name.setdefault(event["event_name"], []).append(event["payload"])
    assert sorted((name, len(v)) for name, v in by_name.items()) == [
        ("api_mail_log_delivered", 3),
        ("api_mail_log_opened", 1),
        ("api_mail_log_permanent_failure", 1),
        ("api_mail_log_temporary_failure", 2),
    ]
    payloads = [e["payload"] for e in events]
    ids = [p["id"] for p in payloads]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
    for payload in payloads:
        assert set(payload) == {
            "id",
            "subject",
            "header_message_id",
            "source_tracking_id",
            "outbound_queue_id",
            "time",
            "from",
            "to",
            "custom_headers",
        }
        assert ISO_Z.match(payload["time"])
        assert payload["from"] == "clinic@example.org"
        assert payload["subject"] == "Hi"
        assert payload["custom_headers"] == {"X-Ref": "7"}
        local = payload["to"].split("@")[0]
        assert payload["source_tracking_id"] == sent[local]
        receipt_id = api.receipt(sent[local]).json()["data"]["message"]["id"]
        assert payload["header_message_id"] == receipt_id
    assert by_name["api_mail_log_permanent_failure"][0]["to"] == "bounce@example.com"
    opened = by_name["api_mail_log_opened"][0]
    delivered_open = next(p for p in by_name["api_mail_log_delivered"] if p["to"] == opened["to"])
    assert opened["time"] >= delivered_open["time"]
    assert len(paubox_sandbox.webhook_attempts) == 7
    assert {a["status"] for a in paubox_sandbox.webhook_attempts} == {200}
    # One scheduler thread, not a thread per message.
    names = [t.name for t in threading.enumerate()]
    assert names.count("paubox-sandbox-webhooks") <= 2


def test_webhook_arrives_after_the_receipt_is_final(api, paubox_sandbox, receiver):
    paubox_sandbox.processing_seconds = 0.1
    paubox_sandbox.webhook_url = receiver.url
    tracking_id = api.send_ok(message(recipients=["bounce@example.com"]))
    [event] = wait_for(lambda: receiver.events)
    assert event["payload"]["source_tracking_id"] == tracking_id
    assert api.statuses(tracking_id)["bounce@example.com"]["deliveryStatus"] == "hard bounced"


def test_failed_webhooks_are_logged_and_not_retried(api, paubox_sandbox, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    paubox_sandbox.processing_seconds = 0
    paubox_sandbox.webhook_url = f"http://127.0.0.1:{port}/hook"
    with caplog.at_level("WARNING", logger="django_paubox.sandbox"):
        tracking_id = api.send_ok()
        [attempt] = wait_for(lambda: paubox_sandbox.webhook_attempts)
    assert attempt["source_tracking_id"] == tracking_id
    assert "error" in attempt and "status" not in attempt
    time.sleep(0.2)
    assert len(paubox_sandbox.webhook_attempts) == 1
    assert "not retried" in caplog.text
    assert "Your appointment" not in caplog.text


def test_webhook_error_status_is_recorded(api, paubox_sandbox):
    bad = Receiver(status=500)
    try:
        paubox_sandbox.processing_seconds = 0
        paubox_sandbox.webhook_url = bad.url
        api.send_ok()
        [attempt] = wait_for(lambda: paubox_sandbox.webhook_attempts)
        assert attempt["status"] == 500
        assert len(bad.events) == 1
    finally:
        bad.close()


def test_no_webhooks_without_url_and_none_after_reset(api, paubox_sandbox, receiver):
    paubox_sandbox.processing_seconds = 0.3
    api.send_ok()
    paubox_sandbox.reset()
    paubox_sandbox.webhook_url = receiver.url
    time.sleep(0.45)
    assert receiver.events == []


def test_webhooks_from_constructor_url(receiver):
    with SandboxServer(processing_seconds=0, webhook_url=receiver.url) as server:
        Api(server, key="k").send_ok()
        [event] = wait_for(lambda: receiver.events)
    assert event["event_name"] == "api_mail_log_delivered"


# -- HTML page -------------------------------------------------------------------------------
def test_html_page_lists_messages_newest_first_escaped(api, paubox_sandbox):
    api.send_ok(message(headers={"from": "a@example.org", "subject": "first"}))
    second = api.send_ok(
        message(headers={"from": "a@example.org", "subject": "<script>alert(1)</script>"})
    )
    page = http("GET", paubox_sandbox.root_url)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.text.index(second) < page.text.index("first")
    assert "processing" in page.text
    assert "patient@example.com" in page.text
    assert "http://" not in page.text.replace(paubox_sandbox.url, "")  # no external assets
    assert paubox_sandbox.requests == [("POST", "/v1/sandbox-user/messages")] * 2


def test_html_detail_shows_text_and_decoded_html(api, paubox_sandbox):
    html_part = "<h1>Hello <em>Pat</em></h1>"
    tracking_id = api.send_ok(
        message(
            content={
                "text/plain": "Plain & simple",
                "text/html": base64.b64encode(html_part.encode()).decode(),
            },
            attachments=[
                {"fileName": "r.pdf", "contentType": "application/pdf", "content": "JVBERg=="}
            ],
        )
    )
    page = http("GET", paubox_sandbox.root_url + "message/" + tracking_id)
    assert page.status_code == 200
    assert "Plain &amp; simple" in page.text
    assert "&lt;h1&gt;Hello &lt;em&gt;Pat&lt;/em&gt;&lt;/h1&gt;" in page.text
    assert "<em>" not in page.text
    assert "r.pdf" in page.text and "4 bytes" in page.text
    assert http("GET", paubox_sandbox.root_url + "message/unknown").status_code == 404


def test_html_decoding_of_escaped_and_plain_html():
    from django_paubox.sandbox.pages import decoded_html

    assert decoded_html("&lt;p&gt;hi&lt;/p&gt;") == "<p>hi</p>"
    assert decoded_html("<p>hi</p>") == "<p>hi</p>"
    assert decoded_html("plain words") == "plain words"


# -- lifecycle -------------------------------------------------------------------------------
def test_stop_closes_idle_keep_alive_connections_and_the_port():
    server = SandboxServer(api_key="k", processing_seconds=0).start()
    session = requests.Session()
    session.headers["Authorization"] = "Token token=k"
    response = session.post(server.base_url + "/messages", json={"data": {"message": message()}})
    assert response.status_code == 200
    held = SandboxServer(processing_seconds=0).start()
    held.fail_next_with("timeout")
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            Api(held, key="k").send(timeout=10)
        except requests.RequestException as error:
            result["error"] = error
        else:
            result["ok"] = True

    thread = threading.Thread(target=call)
    thread.start()
    wait_for(lambda: held.messages)
    started = time.monotonic()
    held.stop()
    server.stop()
    server.stop()  # idempotent
    thread.join(5)
    assert time.monotonic() - started < 3
    assert not thread.is_alive()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(server.base_url + "/messages", json={"data": {"message": message()}})
    with pytest.raises(RuntimeError):
        server.start()


def test_urls_and_describe(own_server):
    assert own_server.url == f"http://127.0.0.1:{own_server.port}/v1/"
    assert own_server.base_url == own_server.url + "sandbox"
    assert "api_key" not in own_server.describe()
    assert repr(own_server) == f"<SandboxServer {own_server.url}>"


def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = SandboxServer(host="::1", processing_seconds=0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    with server:
        assert server.url.startswith("http://[::1]:")
        assert Api(server, key="k").send().status_code == 200


# -- the pytest fixture ----------------------------------------------------------------------
def test_fixture_points_settings_at_the_sandbox(paubox_sandbox):
    assert settings.PAUBOX["API_URL"] == paubox_sandbox.url
    conf = get_settings()
    assert conf.base_url == paubox_sandbox.base_url
    assert conf.api_key == paubox_sandbox.api_key
    assert paubox_sandbox.processing_seconds == plugin.DEFAULT_PROCESSING_SECONDS
    assert paubox_sandbox.messages == [] and paubox_sandbox.requests == []


def test_fixture_settings_keep_other_keys_and_restore(paubox_sandbox_server):
    with override_settings(PAUBOX={"API_KEY": "real", "BATCH_SIZE": 7, "API_URL": "https://x/v1/"}):
        with plugin.sandbox_settings(paubox_sandbox_server):
            assert settings.PAUBOX["BATCH_SIZE"] == 7
            assert settings.PAUBOX["API_URL"] == paubox_sandbox_server.url
            assert settings.PAUBOX["API_KEY"] == plugin.SANDBOX_API_KEY
            assert settings.PAUBOX["API_USERNAME"] == plugin.SANDBOX_API_USERNAME
        assert settings.PAUBOX == {"API_KEY": "real", "BATCH_SIZE": 7, "API_URL": "https://x/v1/"}


def test_fixture_restores_credentials_changed_by_a_test_part_1(paubox_sandbox):
    paubox_sandbox.api_key = None
    paubox_sandbox.set_latency(5)
    paubox_sandbox.processing_seconds = 9


def test_fixture_restores_credentials_changed_by_a_test_part_2(paubox_sandbox):
    assert paubox_sandbox.api_key == plugin.SANDBOX_API_KEY
    assert paubox_sandbox.faults.latency == 0
    assert paubox_sandbox.processing_seconds == plugin.DEFAULT_PROCESSING_SECONDS


def _run_python(code: str) -> str:
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


def test_sandbox_and_plugin_import_without_a_django_project():
    # The sandbox imports django_paubox.exceptions (whose PauboxConfigError is Django's
    # ImproperlyConfigured), but no settings, apps, ORM or mail machinery.
    code = (
        "import sys; import django_paubox.sandbox, django_paubox.sandbox.pytest_plugin, "
        "django_paubox.sandbox.cli; "
        "heavy = ('django.apps', 'django.conf', 'django.db', 'django.core.mail', "
        "'django.template', 'django.http'); "
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    assert _run_python(code) == "[]"


# -- command line ----------------------------------------------------------------------------
def _start(
    args: list[str], env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    lines: list[str] = []
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if not line:
            process.wait(5)
            raise AssertionError(
                "exited early: " + (process.stderr.read() if process.stderr else "")
            )
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            return process, lines


def _api_url(lines: list[str]) -> str:
    return next(line.split(" = ", 1)[1].strip() for line in lines if line.startswith("API_URL = "))


def test_command_line_runs_and_stops_cleanly():
    process, lines = _start(
        [
            "-m",
            "django_paubox.sandbox",
            "--port",
            "0",
            "--api-key",
            "cli-secret-key",
            "--api-username",
            "cli-user",
            "--processing-seconds",
            "0",
            "--latency-ms",
            "1",
        ]
    )
    try:
        url = _api_url(lines)
        assert "cli-secret-key" not in "".join(lines)
        ok = http(
            "POST",
            url + "cli-user/messages",
            json={"data": {"message": message()}},
            headers={"Authorization": "Token token=cli-secret-key"},
            timeout=5,
        )
        assert ok.status_code == 200
        control = SandboxControl(url)
        assert control.config()["processing_seconds"] == 0
        assert control.config()["latency"] == 0.001
        assert control.last_message.tracking_id == ok.json()["sourceTrackingId"]
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "stopped" in out
    assert "POST /v1/cli-user/messages 200" in err
    assert "cli-secret-key" not in out + err


def test_command_line_rejects_bad_fault_rates():
    done = subprocess.run(
        [sys.executable, "-m", "django_paubox.sandbox", "--port", "0", "--error-rate", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert done.returncode == 1
    assert "Fault rates" in done.stderr


def test_management_command_defaults_credentials_from_settings():
    process, lines = _start(
        ["-m", "django", "paubox_sandbox", "--port", "0", "--processing-seconds", "0", "--quiet"],
        env={"DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    try:
        url = _api_url(lines)
        text = "".join(lines)
        assert "test-key" not in text  # tests/settings.py's API_KEY is never printed
        assert '"API_USERNAME": "test-user"' in text
        wrong = http(
            "POST",
            url + "test-user/messages",
            json={"data": {"message": message()}},
            headers={"Authorization": "Token token=other"},
            timeout=5,
        )
        assert wrong.status_code == 401
        right = http(
            "POST",
            url + "test-user/messages",
            json={"data": {"message": message()}},
            headers={"Authorization": "Token token=test-key"},
            timeout=5,
        )
        assert right.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "test-key" not in out + err


# -- Paubox's own OpenAPI spec ---------------------------------------------------------------
@pytest.fixture(scope="module")
def spec_validator() -> Callable[[str, Any], None]:
    if not SPEC.exists():
        pytest.skip("shared/paubox-openapi.json is not present")
    jsonschema = pytest.importorskip("jsonschema")
    spec = json.loads(SPEC.read_text())

    def validate(schema_name: str, instance: Any) -> None:
        schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
        jsonschema.Draft7Validator(schema).validate(instance)

    return validate


def test_answers_match_paubox_openapi_spec(api, paubox_sandbox, spec_validator):
    paubox_sandbox.processing_seconds = 0
    sent = api.send(message(headers={"from": "a@example.org", "subject": "s", "X-A": "b"}))
    spec_validator("SingleSendResponse", sent.json())
    bulk = api.post("bulk_messages", {"data": {"messages": [message(), message()]}})
    spec_validator("BulkSendResponse", bulk.json())
    spec_validator("ErrorResponse", api.send(message(recipients=[])).json())
    spec_validator("MessageReceiptErrorResponse", api.receipt("missing").json())
    for local in [*FINAL, "processing"]:
        if local == "processing":
            paubox_sandbox.processing_seconds = 60
        tracking_id = api.send_ok(message(recipients=[f"{local}@example.com"]))
        spec_validator("MessageReceiptResponse", api.receipt(tracking_id).json())
    multi = api.send_ok(message(recipients=["a@example.com", "open@example.com"]))
    spec_validator("MessageReceiptResponse", api.receipt(multi).json())
