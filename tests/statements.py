"""Count the SQL statements and transactions of one operation, the way issue #13 counts them.

How: Django's ``CaptureQueriesContext`` lists every statement the connection ran, savepoints
included. Whether it also lists ``BEGIN`` and ``COMMIT`` depends on the backend and the Django
version (on PostgreSQL the driver sends ``BEGIN`` itself), so those lines are dropped from the
log and transactions are counted explicitly instead: each outermost ``transaction.atomic``
block entered is one transaction and costs two statements (``BEGIN`` and ``COMMIT`` or
``ROLLBACK``); a nested one is a savepoint, whose ``SAVEPOINT`` and ``RELEASE`` lines are in
the log already; a statement run outside any atomic block (autocommit) is a transaction of its
own and costs only itself. Run outside any transaction (``django_db(transaction=True)``):
inside one, every atomic block would be a savepoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\b", re.IGNORECASE)


@dataclass
class Counted:
    #: Statements other than BEGIN/COMMIT/ROLLBACK, savepoints included, in order.
    sql: list[str] = field(default_factory=list)
    #: Outermost atomic blocks entered (each a BEGIN ... COMMIT).
    atomic_blocks: int = 0
    #: Statements run in autocommit (each a transaction of its own).
    autocommit_statements: int = 0

    @property
    def statements(self) -> int:
        return len(self.sql) + 2 * self.atomic_blocks

    @property
    def transactions(self) -> int:
        return self.atomic_blocks + self.autocommit_statements

    def __repr__(self) -> str:
        head = (
            f"{self.statements} statements in {self.transactions} transaction(s) "
            f"({self.atomic_blocks} atomic, {self.autocommit_statements} autocommit)"
        )
        return "\n".join([head, *(f"  {s[:120]}" for s in self.sql)])


@contextmanager
def counting() -> Iterator[Counted]:
    """Count what runs inside the ``with`` block on the default connection."""
    if connection.in_atomic_block:
        raise RuntimeError("count outside any transaction: use django_db(transaction=True)")
    counted = Counted()
    real_enter = transaction.Atomic.__enter__

    def enter(self: transaction.Atomic) -> Any:
        if not transaction.get_connection(self.using).in_atomic_block:
            counted.atomic_blocks += 1
        return real_enter(self)

    def watch(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        # SQLite's BEGIN is run through a cursor, just before the atomic block is marked open.
        if connection.get_autocommit() and not _CONTROL.match(sql):
            counted.autocommit_statements += 1
        return execute(sql, params, many, context)

    connection.ensure_connection()
    transaction.Atomic.__enter__ = enter  # type: ignore[method-assign]
    try:
        with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(watch):
            yield counted
    finally:
        transaction.Atomic.__enter__ = real_enter  # type: ignore[method-assign]
    counted.sql = [q["sql"] for q in captured.captured_queries if not _CONTROL.match(q["sql"])]
