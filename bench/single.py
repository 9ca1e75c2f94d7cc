"""1. Single sends: messages one at a time through PauboxEmailBackend versus the SDK's loop.

Both sides send the same message to the same sandbox (no added latency: the loopback limit),
in alternating rounds so that drift on a shared machine hits both alike. Ours records every
message (a Message and a Delivery row, then the tracking id); the SDK records nothing.
"""

from __future__ import annotations

from django.core.mail import get_connection
from paubox import PauboxApiClient

from django_paubox.client import PauboxClient
from django_paubox.conf import get_settings
from django_paubox.models import Message
from django_paubox.payload import build_message

from . import common
from .db import count_queries, empty_paubox_tables
from .report import Result, per_second, ratio
from .sandbox import API_KEY, SandboxProcess

KEY = "single"
TITLE = "1. Single sends"
TARGET = 1.5


def run(quick: bool) -> Result:
    n, rounds = (60, 2) if quick else (3000, 6)
    per_round = n // rounds
    n = per_round * rounds
    result = Result(KEY, TITLE)
    empty_paubox_tables()
    with SandboxProcess(latency_ms=0) as sandbox:
        common.point_at(sandbox)
        sdk = PauboxApiClient(API_KEY, sandbox.base_url)
        conf = get_settings()
        raw_client = PauboxClient(conf)
        sides = {
            "sdk": common.Timer(),
            "reused": common.Timer(),
            "per_call": common.Timer(),
            "client": common.Timer(),
        }
        queries = {"reused": 0, "per_call": 0}
        counter = 0

        def next_index() -> int:
            nonlocal counter
            counter += 1
            return counter

        # Warm up every path (imports, first connections, Django's caches).
        sdk.send(common.sdk_mail("warm", 0))
        common.email("warm", 1).send()
        raw_client.send_message(build_message(common.email("warm", 2), conf))
        empty_paubox_tables()
        sandbox.control.reset()  # type: ignore[union-attr]

        for _ in range(rounds):
            mails = [common.sdk_mail("sdk", next_index()) for _ in range(per_round)]
            with sides["sdk"].measure():
                for mail in mails:
                    sdk.send(mail)

            emails = [common.email("reused", next_index()) for _ in range(per_round)]
            backend = get_connection()
            with count_queries() as counted, common.profiled("single-reused"):
                with sides["reused"].measure():
                    backend.open()
                    for message in emails:
                        backend.send_messages([message])
                    backend.close()
            queries["reused"] += counted.count

            emails = [common.email("percall", next_index()) for _ in range(per_round)]
            with count_queries() as counted, sides["per_call"].measure():
                for message in emails:
                    message.send()  # what send_mail() does: a new connection per call
            queries["per_call"] += counted.count

            payloads = [
                build_message(common.email("client", next_index()), conf) for _ in range(per_round)
            ]
            with sides["client"].measure():
                for body in payloads:
                    raw_client.send_message(body)
        raw_client.close()

        requests = sandbox.api_requests()
        recorded = Message.objects.filter(state=Message.State.SENT).count()

    rate = {name: n / timer.seconds for name, timer in sides.items()}
    reused = rate["reused"] / rate["sdk"]
    per_call = rate["per_call"] / rate["sdk"]
    result.row(
        f"{n:,} messages, connection reused (get_connection())",
        per_second(n, sides["reused"].seconds),
        per_second(n, sides["sdk"].seconds) + " (SDK)",
        ratio(rate["reused"], rate["sdk"]),
        f"≥ {TARGET}×",
        reused >= TARGET,
    )
    result.row(
        f"{n:,} messages, send_mail() style (new connection each)",
        per_second(n, sides["per_call"].seconds),
        per_second(n, sides["sdk"].seconds) + " (SDK)",
        ratio(rate["per_call"], rate["sdk"]),
        f"≥ {TARGET}×",
        per_call >= TARGET,
    )
    result.row(
        "limit: PauboxClient alone, no database",
        per_second(n, sides["client"].seconds),
        per_second(n, sides["sdk"].seconds) + " (SDK)",
        ratio(rate["client"], rate["sdk"]),
    )
    result.note(
        f"{rounds} alternating rounds of {per_round} messages per side, sandbox latency 0 ms; "
        "the SDK opens a new TCP connection per call, PauboxClient keeps one alive."
    )
    result.note(
        f"Database queries per message: {queries['reused'] / n:.1f} with a reused connection, "
        f"{queries['per_call'] / n:.1f} with send_mail() style; the SDK records nothing."
    )
    result.note(
        f"Sandbox received {requests['POST messages']:,} POST /messages "
        f"(expected {4 * n:,}); rows recorded as sent: {recorded:,} (expected {2 * n:,})."
    )
    result.checks = {
        "messages": n,
        "post_messages": requests["POST messages"],
        "rows_sent": recorded,
        "queries_per_message_reused": queries["reused"] / n,
    }
    return result
