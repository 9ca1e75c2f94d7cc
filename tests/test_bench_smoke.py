"""The benchmark harness still runs: ``python -m bench --quick`` for two cheap benchmarks.

Correctness only, never timings: the bulk send makes one request per batch of 50 and records
every message, and the receipts refresh asks once per message without exceeding its bound on
requests in flight. Runs on an SQLite file in a temporary directory, sandbox in its own process.
"""

from __future__ import annotations

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
            "bulk,receipts",
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
