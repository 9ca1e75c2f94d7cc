"""The demo (``bash example_project/run.sh``) fails fast and says why, and its home page links the
sandbox it really uses.

run.sh's process handling lives in ``example_project/lib.sh`` so that these tests can drive it
with stand-in processes; the port check runs the real run.sh, which stops before installing
anything. Each subprocess is bounded by a timeout, and nothing here measures time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "example_project" / "lib.sh"

pytestmark = [
    pytest.mark.demo,
    pytest.mark.skipif(shutil.which("bash") is None, reason="run.sh is a bash script"),
    pytest.mark.skipif(not LIB.is_file(), reason="no example_project/ (the sdist leaves it out)"),
]


def _bash(script: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with lib.sh sourced; its own process group, killed whole on a timeout."""
    process = subprocess.Popen(
        ["bash", "-c", f"source {LIB}\n{script}"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"still running after {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on (and answers nothing), like a forgotten dev server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("variable", "what"), [("DEMO_PORT", "the dev server"), ("SANDBOX_PORT", "the Paubox sandbox")]
)
def test_run_sh_stops_before_installing_when_a_port_is_taken(taken_port, variable, what):
    ports = {"DEMO_PORT": str(_free_port()), "SANDBOX_PORT": str(_free_port())}
    ports[variable] = str(taken_port)

    result = _bash(f"exec bash {ROOT / 'example_project' / 'run.sh'}", **ports)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"port {taken_port}, for {what}, is already in use" in result.stderr
    assert f"choose another port: {variable}=<port>" in result.stderr
    assert "Installing" not in result.stdout  # stopped before any work


def test_run_sh_refuses_a_port_that_is_not_a_number():
    result = _bash(
        f"exec bash {ROOT / 'example_project' / 'run.sh'}",
        DEMO_PORT="80OO",
        SANDBOX_PORT=str(_free_port()),
    )
    assert result.returncode == 1
    assert "DEMO_PORT=80OO is not a port number" in result.stderr


def test_require_free_port_passes_a_free_port():
    result = _bash(f"require_free_port {_free_port()} 'the dev server' DEMO_PORT && echo free")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "free\n"


def test_waiting_for_readiness_stops_at_once_when_a_child_exits():
    result = _bash(
        """
        sleep 60 & add_child "the long one" $!
        (sleep 0.2; exit 3) & add_child "the short one" $!
        never_ready() { NOT_READY="something"; return 1; }
        status=0
        wait_until_ready 50 never_ready || status=$?
        stop_children 5
        exit "$status"
        """
    )
    assert result.returncode == 1
    assert "error: the short one exited (status 3)." in result.stderr
    assert "not ready after" not in result.stderr
    assert "==> Stopping the long one" in result.stdout


def test_waiting_for_readiness_gives_up_and_says_what_it_waited_for():
    result = _bash(
        """
        sleep 60 & add_child "a child" $!
        never_ready() { NOT_READY="the dev server on 127.0.0.1:1"; return 1; }
        status=0
        wait_until_ready 1 never_ready || status=$?
        stop_children 5
        exit "$status"
        """
    )
    assert result.returncode == 1
    assert "error: not ready after 1 s: waiting for the dev server on 127.0.0.1:1." in (
        result.stderr
    )


def test_ready_when_the_check_passes_with_every_child_running():
    result = _bash(
        """
        sleep 60 & add_child "a child" $!
        calls=0
        ready_second_time() { calls=$((calls + 1)); [ "$calls" -ge 2 ]; }
        wait_until_ready 20 ready_second_time && echo "ready after $calls checks"
        stop_children 5
        """
    )
    assert result.returncode == 0, result.stderr
    assert "ready after 2 checks" in result.stdout


def test_children_stop_in_reverse_start_order_and_a_stubborn_one_is_killed(tmp_path):
    log, started = tmp_path / "stopped", tmp_path / "started"
    result = _bash(
        f"""
        for name in sandbox server worker; do
            bash -c "trap 'echo $name >> {log}; exit 0' TERM; echo >> {started}
                     while :; do sleep 0.1; done" &
            add_child "the $name" $!
        done
        bash -c "trap '' TERM; echo >> {started}; while :; do sleep 0.1; done" &
        add_child "the stubborn one" $!
        until [ "$(wc -l < {started} 2>/dev/null)" = 4 ]; do sleep 0.05; done  # traps are set
        stop_children 1
        for pid in "${{CHILD_PIDS[@]}}"; do echo "left: $pid"; done
        """
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text().split() == ["worker", "server", "sandbox"]
    assert "the stubborn one did not stop within 1 s: killed" in result.stdout
    stops = [line for line in result.stdout.splitlines() if line.startswith("==> Stopping")]
    assert stops == [
        "==> Stopping the stubborn one",
        "==> Stopping the worker",
        "==> Stopping the server",
        "==> Stopping the sandbox",
    ]
    assert "left:" not in result.stdout


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_http_ok_wants_a_200_from_the_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        result = _bash(
            f"""
            http_ok {port} /ok && echo "ok: yes" || echo "ok: no"
            http_ok {port} /missing && echo "missing: yes" || echo "missing: no"
            http_ok {_free_port()} /ok && echo "closed: yes" || echo "closed: no"
            """
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.stdout.split("\n")[:3] == ["ok: yes", "missing: no", "closed: no"]


#: Renders the home page once per API URL (read from the environment at each request), in one
#: process with the example project's settings: one migrate instead of one per case.
_HOME_PAGE = """
import json, os, sys
import django
from django.test.utils import setup_test_environment

django.setup()
setup_test_environment()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

call_command("migrate", verbosity=0)
client = Client()
client.force_login(get_user_model().objects.create_superuser("admin", "a@example.com", "pw"))
pages = {}
for api_url in json.loads(sys.argv[1]):
    os.environ["PAUBOX_API_URL"] = api_url
    pages[api_url] = client.get("/").content.decode()
print(json.dumps(pages))
"""

#: PAUBOX's API URL -> the sandbox link the home page shows (None: no link).
_LINKS = {
    "http://127.0.0.1:18025/v1/": "http://127.0.0.1:18025/",
    "http://localhost:9025/v1/": "http://localhost:9025/",
    "https://api.paubox.net/v1/": None,
}


def test_home_page_links_the_sandbox_the_project_sends_to():
    pytest.importorskip("celery")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PAUBOX_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        EXAMPLE_DB=":memory:",
        CELERY_BROKER_URL="memory://",
        PYTHONPATH=str(ROOT),
    )
    result = subprocess.run(
        [sys.executable, "-c", _HOME_PAGE, json.dumps(list(_LINKS))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    pages = json.loads(result.stdout.splitlines()[-1])
    for api_url, link in _LINKS.items():
        page = pages[api_url]
        assert "Send demo messages" in page
        if link:
            assert f'<a href="{link}">Sandbox inbox</a>' in page, api_url
        else:
            assert "Sandbox inbox" not in page, api_url
        assert "127.0.0.1:8025" not in page  # the port run.sh used to hard-code
