"""4. Webhooks: gunicorn + PostgreSQL under load from wrk in another process.

Paubox-shaped events for messages the app knows, a tenth of them duplicates (the thread's latest
event, often still in flight on another connection: the race the unique key must win). After the
load, every distinct event must be stored exactly once: events whose request was cut off when wrk
stopped (at most one per connection) are replayed, and then the count must be exact.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from typing import Any

from django.utils import timezone

from django_paubox.models import WebhookEvent

from . import common, loaders
from .db import empty_paubox_tables
from .report import Result

KEY = "webhooks"
TITLE = "4. Webhooks (gunicorn + PostgreSQL, wrk)"
TARGET_RATE = 500.0
TARGET_P99_MS = 50.0
SECRET = "bench-webhook-secret-0123456789"
WORKERS = int(os.environ.get("BENCH_GUNICORN_WORKERS", "3"))
CONNECTIONS = int(os.environ.get("BENCH_WRK_CONNECTIONS", "3"))
THREADS = 1
LUA = common.ROOT / "bench" / "webhook_load.lua"
#: ``payload.id`` of the first measured event; the warm-up's ids start at WARM_ID.
BASE_ID = 1_000_000
WARM_ID = 900_000_000
NAMES = ("api_mail_log_delivered", "api_mail_log_opened")
_BENCH_LINE = re.compile(r"^BENCH (\{.*\})$", re.MULTILINE)
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")


def tracking_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def event_body(g: int, first: int, messages: int) -> bytes:
    """The body webhook_load.lua sends for global event ``g`` (same fields, same key)."""
    m = first + g % messages
    round_ = g // messages
    body = {
        "event_name": NAMES[round_ % 2],
        "payload": {
            "id": BASE_ID + g,
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


def _load(messages: int) -> None:
    now = timezone.now()

    def message(index: int) -> dict[str, Any]:
        return {
            "tracking_id": tracking_id(index),
            "state": "sent",
            "status": "sent",
            "subject": "Appointment reminder",
            "from_email": "reminders@clinic.example",
            "sender_domain": "clinic.example",
            "recipient_count": 1,
            "created_at": now - timedelta(minutes=5),
            "sent_at": now - timedelta(minutes=5),
            "attempts": 1,
        }

    def deliveries(index: int) -> list[dict[str, Any]]:
        return [
            {
                "recipient": f"patient{index}@example.com",
                "kind": "to",
                "status": "sent",
                "updated_at": now,
            }
        ]

    loaders.load(0, messages, message=message, deliveries=deliveries)


def _gunicorn(port: int, log: Any) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BENCH_PAUBOX": json.dumps({"WEBHOOK_SECRET": SECRET}),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        os.environ.get("BENCH_GUNICORN_APP", "bench.wsgi:application"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "sync",
        "--backlog",
        "2048",
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(
        command,
        cwd=common.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=common.die_with_parent,
    )


def _wrk(
    url: str, seconds: float, first: int, messages: int, base: int = BASE_ID
) -> tuple[float, dict[str, Any]]:
    command = [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        url,
        "--",
        str(first),
        str(messages),
        str(THREADS),
        str(base),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    found = _BENCH_LINE.search(out.stdout)
    rate = _RATE.search(out.stdout)
    if not found or not rate:
        raise RuntimeError(f"unexpected wrk output:\n{out.stdout}\n{out.stderr}")
    return float(rate.group(1)), json.loads(found.group(1))


def _py_spy(pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """With ``--profile``: sample gunicorn's workers while wrk runs (collapsed stacks)."""
    if os.environ.get("BENCH_PROFILE") != "1":
        return None
    spy = shutil.which("py-spy") or str(common.ROOT / ".venv" / "bin" / "py-spy")
    out = common.results_dir() / "profile-webhooks.collapsed"
    command = [spy, "record", "--pid", str(pid), "--subprocesses", "--format", "raw"]
    command += ["--rate", "250", "--duration", str(round(seconds)), "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(  # loopback URL built here
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return int(response.status)


def _stored_ids() -> Counter[int]:
    """``payload.id`` of every stored event of the measured run (not the warm-up's)."""
    ids = WebhookEvent.objects.values_list("payload__payload__id", flat=True)
    return Counter(int(i) for i in ids if int(i) < WARM_ID)


def run(quick: bool) -> Result:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    duration = 4.0 if quick else 20.0
    messages = 2000 if quick else 30000
    warm_first, warm_count = messages, 1000
    result = Result(KEY, TITLE)
    empty_paubox_tables()
    _load(messages + warm_count)
    port = common.free_port()
    url = f"http://127.0.0.1:{port}/paubox/webhook/{SECRET}/"
    log_path = common.results_dir() / "gunicorn.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        server = _gunicorn(port, log)
        try:
            common.wait_for_port(port)
            # Warm up workers and their database connections, on events of other messages.
            _wrk(url, 2.0, warm_first, warm_count, WARM_ID)
            time.sleep(1.0)
            spy = _py_spy(server.pid, duration)
            workers = common.children(server.pid)
            pg = common.postgres_pids()
            cpu_before = (common.cpu_seconds(workers), common.cpu_seconds(pg))
            wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            rate, stats = _wrk(url, duration, 0, messages)
            wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = {
                "django": common.cpu_seconds(workers) - cpu_before[0],
                "postgres": common.cpu_seconds(pg) - cpu_before[1],
                "wrk": (wrk_after.ru_utime + wrk_after.ru_stime)
                - (wrk_before.ru_utime + wrk_before.ru_stime),
            }
            if spy is not None:
                spy.wait(timeout=60)
            time.sleep(1.0)  # let requests cut off at the end finish, if they will
            stored = _stored_ids()
            expected = {
                BASE_ID + t["tid"] + THREADS * j
                for t in stats["threads"]
                for j in range(t["distinct"])
            }
            in_flight = sum(t["generated"] - t["responses"] for t in stats["threads"])
            non200 = sum(t["non200"] for t in stats["threads"])
            twice = sorted(i for i, n in stored.items() if n > 1)
            unexpected = sorted(set(stored) - expected)
            missing = sorted(expected - set(stored))
            replay_errors = 0
            for event_id in missing:
                try:
                    _post(url, event_body(event_id - BASE_ID, 0, messages))
                except OSError:  # urllib's HTTPError included
                    replay_errors += 1
            after = _stored_ids()
            exact = set(after) == expected and all(n == 1 for n in after.values())
            exact = exact and not replay_errors
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    requests = stats["requests"]
    duplicates = requests - len(expected) if requests >= len(expected) else 0
    p99_ms = stats["p99_us"] / 1000
    distinct_rate = len(expected) / (stats["duration_us"] / 1e6)
    result.row(
        "events/s (requests, duplicates included)",
        f"{rate:,.0f}/s",
        "",
        "",
        f"≥ {TARGET_RATE:.0f}/s on 2 cores",
        rate >= TARGET_RATE,
    )
    result.row(
        "p99 latency",
        f"{p99_ms:.1f} ms",
        "",
        "",
        f"< {TARGET_P99_MS:.0f} ms",
        p99_ms < TARGET_P99_MS,
    )
    result.row(
        "stored rows per distinct event",
        "exactly 1" if exact and not twice and not unexpected else "**wrong**",
        "",
        "",
        "exactly 1",
        exact and not twice and not unexpected and non200 == 0,
    )
    per_request = {name: value / requests * 1000 for name, value in cpu.items()}
    server_ms = per_request["django"] + per_request["postgres"]
    result.row(
        "CPU per event: Django workers + PostgreSQL",
        f"{server_ms:.2f} ms",
        "",
        "",
        "≤ 4 ms (derived: 500/s on 2 CPUs)",
        server_ms <= 4.0,
    )
    result.note(
        "CPU per request: "
        + ", ".join(f"{name} {ms:.2f} ms" for name, ms in per_request.items())
        + f" (total {sum(per_request.values()):.2f} ms; 2 CPUs allow "
        f"{2000 / sum(per_request.values()):,.0f} requests/s at best)."
    )
    result.note(
        f"gunicorn {WORKERS} sync workers; wrk {THREADS} thread, {CONNECTIONS} connections, "
        f"{duration:.0f} s, all on the same 2 CPUs as PostgreSQL; CONN_MAX_AGE=600."
    )
    result.note(
        f"{requests:,} requests: {len(expected):,} distinct events ({distinct_rate:,.0f}/s) "
        f"and ~{duplicates:,} duplicates; latency p50 {stats['p50_us'] / 1000:.1f} ms, "
        f"p90 {stats['p90_us'] / 1000:.1f} ms, p99 {p99_ms:.1f} ms, "
        f"max {stats['max_us'] / 1000:.1f} ms; non-200 answers: {non200}; socket errors: "
        f"connect {stats['connect_errors']}, read {stats['read_errors']}, "
        f"timeout {stats['timeouts']}."
    )
    result.note(
        f"Stored after the load: {sum(stored.values()):,} rows for {len(expected):,} distinct "
        f"events; stored twice: {len(twice)}; unknown: {len(unexpected)}; cut off by wrk's stop "
        f"and replayed: {len(missing)} (requests in flight at the stop: {in_flight}). After "
        f"the replay every distinct event has exactly one row: {'yes' if exact else 'NO'}."
    )
    result.checks = {
        "distinct": len(expected),
        "stored_twice": len(twice),
        "unexpected": len(unexpected),
        "missing_replayed": len(missing),
        "exact": exact,
        "non200": non200,
    }
    return result
