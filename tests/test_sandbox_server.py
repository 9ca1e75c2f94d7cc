"""The sandbox as a server and a tool: its HTML pages, lifecycle, the pytest fixture, imports
and the command line."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.conf import settings
from django.test import override_settings

from django_paubox.conf import get_settings
from django_paubox.sandbox import SandboxControl, SandboxServer
from django_paubox.sandbox import pytest_plugin as plugin

from .sandbox_support import ROOT, Api, http, message, plugin_args, run_python, wait_for


@pytest.fixture
def api(paubox_sandbox: SandboxServer) -> Api:
    return Api(paubox_sandbox)


@pytest.fixture
def own_server() -> Iterator[SandboxServer]:
    """A separate sandbox accepting any key and username."""
    with SandboxServer(processing_seconds=0) as server:
        yield server


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


def test_html_pages_render_a_subject_with_a_lone_surrogate(api, paubox_sandbox):
    # "\ud800" is valid JSON but no UTF-8 text: the page shows U+FFFD instead of a 500.
    body = json.dumps({"data": {"message": message(headers={"from": "a@example.org"})}})
    body = body.replace('"from"', '"subject": "odd \\ud800 one", "from"')
    sent = api.post("messages", body.encode(), headers={"Content-Type": "application/json"})
    assert sent.status_code == 200, sent.text
    assert paubox_sandbox.last_message.subject == "odd \ud800 one"
    for url in (
        paubox_sandbox.root_url,
        paubox_sandbox.root_url + "message/" + sent.json()["sourceTrackingId"],
    ):
        page = http("GET", url)
        assert page.status_code == 200
        assert "odd \ufffd one" in page.text
    assert http("GET", paubox_sandbox.root_url + "_sandbox/messages").status_code == 200


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


INNER_TESTS = """
from django_paubox.sandbox.pytest_plugin import (
    DEFAULT_PROCESSING_SECONDS, SANDBOX_API_KEY, SANDBOX_API_USERNAME,
)


def test_1_changes_everything(paubox_sandbox):
    paubox_sandbox.api_key = None
    paubox_sandbox.api_username = "someone-else"
    paubox_sandbox.set_latency(5)
    paubox_sandbox.processing_seconds = 9
    paubox_sandbox.webhook_url = "http://127.0.0.1:9/hook"
    paubox_sandbox.timeout_hold_seconds = 1
    paubox_sandbox.fail_next(503, count=5)
    paubox_sandbox.set_outcome("a@example.com", "hard_bounced")
    paubox_sandbox.add_template("t", "x")


def test_2_gets_the_defaults_back(paubox_sandbox):
    assert paubox_sandbox.api_key == SANDBOX_API_KEY
    assert paubox_sandbox.api_username == SANDBOX_API_USERNAME
    assert paubox_sandbox.faults.latency == 0
    assert paubox_sandbox.faults.draw("messages") is None
    assert paubox_sandbox.processing_seconds == DEFAULT_PROCESSING_SECONDS
    assert paubox_sandbox.webhook_url is None
    assert paubox_sandbox.timeout_hold_seconds == 30.0
    assert paubox_sandbox.templates == []
    assert paubox_sandbox.state._overrides == {}
"""


def test_fixture_gives_the_next_test_the_defaults_back(tmp_path):
    """What one test changes on the shared sandbox, the next test does not see: two tests run
    in that order in a pytest of their own (without Django settings)."""
    (tmp_path / "test_inner.py").write_text(INNER_TESTS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            "--rootdir",
            str(tmp_path),
            *plugin_args(),
            str(tmp_path / "test_inner.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout


def test_sandbox_and_plugin_import_without_django_settings():
    # The sandbox imports django_paubox.exceptions (SandboxControlError lives there), hence
    # django.core.exceptions; but never settings, so no Django project is needed.
    code = (
        "import sys; import django_paubox.sandbox, django_paubox.sandbox.pytest_plugin, "
        "django_paubox.sandbox.cli; "
        "print(sorted(m for m in ('django.conf', 'django.db', 'django.test') if m in sys.modules))"
    )
    assert run_python(code) == "[]"


# -- command line ----------------------------------------------------------------------------
def _start(
    args: list[str], env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE
) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
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
    assert err.count("POST /v1/cli-user/messages 200") == 1
    assert "cli-secret-key" not in out + err


def test_manage_py_sandbox_logs_each_request_once_beside_a_projects_logging(tmp_path):
    """The example project's LOGGING prints ``django_paubox`` already: the sandbox adds no
    handler of its own, so each request line appears once."""
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        process, lines = _start(
            [
                "example_project/manage.py",
                "paubox_sandbox",
                "--port",
                "0",
                "--api-key",
                "demo-key",
                "--api-username",
                "demo-user",
                "--processing-seconds",
                "0",
            ],
            env={"DJANGO_SETTINGS_MODULE": "example_project.settings"},
            stderr=stderr,
        )
    line = "POST /v1/demo-user/messages 200"
    try:
        ok = http(
            "POST",
            _api_url(lines) + "demo-user/messages",
            json={"data": {"message": message()}},
            headers={"Authorization": "Token token=demo-key"},
            timeout=5,
        )
        assert ok.status_code == 200
        # The request's line is logged after its answer, by its own thread: wait for it.
        deadline = time.monotonic() + 10
        while line not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    err = log.read_text()
    assert (out + err).count(line) == 1, out + err


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
