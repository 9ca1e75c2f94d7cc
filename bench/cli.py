"""The harness: runs each selected benchmark in its own process and writes the table.

``python -m bench`` (or ``bash bench/run.sh``) runs them all at full size against PostgreSQL
and writes ``bench/results/latest.md`` (and ``latest.json``). Options pick benchmarks, scale
them down (``--quick``), use an SQLite file instead, or profile the measured code.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from .registry import BENCHMARKS, BY_KEY
from .report import Result, markdown, write

ROOT = Path(__file__).resolve().parents[1]


def _postgres_reachable() -> bool:
    try:
        socket.create_connection(
            (os.environ.get("PGHOST", "127.0.0.1"), int(os.environ.get("PGPORT", "5432"))), 1
        ).close()
        return True
    except OSError:
        return False


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="django-paubox benchmarks against the Paubox sandbox."
    )
    parser.add_argument(
        "--only",
        default="",
        help="Comma-separated benchmarks to run: " + ", ".join(b.key for b in BENCHMARKS),
    )
    parser.add_argument("--quick", action="store_true", help="Scale every N down (smoke run).")
    parser.add_argument(
        "--db",
        choices=("postgres", "sqlite"),
        default=None,
        help="Database (default: PostgreSQL on 127.0.0.1:5432 when reachable, else SQLite).",
    )
    parser.add_argument(
        "--db-name", default="bench_django_paubox", help="PostgreSQL database to create and use."
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=ROOT / "bench" / "results",
        help="Where latest.md, latest.json (and profiles) go.",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Profile the measured code: pyinstrument in process, py-spy on gunicorn's "
        "workers (profile-* files in the results directory).",
    )
    parser.add_argument("--list", action="store_true", help="List the benchmarks and exit.")
    args = parser.parse_args(argv)
    if args.db_name == "test" or args.db_name.startswith("test_"):
        parser.error("the test suite owns that database name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.list:
        for benchmark in BENCHMARKS:
            print(benchmark.key + (" (PostgreSQL)" if benchmark.postgres_only else ""))
        return 0
    selected = [k.strip() for k in args.only.split(",") if k.strip()] or [b.key for b in BENCHMARKS]
    unknown = [k for k in selected if k not in BY_KEY]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    database = args.db or ("postgres" if _postgres_reachable() else "sqlite")
    results_dir: Path = args.results_dir.resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_DB": database,
        "BENCH_DB_NAME": args.db_name,
        "BENCH_SQLITE_PATH": str(results_dir / "bench.sqlite3"),
        "BENCH_RESULTS_DIR": str(results_dir),
        "BENCH_PROFILE": "1" if args.profile else "0",
        # Loopback only: never route the SDK's or our requests through a proxy.
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    lock_name = args.db_name if database == "postgres" else str(results_dir).replace("/", "_")
    lock = _exclusive(Path(tempfile.gettempdir()) / f"django-paubox-bench-{lock_name}.lock")
    if lock is None:
        print("another benchmark run is using this database; wait for it", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "bench.child", "--setup"], cwd=ROOT, env=env, check=True)
    results: list[Result] = []
    for key in selected:
        benchmark = BY_KEY[key]
        if benchmark.postgres_only and database != "postgres":
            print(f"== {key}: skipped (needs PostgreSQL)", file=sys.stderr)
            continue
        print(f"== {key} ...", file=sys.stderr, flush=True)
        results.append(_run_one(benchmark.key, args.quick, benchmark.timeout, env))
        print(f"== {key}: {results[-1].seconds:.0f} s", file=sys.stderr, flush=True)
    mode = "quick (--quick: scaled down)" if args.quick else "full size"
    text = markdown(results, mode=mode, database=database)
    write(results, results_dir, text)
    print(text)
    return 1 if any(r.error for r in results) else 0


def _exclusive(path: Path) -> IO[str] | None:
    """An exclusive lock held while the run lasts: two runs would empty each other's tables."""
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _run_one(key: str, quick: bool, timeout: float, env: dict[str, str]) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench.child", key, "--out", str(out)]
        if quick:
            command.append("--quick")
        try:
            subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                timeout=timeout / 5 if quick else timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Result(key, key, error=f"stopped after {timeout:.0f} s")
        if not out.exists():
            return Result(key, key, error="the benchmark process died without a result")
        return Result.from_json(json.loads(out.read_text(encoding="utf-8")))
