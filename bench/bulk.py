"""2. Bulk: ``send_mass_mail`` of 1,000 messages with 50 ms per API call, versus the SDK loop.

The physical limit is the number of round trips: 20 bulk requests of 50 instead of 1,000 single
ones, so 50×. Also counts the HTTP requests and database queries the 1,000 messages cost.
"""

from __future__ import annotations

import math

from django.core.mail import get_connection, send_mass_mail
from paubox import PauboxApiClient

from django_paubox.models import Message

from . import common
from .db import count_queries, empty_paubox_tables
from .report import Result, ratio, seconds
from .sandbox import API_KEY, SandboxProcess

KEY = "bulk"
TITLE = "2. Bulk send_mass_mail"
TARGET = 40.0
LATENCY_MS = 50.0
BATCH = 50


def run(quick: bool) -> Result:
    n = 100 if quick else 1000
    result = Result(KEY, f"{TITLE}, {n:,} messages at {LATENCY_MS:.0f} ms")
    empty_paubox_tables()
    with SandboxProcess(latency_ms=LATENCY_MS) as sandbox:
        common.point_at(sandbox)
        control = sandbox.control
        assert control is not None
        # Warm up both sides (imports, connections, Django's caches) outside the measurement.
        send_mass_mail(
            [
                (common.SUBJECT, common.TEXT, common.SENDER, [common.recipient("warm", i)])
                for i in range(3)
            ]
        )
        sdk = PauboxApiClient(API_KEY, sandbox.base_url)
        sdk.send(common.sdk_mail("warm", 9, html=False))
        empty_paubox_tables()
        control.reset()
        control.set_latency(LATENCY_MS / 1000)

        datatuple = [
            (common.SUBJECT, common.TEXT, common.SENDER, [common.recipient("bulk", i)])
            for i in range(n)
        ]
        ours = common.Timer()
        with count_queries() as counted, common.profiled("bulk"), ours.measure():
            sent = send_mass_mail(datatuple, connection=get_connection())
        ours_requests = sandbox.api_requests()
        ours_captured = len(control.messages)
        rows_sent = Message.objects.filter(state=Message.State.SENT).count()
        control.reset()
        control.set_latency(LATENCY_MS / 1000)

        mails = [common.sdk_mail("sdk", i, html=False) for i in range(n)]
        baseline = common.Timer()
        with baseline.measure():
            for mail in mails:
                sdk.send(mail)
        sdk_requests = sandbox.api_requests()

    speedup = baseline.seconds / ours.seconds
    batches = math.ceil(n / BATCH)
    limit = n / batches
    ideal = batches * LATENCY_MS / 1000
    result.row(
        "wall time",
        seconds(ours.seconds),
        seconds(baseline.seconds) + " (SDK loop)",
        ratio(baseline.seconds, ours.seconds),
        f"≥ {TARGET:.0f}× (limit {limit:.0f}×)",
        speedup >= TARGET,
    )
    ours_http = sum(ours_requests.values())
    sdk_http = sum(sdk_requests.values())
    result.row(
        f"HTTP requests per {n:,}",
        f"{ours_http:,}",
        f"{sdk_http:,}",
        ratio(sdk_http, ours_http),
        f"{batches} (batches of {BATCH})",
        ours_http == batches,
    )
    result.row(f"database queries per {n:,}", f"{counted.count:,}", "0 (records nothing)")
    result.note(
        f"Time floor from round trips alone: {batches} × {LATENCY_MS:.0f} ms = {seconds(ideal)}; "
        f"ours spent {seconds(ours.seconds - ideal)} beyond it (payloads, rows, JSON)."
    )
    result.note(
        f"send_mass_mail returned {sent:,}; sandbox captured {ours_captured:,}; rows sent: "
        f"{rows_sent:,}. Requests: ours {dict(ours_requests)}, SDK {dict(sdk_requests)}."
    )
    result.checks = {
        "messages": n,
        "sent": sent,
        "http_requests": ours_http,
        "expected_requests": batches,
        "captured": ours_captured,
        "rows_sent": rows_sent,
        "queries": counted.count,
        "sdk_requests": sdk_http,
    }
    return result
