"""6. Memory: the bulk outbox path over 100,000 messages, measured as peak RSS growth.

``outbox.queue_messages`` consumes a generator of EmailMessages 500 at a time through the Celery
backend; each chunk's rows commit, and their ``send_queued`` tasks run in this process (Celery's
eager mode) against the sandbox, in /bulk_messages batches of 50. The process warms up on a
first small run; then its peak RSS (VmHWM, reset just before) is compared with the RSS before.

Two baselines from the same run and process: the same path over a tenth of the messages (memory
that does not grow with the messages gives a ratio near 1×; growth in proportion, 10×), and
what merely holding the n EmailMessages in a list costs (what a send that is not streamed
would hold at least).
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
#: Growth at n over growth at n/10: 1 for constant memory, 10 for memory in proportion.
TARGET_SCALING = 2.0
#: Growth over what holding the n messages in a list costs.
TARGET_HELD = 0.1


def _messages(prefix: str, n: int) -> Iterator[EmailMessage]:
    """Reminders with a body of their own each, as real ones are (a shared string would make
    holding them look free)."""
    for index in range(n):
        message = common.email(prefix, index)
        message.body = f"{common.TEXT}\n\nReference {prefix}-{index:08d}"
        yield message


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


class Growth:
    """Peak RSS growth (MiB) of a block: VmHWM reset before it, else sampled every 20 ms."""

    def __init__(self) -> None:
        self.mb = 0.0
        self.peak_kib = 0
        self.baseline_kib = 0
        self.hwm = False

    def __enter__(self) -> Growth:
        gc.collect()
        self.baseline_kib = common.proc_status_kib("VmRSS")
        self.hwm = common.reset_peak_rss()
        self._sampler = PeakSampler().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.__exit__(*exc)
        peak_hwm = common.proc_status_kib("VmHWM") if self.hwm else 0
        self.peak_kib = max(peak_hwm, self._sampler.peak)
        self.mb = (self.peak_kib - self.baseline_kib) / 1024


def run(quick: bool) -> Result:
    n = 5000 if quick else 100_000
    small = n // 10
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
        with Growth() as at_small:
            queue_messages(_messages("tenth", small))
        empty_paubox_tables()
        before_requests = sandbox.api_requests()
        timer = common.Timer()
        with (
            Growth() as grown,
            count_queries() as counted,
            timer.measure(),
            common.profiled("memory"),
        ):
            queued = queue_messages(_messages("mem", n))
        after = common.proc_status_kib("VmRSS")
        requests = sandbox.api_requests() - before_requests
        states = dict(Message.objects.order_by().values_list("state").annotate(n=Count("id")))
    with Growth() as held:
        messages = list(_messages("held", n))
    del messages

    scaling = grown.mb / at_small.mb if at_small.mb > 0 else float("inf")
    result.row(
        f"peak RSS growth at {n:,}, as a ratio of at {small:,}",
        f"{grown.mb:,.1f} MB",
        f"{at_small.mb:,.1f} MB at {small:,}",
        f"{scaling:.2f}×",
        f"≤ {TARGET_SCALING:.0f}× (in proportion: 10×)",
        scaling <= TARGET_SCALING,
    )
    of_held = grown.mb / held.mb
    result.row(
        f"peak RSS growth, as a ratio of holding {n:,} EmailMessages",
        f"{grown.mb:,.1f} MB",
        f"{held.mb:,.1f} MB (a list of them)",
        f"{of_held:.3f}×",
        f"≤ {TARGET_HELD}×",
        of_held <= TARGET_HELD,
    )
    result.note(
        f"RSS {grown.baseline_kib / 1024:,.1f} MB after a warm-up of {warm:,} messages and the "
        f"run over {small:,}, peak {grown.peak_kib / 1024:,.1f} MB "
        f"({'VmHWM reset' if grown.hwm else 'sampled every 20 ms'}), "
        f"{after / 1024:,.1f} MB at the end."
    )
    result.note(
        f"{queued:,} queued and sent in {timer.seconds:,.1f} s ({per_second(n, timer.seconds)}, "
        f"queue + send in one process); rows by state {states}; sandbox requests "
        f"{dict(requests)}; {counted.count:,} database queries ({counted.count / n:.2f} per "
        "message)."
    )
    result.checks = {
        "queued": queued,
        "sent": states.get("sent", 0),
        "bulk_requests": requests["POST bulk_messages"],
        "growth_mb": grown.mb,
        "growth_small_mb": at_small.mb,
        "held_mb": held.mb,
    }
    return result
