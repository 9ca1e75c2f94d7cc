"""The benchmark database: created and migrated once per run, emptied before each benchmark."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

PAUBOX_TABLES = ("django_paubox_webhookevent", "django_paubox_delivery", "django_paubox_message")


def is_postgres() -> bool:
    return os.environ.get("BENCH_DB", "postgres") != "sqlite"


def create_database() -> None:
    """Create the PostgreSQL database of the benchmarks if it does not exist (never ``test``)."""
    if not is_postgres():
        return
    import psycopg
    from psycopg import sql

    name = os.environ.get("BENCH_DB_NAME", "bench_django_paubox")
    if name == "test" or name.startswith("test_"):
        raise SystemExit(f"refusing to use database {name!r}: it belongs to the test suite")
    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def empty_paubox_tables() -> None:
    """Remove every message, delivery and event (and restart their ids)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(PAUBOX_TABLES)} RESTART IDENTITY CASCADE")
        else:
            for table in PAUBOX_TABLES:
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608 (constant names)


class QueryCounter:
    """Counts the SQL statements Django runs while installed (``connection.execute_wrapper``)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


@contextmanager
def count_queries() -> Iterator[QueryCounter]:
    from django.db import connection

    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        yield counter
