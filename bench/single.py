"""1. Single sends: messages one at a time through PauboxEmailBackend versus the SDK's loop.

Both sides send the same message to the same sandbox, in alternating rounds so that drift on a
shared machine hits both alike. Ours records every message (a Message and a Delivery row before
the call, the tracking id after it); the SDK records nothing.

Two settings: loopback with no added latency (the physical limit of this machine), and a
modelled network of 20 ms round trips where, as over HTTPS, a new connection costs two more
round trips (TCP and TLS 1.3 handshakes) before its first request. Paubox's SDK opens a new
connection for every call; PauboxClient keeps one alive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.mail import get_connection
from paubox import PauboxApiClient

from django_paubox.client import PauboxClient
from django_paubox.conf import get_settings
from django_paubox.models import Message
from django_paubox.sending.payload import build_message

from . import common
from .db import count_queries, empty_paubox_tables
from .report import Result, per_second, ratio
from .sandbox import API_KEY, Relay, SandboxProcess

KEY = "single"
TITLE = "1. Single sends"
TARGET = 1.5
RTT_MS = 20.0
HANDSHAKE_RTTS = 2


class Sides:
    """Times, queries and message counts per side, over alternating rounds."""

    def __init__(self, sandbox_url: str, paubox: dict[str, str]) -> None:
        self.sdk = PauboxApiClient(API_KEY, sandbox_url)
        self.paubox = paubox
        self.timers: dict[str, common.Timer] = {}
        self.queries: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self._index = 0

    def _next(self) -> int:
        self._index += 1
        return self._index

    def _timed(self, name: str, count: int, work: Callable[[], Any], *, queries: bool) -> None:
        timer = self.timers.setdefault(name, common.Timer())
        with count_queries() as counted, timer.measure():
            work()
        self.counts[name] = self.counts.get(name, 0) + count
        if queries:
            self.queries[name] = self.queries.get(name, 0) + counted.count

    def round(self, n: int, *, client: bool) -> None:
        mails = [common.sdk_mail("sdk", self._next()) for _ in range(n)]
        self._timed("sdk", n, lambda: [self.sdk.send(mail) for mail in mails], queries=False)

        emails = [common.email("reused", self._next()) for _ in range(n)]

        def reused() -> None:
            backend = get_connection()
            backend.open()
            for message in emails:
                backend.send_messages([message])
            backend.close()

        with common.profiled("single-reused"):
            self._timed("reused", n, reused, queries=True)

        singles = [common.email("percall", self._next()) for _ in range(n)]
        # What send_mail() does: a new backend, so a new connection, per call.
        self._timed("per_call", n, lambda: [m.send() for m in singles], queries=True)

        if client:
            conf = get_settings()
            bodies = [build_message(common.email("client", self._next()), conf) for _ in range(n)]
            raw = PauboxClient(conf)
            raw.send_message(build_message(common.email("client", 0), conf))  # connect
            self._timed("client", n, lambda: [raw.send_message(b) for b in bodies], queries=False)
            raw.close()

    def rate(self, name: str) -> float:
        return self.counts[name] / self.timers[name].seconds

    def row(self, result: Result, name: str, label: str, target: bool = True) -> None:
        mine, sdk = self.rate(name), self.rate("sdk")
        result.row(
            label,
            per_second(self.counts[name], self.timers[name].seconds),
            per_second(self.counts["sdk"], self.timers["sdk"].seconds) + " (SDK)",
            ratio(mine, sdk),
            f"≥ {TARGET}×" if target else "",
            (mine / sdk >= TARGET) if target else None,
        )


def _warm(sides: Sides) -> None:
    sides.sdk.send(common.sdk_mail("warm", 0))
    common.email("warm", 1).send()


def run(quick: bool) -> Result:
    n, rounds = (60, 2) if quick else (3000, 6)
    wan_n = 10 if quick else 150
    per_round = n // rounds
    result = Result(KEY, TITLE)
    empty_paubox_tables()
    with SandboxProcess(latency_ms=0) as sandbox:
        control = sandbox.control
        assert control is not None
        common.point_at(sandbox)
        local = Sides(sandbox.base_url, sandbox.paubox_settings())
        _warm(local)
        control.reset()
        empty_paubox_tables()
        for _ in range(rounds):
            local.round(per_round, client=True)
        local_requests = sandbox.api_requests()
        recorded = Message.objects.filter(state=Message.State.SENT).count()

        control.set_latency(RTT_MS / 1000)
        with Relay(sandbox, RTT_MS * HANDSHAKE_RTTS) as relay:
            common.point_at(relay)
            wan = Sides(relay.rewrite(sandbox.base_url), relay.paubox_settings())
            _warm(wan)
            for _ in range(2):
                wan.round(wan_n // 2, client=False)

    total = per_round * rounds
    local.row(result, "reused", f"loopback, 0 ms: {total:,} messages, connection reused")
    local.row(result, "per_call", "loopback: send_mail() style, a new connection per call")
    local.row(result, "client", "loopback: PauboxClient alone, no database (limit)", False)
    wan.row(
        result,
        "reused",
        f"{RTT_MS:.0f} ms round trips, TLS-like connects: {wan.counts['reused']} messages, reused",
    )
    wan.row(result, "per_call", f"{RTT_MS:.0f} ms round trips: send_mail() style")
    result.note(
        f"Loopback: {rounds} alternating rounds of {per_round} messages per side, no added "
        "latency. The SDK pays a new TCP connection per call, which costs next to nothing on "
        "loopback; ours pays for recording the message (4 queries in 2 transactions)."
    )
    result.note(
        f"Modelled network: the sandbox answers after {RTT_MS:.0f} ms and a relay "
        f"(bench/netem.py, own process) holds each new connection for {HANDSHAKE_RTTS} round "
        f"trips ({RTT_MS * HANDSHAKE_RTTS:.0f} ms: TCP + TLS 1.3 handshakes), both sides alike."
    )
    result.note(
        "Database queries per message: "
        + ", ".join(
            f"{local.queries[name] / local.counts[name]:.1f} ({label})"
            for name, label in (("reused", "connection reused"), ("per_call", "send_mail style"))
        )
        + "; the SDK records nothing."
    )
    expected = 4 * total + rounds  # + one connecting call of the bare client per round
    result.note(
        f"Loopback: sandbox received {local_requests['POST messages']:,} POST /messages "
        f"(expected {expected:,}); rows recorded as sent: {recorded:,} (expected {2 * total:,})."
    )
    result.checks = {
        "messages": total,
        "post_messages": local_requests["POST messages"],
        "rows_sent": recorded,
    }
    return result
