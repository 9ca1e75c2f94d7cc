"""3. Receipts: refreshing 1,000 pending messages at 50 ms per call, versus sequential polling.

Both sides ask about the same 1,000 tracking ids. Ours is ``polling.poll_receipts`` (bounded
thread pool, receipts applied to the rows in batches); the baseline is the SDK's ``get`` in a
loop, which applies nothing. The limit is the concurrency: 1,000 / 16 round trips; it is also
measured in the same run (bench/wire.py): 16 threads, each with one kept-alive connection, GET
the same receipts and parse nothing.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.mail import send_mass_mail
from paubox import PauboxApiClient

from django_paubox.client import PauboxClient
from django_paubox.conf import get_settings
from django_paubox.models import Delivery, Message
from django_paubox.tracking import polling as receipts

from . import common
from .db import count_queries, empty_paubox_tables
from .report import Result, ratio, seconds
from .sandbox import API_KEY, SandboxProcess
from .wire import Wire

KEY = "receipts"
TITLE = "3. Receipts refresh"
TARGET = 10.0
LATENCY_MS = 50.0
SMALL_CONCURRENCY = 4


class InFlight:
    """Wraps a real PauboxClient and records how many receipt requests overlap at most."""

    def __init__(self, client: PauboxClient) -> None:
        self.client = client
        self.current = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def get_receipt(self, tracking_id: str) -> dict[str, Any]:
        with self._lock:
            self.current += 1
            self.calls += 1
            self.peak = max(self.peak, self.current)
        try:
            return self.client.get_receipt(tracking_id)
        finally:
            with self._lock:
                self.current -= 1


def _limit(base_url: str, tracking_ids: list[str], concurrency: int) -> float:
    """Seconds for ``concurrency`` kept-alive connections to GET every receipt once."""
    chunks = [tracking_ids[i::concurrency] for i in range(concurrency)]
    wires = [Wire(base_url, f"Token token={API_KEY}") for _ in chunks]
    for wire, chunk in zip(wires, chunks, strict=True):
        wire.get(f"message_receipt?sourceTrackingId={chunk[0]}")  # connect outside the clock

    def fetch(pair: tuple[Wire, list[str]]) -> None:
        wire, chunk = pair
        for tracking_id in chunk:
            wire.get(f"message_receipt?sourceTrackingId={tracking_id}")

    timer = common.Timer()
    with ThreadPoolExecutor(concurrency) as pool, timer.measure():
        list(pool.map(fetch, zip(wires, chunks, strict=True)))
    for wire in wires:
        wire.close()
    return timer.seconds


def run(quick: bool) -> Result:
    n = 100 if quick else 1000
    result = Result(KEY, f"{TITLE}, {n:,} pending at {LATENCY_MS:.0f} ms")
    empty_paubox_tables()
    # Receipts stay "processing" for the whole run: every message stays pending.
    with SandboxProcess(latency_ms=0, processing_seconds=3600) as sandbox:
        common.point_at(sandbox)
        control = sandbox.control
        assert control is not None
        send_mass_mail(
            [
                (common.SUBJECT, common.TEXT, common.SENDER, [common.recipient("rcpt", i)])
                for i in range(n)
            ],
        )
        tracking_ids = [
            str(t)
            for t in Message.objects.filter(state=Message.State.SENT).values_list(
                "tracking_id", flat=True
            )
        ]
        assert len(tracking_ids) == n, len(tracking_ids)
        conf = get_settings()
        concurrency = conf.receipt_concurrency
        sdk = PauboxApiClient(API_KEY, sandbox.base_url)
        sdk.get(tracking_ids[0])  # warm up
        # No reset from here on: it would forget the messages. Count requests by difference.
        control.set_latency(LATENCY_MS / 1000)
        before = sandbox.api_requests()

        client = InFlight(PauboxClient(conf))
        ours = common.Timer()
        with count_queries() as counted, common.profiled("receipts"), ours.measure():
            summary = receipts.poll_receipts(
                Message.objects.filter(tracking_id__in=tracking_ids), conf=conf, client=client
            )
        client.client.close()
        ours_requests = sandbox.api_requests() - before
        processing = Delivery.objects.filter(status="processing").count()

        # The bound follows the setting: the same refresh with RECEIPT_CONCURRENCY = 4.
        small_conf = get_settings(receipt_concurrency=SMALL_CONCURRENCY)
        small = InFlight(PauboxClient(small_conf))
        small_timer = common.Timer()
        with small_timer.measure():
            receipts.poll_receipts(
                Message.objects.filter(tracking_id__in=tracking_ids),
                conf=small_conf,
                client=small,
            )
        small.client.close()
        before = sandbox.api_requests()

        baseline = common.Timer()
        with baseline.measure():
            for tracking_id in tracking_ids:
                sdk.get(tracking_id).to_dict  # noqa: B018 (parse it, as a caller would)
        sdk_requests = sandbox.api_requests() - before
        limit_seconds = _limit(sandbox.base_url, tracking_ids, concurrency)

    speedup = baseline.seconds / ours.seconds
    ideal = math.ceil(n / concurrency) * LATENCY_MS / 1000
    limit = n * LATENCY_MS / 1000 / ideal
    result.row(
        "speed: the SDK loop's wall time / ours",
        seconds(ours.seconds),
        seconds(baseline.seconds) + " (SDK get loop)",
        ratio(baseline.seconds, ours.seconds),
        f"≥ {TARGET:.0f}× (limit {limit:.0f}×)",
        speedup >= TARGET,
    )
    of_limit = limit_seconds / ours.seconds
    result.row(
        f"speed against the limit ({concurrency} connections): its wall time / ours",
        seconds(ours.seconds),
        seconds(limit_seconds) + " (limit: bench/wire.py)",
        f"{of_limit:.2f}×",
        f"≥ {TARGET / limit:.2f}× (= {TARGET:.0f}× / {limit:.0f}×)",
        of_limit >= TARGET / limit,
    )
    for peak, bound in ((client.peak, concurrency), (small.peak, SMALL_CONCURRENCY)):
        result.row(
            f"requests in flight at most, RECEIPT_CONCURRENCY={bound}",
            f"{peak}",
            f"{bound} (the setting)",
            f"{peak / bound:.2f}×",
            "≤ 1× (the bound holds)",
            peak <= bound,
        )
    result.note(
        f"Time floor at RECEIPT_CONCURRENCY={concurrency}: ⌈{n}/{concurrency}⌉ × "
        f"{LATENCY_MS:.0f} ms = {seconds(ideal)}; the measured limit took "
        f"{seconds(limit_seconds)}; the SDK's loop asks one at a time."
    )
    result.note(
        f"Summary: {summary.as_dict()}; {processing:,} deliveries now 'processing'; "
        f"{counted.count:,} database queries ({counted.count / n:.2f} per message)."
    )
    result.note(
        f"GET /message_receipt: ours {ours_requests['GET message_receipt']:,}, "
        f"SDK {sdk_requests['GET message_receipt']:,}."
    )
    small_floor = math.ceil(n / SMALL_CONCURRENCY) * LATENCY_MS / 1000
    result.note(
        f"With RECEIPT_CONCURRENCY={SMALL_CONCURRENCY} the same refresh took "
        f"{seconds(small_timer.seconds)} (floor {seconds(small_floor)})."
    )
    result.checks = {
        "messages": n,
        "checked": summary.checked,
        "errors": summary.errors,
        "receipt_requests": ours_requests["GET message_receipt"],
        "peak_in_flight": client.peak,
        "peak_in_flight_small": small.peak,
        "small_concurrency": SMALL_CONCURRENCY,
        "concurrency": concurrency,
        "queries": counted.count,
        "processing": processing,
    }
    return result
