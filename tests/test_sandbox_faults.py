"""Fault injection in the sandbox: queued faults, timeouts, drops, random rates, latency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from django_paubox.sandbox import FaultRates, SandboxServer

from .sandbox_support import Api, error_details, message, wait_for


@pytest.fixture
def api(paubox_sandbox: SandboxServer) -> Api:
    return Api(paubox_sandbox)


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


def test_fault_rates_are_one_dataclass_for_every_caller(paubox_sandbox):
    rates = FaultRates(rate_limit=1.0, seed=3)
    paubox_sandbox.set_fault_rates(rates)
    assert Api(paubox_sandbox).send().status_code == 429
    assert paubox_sandbox.describe()["fault_rates"] == {"rate_limit": 1.0}
    assert FaultRates.from_dict(rates.to_dict()) == rates
    assert rates.shares() == {"rate_limit": 1.0}
    with pytest.raises(ValueError, match="add up to at most 1"):
        FaultRates(server_error=0.8, drop=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultRates(timeout=-0.1)
    with pytest.raises(ValueError, match="meteor"):
        FaultRates.from_dict({"meteor": 1})
    with pytest.raises(TypeError):
        paubox_sandbox.set_fault_rates(meteor=1.0)
    paubox_sandbox.set_fault_rates()
    assert paubox_sandbox.describe()["fault_rates"] == {}


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
