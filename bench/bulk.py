"""2. Bulk: ``send_mass_mail`` of 1,000 messages with 50 ms per API call, versus the SDK loop.

The physical limit is the number of round trips: 20 bulk requests of 50 instead of 1,000 single
ones, so 50×. It is also measured in the same run (bench/wire.py): the same 20 bulk bodies,
built before the clock starts, POSTed one after the other on one kept-alive connection, nothing
recorded. Also counts the HTTP requests and database queries the 1,000 messages cost.
"""

from __future__ import annotations

import json
import math

from django.core.mail import send_mass_mail
from paubox import PauboxApiClient

from django_paubox.models import Message

from . import common
from .db import count_queries, empty_paubox_tables
from .report import Result, ratio, seconds
from .sandbox import API_KEY, SandboxProcess
from .wire import Wire

KEY = "bulk"
TITLE = "2. Bulk send_mass_mail"
#: Issue #13: at least 40 times the SDK's loop, of a limit of 50 (20 requests instead of 1,000).
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
            sent = send_mass_mail(datatuple)  # the default mailer: PauboxEmailBackend
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

        # The limit: the same batches as prebuilt bulk bodies on one kept-alive connection.
        bodies = [
            Wire.bulk_body([common.sdk_mail("wire", i, html=False)["data"]["message"]
                            for i in range(start, min(start + BATCH, n))])
            for start in range(0, n, BATCH)
        ]  # fmt: skip
        with Wire(sandbox.base_url, f"Token token={API_KEY}") as wire:
            wire.post(
                "bulk_messages", Wire.bulk_body([common.sdk_mail("warm", 8)["data"]["message"]])
            )
            limit_timer = common.Timer()
            with limit_timer.measure():
                answers = [json.loads(wire.post("bulk_messages", body)) for body in bodies]
        limit_accepted = sum(len(a["messages"]) for a in answers)

    speedup = baseline.seconds / ours.seconds
    batches = math.ceil(n / BATCH)
    limit = n / batches
    ideal = batches * LATENCY_MS / 1000
    result.row(
        "speed: the SDK loop's wall time / ours",
        seconds(ours.seconds),
        seconds(baseline.seconds) + " (SDK loop)",
        ratio(baseline.seconds, ours.seconds),
        f"≥ {TARGET:.0f}× (#13; limit {limit:.0f}×)",
        speedup >= TARGET,
    )
    of_limit = limit_timer.seconds / ours.seconds
    result.row(
        "speed against the limit: its wall time / ours",
        seconds(ours.seconds),
        seconds(limit_timer.seconds) + " (limit: bench/wire.py)",
        f"{of_limit:.2f}×",
        f"≥ {TARGET / limit:.1f}× (= {TARGET:.0f}× / {limit:.0f}×)",
        of_limit >= TARGET / limit,
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
    result.note(
        f"Time floor from round trips alone: {batches} × {LATENCY_MS:.0f} ms = {seconds(ideal)}; "
        f"the measured limit took {seconds(limit_timer.seconds)} ({limit_accepted:,} accepted); "
        f"ours spent {seconds(ours.seconds - limit_timer.seconds)} beyond the limit (payloads, "
        f"rows, JSON) and sent {counted.count:,} statements to the database for {n:,} messages "
        "(as an execute_wrapper counts them; the SDK and the limit record nothing)."
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
