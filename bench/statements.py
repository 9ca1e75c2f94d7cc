"""0. SQL statements: per webhook event and per single ``send_mail``, against their floors.

Counted with :mod:`bench.queries` (Django's ``CaptureQueriesContext``, BEGIN/SAVEPOINT/COMMIT
included, transactions counted explicitly). The webhook's floor is bench/floor.py's view, the
send's floor bench/floor_send.py: the least SQL that does the same job. Counts do not drift
from day to day as times do, so the issue's targets (≤ 6) stay absolute; the ratio to the floor
says how far there is to go. Runs on PostgreSQL or SQLite (the counts differ a little).
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from django_paubox.models import Delivery, Message

from . import common
from .db import empty_paubox_tables
from .floor_send import floor_send
from .loadgen import event_body, tracking_id
from .queries import Statements, count_statements, send_mail_statements, webhook_event_statements
from .report import Result
from .sandbox import SandboxProcess
from .wire import Wire

KEY = "statements"
TITLE = "0. SQL statements (BEGIN, SAVEPOINT, COMMIT included)"
TARGET = 6
SECRET = "bench-statements-secret-0123456789"


def _messages(count: int) -> None:
    """``count`` sent one-recipient messages with the tracking ids the events name."""
    for index in range(count):
        message = Message.objects.create(
            tracking_id=tracking_id(index),
            state=Message.State.SENT,
            status="sent",
            subject="Appointment reminder",
            from_email="reminders@clinic.example",
            sender_domain="clinic.example",
            recipient_count=1,
            attempts=1,
        )
        Delivery.objects.create(
            message=message, recipient=f"patient{index}@example.com", status="sent"
        )


def _ratio(ours: Statements, floor: Statements) -> str:
    return f"{ours.statements / floor.statements:.1f}×"


def _cell(counted: Statements) -> str:
    return f"{counted.statements} in {counted.transactions} tx"


def run(quick: bool) -> Result:
    result = Result(KEY, TITLE)
    empty_paubox_tables()
    _messages(4)
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    floor_path = reverse("bench-floor-webhook", kwargs={"secret": SECRET})
    # Events 0 and 1 (messages 0 and 1) warm both views up; 2 and 3 are measured.
    webhook_event_statements(event_body(0, 0, 4))
    webhook_event_statements(event_body(1, 0, 4), path=floor_path)
    ours = webhook_event_statements(event_body(2, 0, 4))
    ours_again = webhook_event_statements(event_body(2, 0, 4))
    floor = webhook_event_statements(event_body(3, 0, 4), path=floor_path)
    floor_again = webhook_event_statements(event_body(3, 0, 4), path=floor_path)
    moved = dict(
        Delivery.objects.filter(
            message__tracking_id__in=[tracking_id(2), tracking_id(3)]
        ).values_list("message__tracking_id", "status")
    )

    with SandboxProcess(latency_ms=0) as sandbox:
        common.point_at(sandbox)
        send_mail_statements(common.recipient("warm", 0))
        sent = send_mail_statements(common.recipient("stmt", 1))
        sdk = common.sdk_mail("floor", 2, html=False)
        with Wire(sandbox.base_url, f"Token token={sandbox.paubox_settings()['API_KEY']}") as wire:
            body = Wire.message_body(sdk["data"]["message"])

            def send_floor() -> None:
                floor_send(
                    wire,
                    body,
                    subject=common.SUBJECT,
                    sender=common.SENDER,
                    recipient=common.recipient("floor", 2),
                )

            send_floor()  # warm up (connects)
            floor_sent = count_statements(send_floor)

    result.row(
        "per webhook event (a delivered event, first time)",
        _cell(ours),
        _cell(floor) + " (floor view)",
        _ratio(ours, floor),
        f"≤ {TARGET} statements (#13)",
        ours.statements <= TARGET,
    )
    result.row(
        "per webhook event replayed (duplicate)",
        _cell(ours_again),
        _cell(floor_again) + " (floor view)",
        _ratio(ours_again, floor_again),
    )
    result.row(
        "per single send_mail (PauboxEmailBackend)",
        _cell(sent),
        _cell(floor_sent) + " (floor send)",
        _ratio(sent, floor_sent),
        f"≤ {TARGET} statements, 2 transactions (#13)",
        sent.statements <= TARGET and sent.transactions == 2,
    )
    for label, counted in (
        ("Webhook event", ours),
        ("Replayed event", ours_again),
        ("Floor view, event", floor),
        ("send_mail", sent),
        ("Floor send", floor_sent),
    ):
        result.note(
            f"{label}: {counted.describe().splitlines()[0]}: "
            + "; ".join(_short(sql) for sql in counted.sql)
            + "."
        )
    result.note(
        "How counted: bench/queries.py (CaptureQueriesContext; BEGIN/COMMIT/ROLLBACK counted "
        "from the connection's set_autocommit/commit/rollback and added where Django's log "
        f"lacks them: {ours.added + sent.added} added here; a statement in autocommit counts as "
        "a transaction of its own)."
    )
    result.checks = {
        "webhook": ours.as_dict(),
        "webhook_replayed": ours_again.as_dict(),
        "floor": floor.as_dict(),
        "floor_replayed": floor_again.as_dict(),
        "send_mail": sent.as_dict(),
        "floor_send": floor_sent.as_dict(),
        "moved": moved,
    }
    return result


def _short(sql: str) -> str:
    """The statement's first words: ``UPDATE "django_paubox_delivery"``, ``SAVEPOINT``."""
    words = sql.split()
    if not words:
        return ""
    if words[0].upper() in ("SELECT", "WITH"):
        table = next((w for w in words if w.startswith('"django_paubox_')), "")
        return f"{words[0]} {table.split('.')[0]}".strip()
    if words[0].upper() in ("INSERT", "UPDATE", "DELETE"):
        return " ".join(words[:3] if words[0].upper() == "INSERT" else words[:2])
    return " ".join(w for w in words[:3] if not w.startswith('"s'))
