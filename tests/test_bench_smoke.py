"""The benchmark harness still runs: ``python -m bench --quick`` for three cheap benchmarks.

Correctness only, never timings: the bulk send makes one request per batch of 50 and records
every message, the receipts refresh asks once per message without exceeding its bound on
requests in flight, and the statement counts have their floors below them. Runs on an SQLite
file in a temporary directory, sandbox in its own process.

The baselines themselves are tested here too, in this process: the webhook floor view
(bench/floor.py) must store each distinct event once and move its delivery forward only, and
bench/queries.py must count BEGIN and COMMIT even where Django's log lacks them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("paubox")

# The harness, not the library: once per CI run (.ci/run's .venv), not in every tox environment.
pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bench")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "statements,bulk,receipts",
            "--quick",
            "--db",
            "sqlite",
            "--results-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (out / "latest.md").read_text().startswith("# django-paubox benchmarks")
    data = json.loads((out / "latest.json").read_text())
    return {item["key"]: item for item in data}


def test_bulk_sends_one_request_per_batch_and_records_every_message(results):
    bulk = results["bulk"]
    assert bulk["error"] is None
    checks = bulk["checks"]
    n = checks["messages"]
    assert checks["sent"] == checks["captured"] == checks["rows_sent"] == n
    assert checks["http_requests"] == checks["expected_requests"] == -(-n // 50)
    assert checks["sdk_requests"] == n
    # Bulk inserts up front (SQLite splits big statements into a few), then three UPDATEs per
    # batch (shared values, tracking ids, deliveries): a handful per batch, never per message.
    assert checks["queries"] <= 4 * checks["expected_requests"] + 10 < n


def test_receipts_ask_once_per_message_within_the_bound(results):
    receipts = results["receipts"]
    assert receipts["error"] is None
    checks = receipts["checks"]
    n = checks["messages"]
    assert checks["checked"] == checks["receipt_requests"] == checks["processing"] == n
    assert checks["errors"] == 0
    assert 1 < checks["peak_in_flight"] <= checks["concurrency"]
    assert 1 < checks["peak_in_flight_small"] <= checks["small_concurrency"]
    assert checks["queries"] < n / 2


def test_the_table_lists_both(results):
    titles = [item["title"] for item in results.values()]
    assert any(t.startswith("2. Bulk") for t in titles)
    assert any(t.startswith("3. Receipts") for t in titles)


def test_statement_counts_have_their_floors_below_them(results):
    statements = results["statements"]
    assert statements["error"] is None
    checks = statements["checks"]
    # The floor view: BEGIN, INSERT ... ON CONFLICT DO NOTHING, one UPDATE, COMMIT; a replay
    # inserts nothing and so updates nothing.
    assert checks["floor"]["statements"] == 4
    assert checks["floor"]["transactions"] == 1
    assert checks["floor_replayed"]["statements"] == 3
    assert checks["webhook"]["statements"] >= checks["floor"]["statements"]
    assert checks["webhook"]["transactions"] == 1
    assert checks["webhook"]["sql"][0] == "BEGIN"
    assert checks["webhook"]["sql"][-1] == "COMMIT"
    # A send is recorded before the call and completed after it: two transactions, both sides.
    assert checks["send_mail"]["transactions"] == checks["floor_send"]["transactions"] == 2
    assert checks["send_mail"]["statements"] >= checks["floor_send"]["statements"]
    assert set(checks["moved"].values()) == {"delivered"}


# --- The baselines, in this process -------------------------------------------------------------

SECRET = "bench-smoke-floor-secret"


@pytest.fixture
def floor_project(settings):
    """bench's URLs (the floor view beside the webhook) and two one-recipient messages."""
    from django_paubox.models import Delivery, Message

    settings.ROOT_URLCONF = "bench.urls"
    settings.PAUBOX = {**settings.PAUBOX, "WEBHOOK_SECRET": SECRET}
    for index in range(2):
        message = Message.objects.create(
            tracking_id=_tracking_id(index),
            state=Message.State.SENT,
            status="sent",
            from_email="reminders@clinic.example",
            recipient_count=1,
        )
        Delivery.objects.create(
            message=message, recipient=f"patient{index}@example.com", status="sent"
        )
    return f"/bench/floor/webhook/{SECRET}/"


def _tracking_id(index: int) -> str:
    from bench.loadgen import tracking_id

    return tracking_id(index)


def _event(event_id: int, name: str, index: int, time: str) -> bytes:
    return json.dumps(
        {
            "event_name": name,
            "payload": {
                "id": event_id,
                "source_tracking_id": _tracking_id(index),
                "to": f"Patient{index}@example.com",
                "time": time,
            },
        }
    ).encode()


@pytest.mark.django_db
def test_the_floor_view_stores_each_event_once_and_moves_its_delivery_forward(
    client, floor_project
):
    from django_paubox.models import Delivery, WebhookEvent

    def post(body: bytes, path: str = floor_project) -> int:
        return client.post(path, data=body, content_type="application/json").status_code

    delivered = _event(1, "api_mail_log_delivered", 0, "2024-04-18T20:00:01.379Z")
    opened = _event(2, "api_mail_log_opened", 0, "2024-04-18T21:00:00Z")
    late_bounce = _event(3, "api_mail_log_temporary_failure", 0, "2024-04-18T22:00:00Z")
    other = _event(4, "api_mail_log_permanent_failure", 1, "2024-04-18T20:00:02Z")
    for body in (delivered, delivered, opened, delivered, late_bounce, other, other):
        assert post(body) == 200
    assert post(b"{not json") == 400
    assert post(json.dumps({"event_name": "x"}).encode()) == 400
    assert post(delivered, floor_project.replace(SECRET, "wrong")) == 404

    ids = sorted(WebhookEvent.objects.values_list("payload__payload__id", flat=True))
    assert ids == [1, 2, 3, 4]  # one row per distinct event, duplicates refused
    assert set(WebhookEvent.objects.values_list("message__tracking_id", flat=True)) == {
        _tracking_id(0),
        _tracking_id(1),
    }
    first, second = Delivery.objects.order_by("message__tracking_id")
    assert first.status == "delivered"  # the late soft bounce ranks lower: ignored
    assert first.raw_status == "api_mail_log_delivered"
    assert first.delivered_at is not None and first.delivered_at.hour == 20
    assert first.opened_at is not None and first.opened_at.hour == 21
    assert second.status == "hard_bounced"
    assert second.delivered_at is None


@pytest.mark.django_db(transaction=True)
def test_statements_are_counted_even_where_django_logs_no_begin_or_commit(
    floor_project, monkeypatch
):
    from django.db.backends.base import base

    from bench.queries import webhook_event_statements

    first = _event(11, "api_mail_log_delivered", 0, "2024-04-18T20:00:01Z")
    logged = webhook_event_statements(first, path=floor_project)
    assert logged.sql[0] == "BEGIN" and logged.sql[-1] == "COMMIT", logged.describe()
    assert (logged.statements, logged.transactions, logged.added) == (4, 1, 0), logged.describe()

    # As on a Django or backend that writes no BEGIN/COMMIT lines in connection.queries.
    monkeypatch.setattr(base, "debug_transaction", lambda connection, sql: contextlib.nullcontext())
    second = _event(12, "api_mail_log_delivered", 1, "2024-04-18T20:00:02Z")
    unlogged = webhook_event_statements(second, path=floor_project)
    assert unlogged.added >= 1, unlogged.describe()
    assert unlogged.sql[0] == "BEGIN" and unlogged.sql[-1] == "COMMIT", unlogged.describe()
    assert (unlogged.statements, unlogged.transactions) == (4, 1), unlogged.describe()


@pytest.mark.django_db(transaction=True)
def test_statements_refuse_to_count_inside_a_transaction(floor_project):
    from django.db import transaction

    from bench.queries import count_statements

    with transaction.atomic(), pytest.raises(RuntimeError, match="outside any transaction"):
        count_statements(lambda: None)
