"""The webhook benchmark's machinery: events, gunicorn, wrk and py-spy, each in its own process.

Event ``g`` of a phase is for message ``first + g % messages``; its ``payload.id`` is
``base + g``; its name is ``api_mail_log_delivered`` on the first pass over the messages and
``api_mail_log_opened`` on the next. bench/webhook_load.lua builds the same bodies: keep both
in step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import IO, Any

from . import common

SECRET = "bench-webhook-secret-0123456789"
WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "4"))
CONNECTIONS = int(os.environ.get("BENCH_WRK_CONNECTIONS", "16"))
THREADS = 1
LUA = common.ROOT / "bench" / "webhook_load.lua"
NAMES = ("api_mail_log_delivered", "api_mail_log_opened")
#: The URL path of each side: the app's webhook and the floor view (bench/floor.py).
PATHS = {
    "webhook": f"/paubox/webhook/{SECRET}/",
    "floor": f"/bench/floor/webhook/{SECRET}/",
}
_BENCH_LINE = re.compile(r"^BENCH (\{.*\})$", re.MULTILINE)
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")


def tracking_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def event_body(g: int, first: int, messages: int, base: int = 1_000_000) -> bytes:
    """The body webhook_load.lua sends for event ``g`` of a phase (same fields, same key)."""
    m = first + g % messages
    round_ = g // messages
    body = {
        "event_name": NAMES[round_ % 2],
        "payload": {
            "id": base + g,
            "subject": "Appointment reminder",
            "header_message_id": f"<{g}@clinic.example>",
            "source_tracking_id": tracking_id(m),
            "outbound_queue_id": f"Q{g:012d}",
            "time": f"2024-04-18T20:{round_ % 60:02d}:{g % 60:02d}.379Z",
            "from": "reminders@clinic.example",
            "to": f"patient{m}@example.com",
            "custom_headers": {},
        },
    }
    return json.dumps(body).encode()


@dataclass
class Load:
    """What one wrk run reported."""

    rate: float
    stats: dict[str, Any]

    @property
    def requests(self) -> int:
        return int(self.stats["requests"])

    @property
    def seconds(self) -> float:
        return float(self.stats["duration_us"]) / 1e6

    def ms(self, name: str) -> float:
        return float(self.stats[f"{name}_us"]) / 1000

    def distinct_ids(self, base: int) -> set[int]:
        """``payload.id`` of every distinct event wrk sent (duplicates repeat one of them)."""
        return {
            base + t["tid"] + THREADS * j
            for t in self.stats["threads"]
            for j in range(t["distinct"])
        }

    def total(self, name: str) -> int:
        return sum(int(t[name]) for t in self.stats["threads"])


def gunicorn(port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BENCH_PAUBOX": json.dumps({"WEBHOOK_SECRET": SECRET}),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
    }
    command = [sys.executable, "-m", "gunicorn", "bench.wsgi:application"]
    command += ["--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)]
    command += ["--worker-class", "sync", "--backlog", "2048", "--log-level", "warning"]
    return subprocess.Popen(
        command,
        cwd=common.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=common.die_with_parent,
    )


def wrk(url: str, seconds: float, first: int, messages: int, base: int) -> Load:
    command = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s"]
    command += ["--timeout", "5s", "-s", str(LUA), url, "--"]
    command += [str(first), str(messages), str(THREADS), str(base)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    found = _BENCH_LINE.search(out.stdout)
    rate = _RATE.search(out.stdout)
    if not found or not rate:
        raise RuntimeError(f"unexpected wrk output:\n{out.stdout}\n{out.stderr}")
    return Load(float(rate.group(1)), json.loads(found.group(1)))


def py_spy(pid: int, seconds: float, name: str) -> subprocess.Popen[bytes] | None:
    """With ``--profile``: sample gunicorn's workers while wrk runs (collapsed stacks)."""
    if os.environ.get("BENCH_PROFILE") != "1":
        return None
    spy = shutil.which("py-spy") or str(common.ROOT / ".venv" / "bin" / "py-spy")
    out = common.results_dir() / f"profile-{name}.collapsed"
    command = [spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw"]
    command += ["--rate", "250", "--duration", str(round(seconds)), "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(  # loopback URL built by the benchmark
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return int(response.status)
