"""6. Memory: the bulk outbox path over 100,000 messages, measured as peak RSS growth.

``outbox.queue_messages`` consumes a generator of EmailMessages 500 at a time through the Celery
backend; each chunk's rows commit, and their ``send_queued`` tasks run in this process (Celery's
eager mode) against the sandbox, in /bulk_messages batches of 50. The process warms up on a
first small run; then its peak RSS (VmHWM, reset just before) is compared with the RSS before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

from celery import Celery
from django.core.mail import EmailMessage
from django.db.models import Count

from django_paubox.models import Message
from django_paubox.outbox import queue_messages

from . import common
from .db import count_queries, empty_paubox_tables
from .report import Result, per_second
from .sandbox import SandboxProcess

KEY = "memory"
TITLE = "6. Memory, bulk outbox"
TARGET_MB = 100.0


def _messages(prefix: str, n: int) -> Iterator[EmailMessage]:
    for index in range(n):
        yield common.email(prefix, index)


class PeakSampler:
    """Samples VmRSS every 20 ms: the fallback where VmHWM cannot be reset."""

    def __init__(self) -> None:
        self.peak = common.proc_status_kib("VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, common.proc_status_kib("VmRSS"))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(quick: bool) -> Result:
    n = 5000 if quick else 100_000
    warm = 1000
    result = Result(KEY, f"{TITLE}, {n:,} messages")
    app = Celery("bench-memory", set_as_current=True)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.task_always_eager = True
    app.set_default()
    empty_paubox_tables()
    with SandboxProcess(latency_ms=0, processing_seconds=3600) as sandbox:
        common.point_at(sandbox)
        queue_messages(_messages("warm", warm))
        empty_paubox_tables()
        before_requests = sandbox.api_requests()
        gc.collect()
        baseline = common.proc_status_kib("VmRSS")
        reset = common.reset_peak_rss()
        timer = common.Timer()
        with (
            PeakSampler() as sampler,
            count_queries() as counted,
            timer.measure(),
            common.profiled("memory"),
        ):
            queued = queue_messages(_messages("mem", n))
        peak_hwm = common.proc_status_kib("VmHWM") if reset else 0
        after = common.proc_status_kib("VmRSS")
        requests = sandbox.api_requests() - before_requests
        states = dict(Message.objects.order_by().values_list("state").annotate(n=Count("id")))
    peak = max(peak_hwm, sampler.peak)
    growth_mb = (peak - baseline) / 1024
    result.row(
        "peak RSS growth",
        f"{growth_mb:,.1f} MB",
        "",
        "",
        f"< {TARGET_MB:.0f} MB",
        growth_mb < TARGET_MB,
    )
    result.row("throughput, queue + send in one process", per_second(n, timer.seconds))
    result.note(
        f"RSS {baseline / 1024:,.1f} MB after a warm-up of {warm:,} messages, peak "
        f"{peak / 1024:,.1f} MB ({'VmHWM reset' if reset else 'sampled every 20 ms'}), "
        f"{after / 1024:,.1f} MB at the end."
    )
    result.note(
        f"{queued:,} queued; rows by state {states}; sandbox requests {dict(requests)}; "
        f"{counted.count:,} database queries ({counted.count / n:.2f} per message); "
        f"{timer.seconds:,.1f} s."
    )
    result.checks = {
        "queued": queued,
        "sent": states.get("sent", 0),
        "bulk_requests": requests["POST bulk_messages"],
        "growth_mb": growth_mb,
    }
    return result
