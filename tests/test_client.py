"""PauboxClient over real sockets: error shapes, retries that cannot duplicate, secrets kept."""

from __future__ import annotations

import json
import socket

import pytest

from django_paubox.client import PauboxClient
from django_paubox.conf import PauboxSettings
from django_paubox.exceptions import PauboxAPIError, PauboxConnectionError

from .canned_server import CannedServer

KEY = "live-key-must-never-leak"
MESSAGE = {
    "recipients": ["a@example.com"],
    "headers": {"from": "s@clinic.example", "subject": "s"},
    "content": {"text/plain": "hello"},
}


@pytest.fixture
def canned():
    with CannedServer() as server:
        yield server


def client_for(url: str, **kw) -> PauboxClient:
    conf = PauboxSettings(api_key=KEY, api_username="clinic", api_url=url, retry_backoff=0, **kw)
    return PauboxClient(conf)


def test_send_uses_documented_path_auth_and_body(canned):
    canned.add(200, json.dumps({"sourceTrackingId": "t-1", "data": "Service OK"}))
    with client_for(canned.url) as client:
        assert client.send_message(MESSAGE, override_open_tracking=True) == "t-1"
    method, path, headers, body = canned.requests[0]
    assert (method, path) == ("POST", "/v1/clinic/messages")
    assert headers["Authorization"] == f"Token token={KEY}"
    assert json.loads(body) == {"data": {"message": MESSAGE, "override_open_tracking": True}}


def test_bearer_scheme(canned):
    canned.add(200, json.dumps({"sourceTrackingId": "t-1"}))
    with client_for(canned.url, auth_scheme="Bearer") as client:
        client.send_message(MESSAGE)
    assert canned.requests[0][2]["Authorization"] == f"Bearer {KEY}"


def test_one_pooled_connection_for_many_calls(canned):
    for n in range(5):
        canned.add(200, json.dumps({"sourceTrackingId": f"t-{n}"}))
    ports = set()
    with client_for(canned.url) as client:
        for _ in range(5):
            client.send_message(MESSAGE)
            pool = client.session.get_adapter(canned.url).poolmanager
            ports.update(id(p) for p in pool.pools._container.values())
    assert len(canned.requests) == 5
    assert len(ports) == 1


@pytest.mark.parametrize(
    ("body", "title", "details", "code"),
    [
        (
            {"errors": [{"code": 400, "title": "Invalid Request", "details": "from missing"}]},
            "Invalid Request",
            "from missing",
            400,
        ),
        (
            {
                "errors": [
                    {"status": 422, "title": "Unprocessable", "detail": "domain not verified"}
                ]
            },
            "Unprocessable",
            "domain not verified",
            422,
        ),
        ({"error": "Template not found"}, "Template not found", "", None),
        ({"message": "Forbidden"}, "Forbidden", "", None),
    ],
)
def test_every_json_error_shape_becomes_one_api_error(canned, body, title, details, code):
    canned.add(422, json.dumps(body), **{"X-Request-Id": "req-9"})
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    error = info.value
    assert (error.status, error.title, error.details, error.code) == (422, title, details, code)
    assert error.request_id == "req-9"
    assert title in str(error)


def test_html_404_means_wrong_api_url(canned):
    canned.add(404, "<html><body>Not Found</body></html>", content_type="text/html")
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    assert info.value.status == 404
    assert "API_URL" in str(info.value)
    assert "/v1/clinic/messages" in str(info.value)


def test_401_says_check_key_and_username_without_printing_key(canned):
    canned.add(
        401,
        json.dumps(
            {"errors": [{"code": 401, "title": "Unauthorized", "details": "Invalid API token"}]}
        ),
    )
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    text = str(info.value) + repr(info.value) + repr(client)
    assert "API_KEY" in text and "API_USERNAME" in text
    assert KEY not in text


def test_200_with_error_body_is_an_error(canned):
    canned.add(200, json.dumps({"error": "Template 'x' not found"}))
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    assert "Template 'x' not found" in str(info.value)


def test_non_json_success_body(canned):
    canned.add(200, "OK", content_type="text/plain")
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    assert "not JSON" in str(info.value)


def test_post_is_never_retried_after_a_5xx(canned):
    canned.add(503, json.dumps({"errors": [{"code": 503, "title": "Service Unavailable"}]}))
    canned.add(200, json.dumps({"sourceTrackingId": "t-2"}))
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.send_message(MESSAGE)
    assert info.value.status == 503 and info.value.retryable
    assert len(canned.requests) == 1


def test_get_is_retried_on_429_and_5xx_honouring_retry_after(canned):
    canned.add(
        429,
        json.dumps({"errors": [{"code": 429, "title": "rate limit exceeded"}]}),
        **{"Retry-After": "0"},
    )
    canned.add(502, "<html>bad gateway</html>", content_type="text/html")
    canned.add(
        200,
        json.dumps(
            {"sourceTrackingId": "t", "data": {"message": {"id": "<x>", "message_deliveries": []}}}
        ),
    )
    with client_for(canned.url) as client:
        receipt = client.get_receipt("t")
    assert receipt["sourceTrackingId"] == "t"
    assert [r[1] for r in canned.requests] == ["/v1/clinic/message_receipt?sourceTrackingId=t"] * 3


def test_get_gives_up_after_max_retries(canned):
    for _ in range(3):
        canned.add(500, json.dumps({"errors": [{"code": 500, "title": "Internal"}]}))
    with client_for(canned.url, max_retries=2) as client, pytest.raises(PauboxAPIError) as info:
        client.get_receipt("t")
    assert info.value.status == 500
    assert len(canned.requests) == 3


def test_receipt_404_carries_tracking_id(canned):
    canned.add(
        404,
        json.dumps(
            {
                "errors": [
                    {
                        "code": 404,
                        "title": "Message was not found",
                        "details": "Message with this tracking id was not found",
                    }
                ],
                "sourceTrackingId": "abc",
            }
        ),
    )
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError) as info:
        client.get_receipt("abc")
    assert (info.value.status, info.value.tracking_id) == (404, "abc")
    assert not info.value.retryable


def test_bulk_returns_ids_in_order_and_flags_odd_items(canned):
    canned.add(
        200,
        json.dumps(
            {"messages": [{"sourceTrackingId": "a"}, {"data": "??"}, {"sourceTrackingId": "c"}]}
        ),
    )
    with client_for(canned.url) as client:
        results = client.send_bulk([MESSAGE, MESSAGE, MESSAGE])
    assert results[0] == "a" and results[2] == "c"
    assert isinstance(results[1], PauboxAPIError)


def test_bulk_with_wrong_count_is_an_error(canned):
    canned.add(200, json.dumps({"messages": [{"sourceTrackingId": "a"}]}))
    with client_for(canned.url) as client, pytest.raises(PauboxAPIError):
        client.send_bulk([MESSAGE, MESSAGE])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_is_known_not_sent():
    with client_for(f"http://127.0.0.1:{free_port()}/v1/", max_retries=1) as client:
        with pytest.raises(PauboxConnectionError) as info:
            client.send_message(MESSAGE)
    assert info.value.may_have_been_sent is False
    assert KEY not in str(info.value)


def test_read_timeout_on_post_may_have_been_sent():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # accepts (in the kernel) and never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/"
    try:
        with client_for(url, timeout=(1.0, 0.2)) as client:
            with pytest.raises(PauboxConnectionError) as info:
                client.send_message(MESSAGE)
    finally:
        listener.close()
    assert info.value.may_have_been_sent is True
    assert "read timeout" in str(info.value)


def test_client_requires_credentials():
    from django_paubox.exceptions import PauboxConfigError

    with pytest.raises(PauboxConfigError):
        PauboxClient(PauboxSettings(api_key="", api_username="u"))


def test_the_environments_proxies_and_ca_bundle_are_read_once_per_session(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.clinic.example:3128")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/clinic/ca.pem")
    session = PauboxClient(PauboxSettings(api_key="k", api_username="u")).session
    assert session.trust_env is False  # nothing is re-read per request
    assert session.proxies["https"] == "http://proxy.clinic.example:3128"
    assert session.verify == "/etc/clinic/ca.pem"
    monkeypatch.setenv("NO_PROXY", "api.paubox.net")
    bypassed = PauboxClient(PauboxSettings(api_key="k", api_username="u")).session
    assert "https" not in bypassed.proxies
