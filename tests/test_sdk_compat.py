"""Paubox's official Python SDK (paubox-python3) against the sandbox: if Paubox's own client can
send and read receipts here, the sandbox speaks the same protocol as the real service."""

from __future__ import annotations

import base64

import pytest
import requests

paubox = pytest.importorskip("paubox")
from paubox import PauboxApiClient  # noqa: E402
from paubox.helpers.mail import Mail  # noqa: E402


def sdk_mail(**optional: object) -> dict:
    mail = Mail(
        "Clinic <clinic@example.org>",
        "Lab results are ready",
        ["patient@example.com"],
        {"text/plain": "Please log in to read them.", "text/html": "<p>Please log in.</p>"},
        optional_headers=optional or None,
    )
    return mail.get()


def test_sdk_sends_and_reads_a_receipt(paubox_sandbox):
    paubox_sandbox.processing_seconds = 0
    client = PauboxApiClient(paubox_sandbox.api_key, paubox_sandbox.base_url)
    response = client.send(sdk_mail(cc=["cc@example.com"], reply_to="desk@example.org"))
    assert response.status_code == 200
    body = response.to_dict
    assert body["data"] == "Service OK"
    tracking_id = body["sourceTrackingId"]

    captured = paubox_sandbox.last_message
    assert captured.tracking_id == tracking_id
    assert captured.recipients == ["patient@example.com", "cc@example.com"]
    # The SDK base64-encodes the HTML part; the sandbox takes it as Paubox does.
    html = captured.message["content"]["text/html"]
    assert base64.b64decode(html).decode() == "<p>Please log in.</p>"
    assert captured.message["headers"]["reply-to"] == "desk@example.org"

    receipt = client.get(tracking_id)
    assert receipt.status_code == 200
    data = receipt.to_dict
    assert data["sourceTrackingId"] == tracking_id
    statuses = {
        d["recipient"]: d["status"]["deliveryStatus"]
        for d in data["data"]["message"]["message_deliveries"]
    }
    assert statuses == {"patient@example.com": "delivered", "cc@example.com": "delivered"}


def test_sdk_sees_processing_then_final(paubox_sandbox):
    paubox_sandbox.processing_seconds = 60
    client = PauboxApiClient(paubox_sandbox.api_key, paubox_sandbox.base_url)
    mail = sdk_mail()
    mail["data"]["message"]["recipients"] = ["bounce@example.com"]
    tracking_id = client.send(mail).to_dict["sourceTrackingId"]
    delivery = client.get(tracking_id).to_dict["data"]["message"]["message_deliveries"][0]
    assert delivery["status"]["deliveryStatus"] == "processing"
    paubox_sandbox.finish_processing()
    delivery = client.get(tracking_id).to_dict["data"]["message"]["message_deliveries"][0]
    assert delivery["status"]["deliveryStatus"] == "hard bounced"


def test_sdk_errors_surface_as_http_errors(paubox_sandbox, capsys):
    wrong = PauboxApiClient("not-the-key", paubox_sandbox.base_url)
    with pytest.raises(requests.HTTPError) as raised:
        wrong.send(sdk_mail())
    assert raised.value.response.status_code == 401
    client = PauboxApiClient(paubox_sandbox.api_key, paubox_sandbox.base_url)
    with pytest.raises(requests.HTTPError) as raised:
        client.get("6e1cf9a4-7bde-4834-8200-ed424b50c8a7")
    assert raised.value.response.status_code == 404
    assert raised.value.response.json()["sourceTrackingId"] == (
        "6e1cf9a4-7bde-4834-8200-ed424b50c8a7"
    )
    bad = sdk_mail()
    bad["data"]["message"]["headers"]["subject"] = None
    with pytest.raises(requests.HTTPError) as raised:
        client.send(bad)
    assert raised.value.response.status_code == 400
    assert "headers.subject is missing" in capsys.readouterr().out  # the SDK prints the body
    assert paubox_sandbox.messages == []
