"""Steering a sandbox over HTTP (the control API and ``SandboxControl``), and its webhooks."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from django_paubox.exceptions import PauboxError
from django_paubox.exceptions import SandboxControlError as ExceptionsControlError
from django_paubox.sandbox import FaultRates, SandboxControl, SandboxControlError, SandboxServer
from django_paubox.sandbox import control as sandbox_control

from .sandbox_support import ISO_Z, KEY, Api, Receiver, http, message, wait_for


@pytest.fixture
def api(paubox_sandbox: SandboxServer) -> Api:
    return Api(paubox_sandbox)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


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


def test_control_sets_fault_rates_from_the_dataclass_too(paubox_sandbox, api):
    control = SandboxControl(paubox_sandbox.url)
    control.set_fault_rates(FaultRates(server_error=1.0, seed=2))
    assert paubox_sandbox.faults.rates == {"server_error": 1.0}
    assert api.send().status_code in (500, 502, 503, 504)
    with pytest.raises(SandboxControlError, match=r"HTTP 400.*meteor"):
        control._call("POST", "faults", {"rates": {"meteor": 1.0}})
    control.set_fault_rates()
    assert paubox_sandbox.faults.rates == {}


def test_control_error_is_one_class_importable_from_three_places():
    assert sandbox_control.SandboxControlError is SandboxControlError is ExceptionsControlError
    assert issubclass(SandboxControlError, PauboxError)
    assert issubclass(SandboxControlError, RuntimeError)  # as before it moved


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
