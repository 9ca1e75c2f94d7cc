"""The Paubox sandbox's API, exercised over real HTTP with ``requests``: auth and routing
(404s and 405s), sending and validation, request framing, receipts and simulated outcomes.

Faults, the control API and webhooks, the server itself (pages, lifecycle, fixtures, command
line), templates and the OpenAPI conformance tests have modules of their own
(``test_sandbox_*.py``); the helpers they share are in ``sandbox_support``.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import pytest

from django_paubox.sandbox import SandboxServer
from django_paubox.sandbox import messages as sandbox_messages
from django_paubox.sandbox.outcomes import normalise_outcome

from .sandbox_support import KEY, Api, error_details, http, message, wait_for


@pytest.fixture
def api(paubox_sandbox: SandboxServer) -> Api:
    return Api(paubox_sandbox)


@pytest.fixture
def own_server() -> Iterator[SandboxServer]:
    """A separate sandbox accepting any key and username."""
    with SandboxServer(processing_seconds=0) as server:
        yield server


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
        ("POST", "v1/sandbox-user/messages/extra"),
        ("GET", "v1/sandbox-user/dynamic_templates/1/extra"),
        ("GET", "v1/sandbox-user/message_receipt/"),
        ("TRACE", "v1/sandbox-user/nothing"),
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


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/messages", "POST"),
        ("OPTIONS", "/messages", "POST"),
        ("PUT", "/messages", "POST"),
        ("GET", "/messages", "POST"),
        ("DELETE", "/bulk_messages", "POST"),
        ("POST", "/message_receipt", "GET"),
        ("PATCH", "/message_receipt", "GET"),
        ("PUT", "/dynamic_templates", "GET, POST"),
        ("POST", "/dynamic_templates/template_1", "DELETE, GET, PATCH"),
        ("OPTIONS", "/dynamic_templates/1", "DELETE, GET, PATCH"),
        ("GET", "/templated_messages", "POST"),
        ("DELETE", "/schedule", "GET, POST"),
        ("PUT", "/schedule/some-id", "GET, PATCH"),
        ("GET", "/schedule/some-id/cancel", "POST"),
    ],
)
def test_a_method_paubox_does_not_define_is_405_with_allow(paubox_sandbox, method, path, allow):
    response = http(
        method,
        paubox_sandbox.base_url + path,
        json={"data": {"message": message()}},
        headers={"Authorization": f"Token token={KEY}"},
    )
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.headers["Content-Type"].startswith("application/json")
    assert error_details(response) == [f"{method} is not allowed here; use {allow}"]
    assert response.json()["errors"][0]["title"] == "Method Not Allowed"
    assert paubox_sandbox.messages == []
    assert paubox_sandbox.requests == [(method, "/v1/sandbox-user" + path)]


def test_405_comes_before_auth_and_faults(paubox_sandbox):
    paubox_sandbox.fail_next(503)
    response = http("TRACE", paubox_sandbox.base_url + "/messages")  # no credentials
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    assert Api(paubox_sandbox).send().status_code == 503  # the fault is still queued


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
    ({"data": {"message": message(cc=None)}}, "cc must be a list of addresses"),
    ({"data": {"message": message(bcc=None)}}, "bcc must be a list of addresses"),
    ({"data": {"message": message(attachments=None)}}, "attachments must be a list"),
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


def exchange(sandbox: SandboxServer, raw: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send ``raw`` bytes as one request; (status line, headers, body) of the answer."""
    with socket.create_connection((sandbox.host, sandbox.port), timeout=5) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


@pytest.mark.parametrize(
    ("framing", "body", "detail"),
    [
        ("Transfer-Encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        ("Transfer-Encoding: chunked", b"-2\r\n{}\r\n0\r\n\r\n", "bad chunk size"),
        ("Transfer-Encoding: chunked", b"2\r\n{}xx\r\n0\r\n\r\n", "does not match its size"),
        ("Content-Length: abc", b"", "Content-Length must be"),
        ("Content-Length: -1", b"", "Content-Length must be"),
    ],
)
def test_a_body_that_cannot_be_read_is_400_and_closes(paubox_sandbox, framing, body, detail):
    status, headers, answer = exchange(
        paubox_sandbox,
        b"POST /v1/sandbox-user/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Token token="
        + KEY.encode()
        + b"\r\nContent-Type: application/json\r\n"
        + framing.encode()
        + b"\r\n\r\n"
        + body,
    )
    assert status.startswith("HTTP/1.1 400 ")
    assert headers["Connection"] == "close"
    assert headers["Content-Type"].startswith("application/json")
    [error] = json.loads(answer)["errors"]
    assert (error["code"], error["title"]) == (400, "Bad Request")
    assert detail in error["details"]
    assert paubox_sandbox.messages == []


def test_a_sandbox_bug_answers_500_not_a_dropped_connection(api, monkeypatch, caplog):
    def broken(message: Any) -> list[str]:
        raise RuntimeError("bug")

    monkeypatch.setattr(sandbox_messages, "validate_message", broken)
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
