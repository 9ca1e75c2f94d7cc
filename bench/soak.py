"""7. Fault drill soak: 10,000 messages through the Celery outbox while the sandbox misbehaves.

A real ``celery worker`` (2 processes) on Redis (database 14, a queue of its own) sends the
outbox; the sandbox answers 5 % of API calls with a 5xx, holds 1 % past the client's read
timeout (having captured the messages: the ambiguous case) and drops 1 % of connections (having
captured nothing). Every message must end sent, or failed with a reason; none may arrive twice
(a 5xx is unambiguous and is retried; an ambiguous failure is not resent by default) and none
may be lost.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator

from celery import Celery
from django.core.mail import EmailMessage
from django.db.models import Count

from django_paubox.backends import PauboxCeleryEmailBackend
from django_paubox.models import Message
from django_paubox.outbox import queue_messages

from . import common
from .db import empty_paubox_tables
from .report import Result, per_second
from .sandbox import SandboxProcess

KEY = "soak"
TITLE = "7. Fault drill soak (Celery worker, Redis)"
BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
RATES = {"error": 0.05, "timeout": 0.01, "drop": 0.01}
WORKER_PAUBOX = {"TIMEOUT": [2, 5], "OUTBOX_RETRY_DELAY": 0.5, "OUTBOX_RETRY_DELAY_MAX": 4}
HOLD_SECONDS = 8  # longer than the read timeout above


def _messages(n: int) -> Iterator[EmailMessage]:
    for index in range(n):
        yield common.email("soak", index)


class Worker:
    def __init__(self, sandbox: SandboxProcess, queue: str) -> None:
        self.name = f"bench-{uuid.uuid4().hex[:6]}@soak"
        self.queue = queue
        self.env = {
            **os.environ,
            **sandbox.env(),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_PAUBOX": json.dumps(WORKER_PAUBOX),
            "CELERY_BROKER_URL": BROKER,
            "CELERY_TASK_DEFAULT_QUEUE": queue,
        }
        self.log = common.results_dir() / "celery-soak.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, app: Celery) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker"]
        command += ["-l", "WARNING", "-c", "2", "-Q", self.queue, "-n", self.name]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.process = subprocess.Popen(
            command,
            cwd=common.ROOT,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=common.die_with_parent,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log.read_text()[-2000:]}")
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        raise RuntimeError("the worker did not start")

    @property
    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid, *common.children(self.process.pid)]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _settle(deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not Message.objects.filter(state__in=["queued", "sending"]).exists():
            return True
        time.sleep(0.5)
    return False


def _reason(error: str) -> str:
    """An error text without the parts that vary per message (ids, numbers)."""
    return re.sub(r"\d+(\.\d+)?", "N", error).rstrip(". ")[:160] or "(no reason)"


def run(quick: bool) -> Result:
    n = 500 if quick else 10_000
    result = Result(KEY, f"{TITLE}, {n:,} messages")
    empty_paubox_tables()
    queue = f"bench-soak-{uuid.uuid4().hex[:8]}"
    app = Celery("bench-soak", broker=BROKER, set_as_current=True)
    app.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
    app.set_default()
    faults = [
        "--error-rate", str(RATES["error"]),
        "--timeout-rate", str(RATES["timeout"]),
        "--drop-rate", str(RATES["drop"]),
        "--seed", "7",
        "--timeout-hold-seconds", str(HOLD_SECONDS),
    ]  # fmt: skip
    with SandboxProcess(latency_ms=0, processing_seconds=3600, extra_args=faults) as sandbox:
        common.point_at(sandbox)
        worker = Worker(sandbox, queue)
        worker.start(app)
        try:
            timer = common.Timer()
            with timer.measure():
                queued = queue_messages(_messages(n), connection=PauboxCeleryEmailBackend())
                settled = _settle(time.monotonic() + (90 if quick else 420))
        finally:
            worker.stop()
            with app.connection_for_write() as conn:
                app.control.purge(connection=conn)
        control = sandbox.control
        assert control is not None
        captured = [m for m in control.messages if m.recipients[0].startswith("soak")]
        requests = sandbox.api_requests()

    arrivals = Counter(m.recipients[0] for m in captured)
    tracking_ids = {m.tracking_id for m in captured}
    rows = list(
        Message.objects.values_list("state", "error", "tracking_id", "deliveries__recipient")
    )
    states = Counter(state for state, _, _, _ in rows)
    sent_rows = [r for r in rows if r[0] == "sent"]
    failed_rows = [r for r in rows if r[0] == "failed"]
    reasons = Counter(_reason(error) for _, error, _, _ in failed_rows)
    duplicates = sum(count - 1 for count in arrivals.values() if count > 1)
    unsettled = states.get("queued", 0) + states.get("sending", 0)
    sent_not_arrived = sum(1 for _, _, tid, _ in sent_rows if tid not in tracking_ids)
    failed_without_reason = sum(1 for _, error, _, _ in failed_rows if not error.strip())
    lost = unsettled + sent_not_arrived + failed_without_reason
    failed_but_arrived = sum(1 for _, _, _, rcpt in failed_rows if arrivals.get(rcpt))
    batches = -(-n // 50)
    attempts = dict(Message.objects.order_by().values_list("attempts").annotate(n=Count("id")))

    # Correctness, not speed: the baseline is the run's own input and the sandbox's record.
    accounted = states.get("sent", 0) - sent_not_arrived + len(failed_rows) - failed_without_reason
    result.row(
        "accounted for (sent and seen by the sandbox, or failed with a reason) per queued",
        f"{accounted:,}",
        f"{queued:,} queued",
        f"{accounted / queued:.3f}×" if queued else "n/a",
        "1× (nothing lost)",
        lost == 0 and accounted == queued,
    )
    arrived = sum(arrivals.values())
    result.row(
        "arrivals at the sandbox per distinct message",
        f"{arrived:,}",
        f"{len(arrivals):,} distinct",
        f"{arrived / len(arrivals):.3f}×" if arrivals else "n/a",
        "1× (none twice)",
        duplicates == 0,
    )
    result.row(
        "sent, per queued (the rest failed with a reason)",
        f"{states.get('sent', 0):,}",
        f"{queued:,} queued",
        f"{states.get('sent', 0) / queued:.3f}×" if queued else "n/a",
    )
    result.note(
        f"Sandbox faults: {RATES['error']:.0%} 5xx, {RATES['timeout']:.0%} held past the "
        f"5 s read timeout, {RATES['drop']:.0%} dropped connections (seed 7); worker: 2 "
        f"processes, TIMEOUT (2, 5), OUTBOX_RETRY_DELAY 0.5 s; RESEND_AMBIGUOUS off."
    )
    result.note(
        f"{queued:,} queued, settled in {timer.seconds:,.1f} s "
        f"({per_second(n, timer.seconds)}){'' if settled else ' (NOT settled: deadline)'}; "
        f"rows by state {dict(states)}; attempts per row {attempts}."
    )
    result.note(
        f"API requests: {dict(requests)} for {batches} batches (the surplus are retries "
        "after 5xx answers)."
    )
    result.note(
        "Failure reasons: "
        + ("; ".join(f"{count:,} × {reason}" for reason, count in reasons.most_common()) or "none")
        + "."
    )
    result.note(
        f"Of the failed, {failed_but_arrived:,} did reach the sandbox: held answers (timeouts) "
        "are ambiguous, so they are failed, not resent (at most once; RESEND_AMBIGUOUS "
        "turns this into at least once). Lost counts rows left queued/sending "
        f"({unsettled}), sent rows the sandbox never saw ({sent_not_arrived}) and failures "
        f"without a reason ({failed_without_reason})."
    )
    result.checks = {
        "messages": n,
        "queued": queued,
        "sent": states.get("sent", 0),
        "failed": len(failed_rows),
        "duplicates": duplicates,
        "lost": lost,
        "settled": settled,
    }
    return result
