"""SQL statements and transactions of one operation, for the benchmarks and for tests.

    from bench.queries import count_statements, send_mail_statements, webhook_event_statements

    counted = webhook_event_statements(body)        # one event through the real webhook view
    assert counted.statements <= 6, counted.describe()
    counted = send_mail_statements("patient@example.com")   # the default mailer, to the sandbox
    assert counted.statements <= 6 and counted.transactions == 2, counted.describe()

How statements are counted: Django's ``CaptureQueriesContext`` lists every statement the
connection ran, savepoints (``SAVEPOINT``, ``RELEASE SAVEPOINT``, ``ROLLBACK TO SAVEPOINT``)
included, and, from Django 4.2 on, the ``BEGIN``/``COMMIT``/``ROLLBACK`` of each transaction.
That log is not enough alone: on PostgreSQL the driver sends ``BEGIN`` implicitly with the first
statement of a transaction, and whether Django writes a ``BEGIN`` line for it depends on the
Django version and code path. So transactions are counted explicitly as well: while measuring,
the connection's ``set_autocommit``, ``commit`` and ``rollback`` are watched; each switch from
autocommit to a transaction is one ``BEGIN``, each commit or rollback of it one ``COMMIT`` or
``ROLLBACK``. Any of these that the log lacks is added to the list, so that ``statements``
always counts each transaction's ``BEGIN`` and ``COMMIT`` as one statement each (as the issue's
figures do). A statement run outside any transaction (autocommit) is a transaction of its own,
and counted as one in ``transactions``.

Measure outside any transaction: inside one (a test wrapped in ``TestCase``'s transaction) the
operation's transactions become savepoints. In pytest, use ``django_db(transaction=True)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test.utils import CaptureQueriesContext

_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK)\s*;?\s*$", re.IGNORECASE)
_SAVEPOINT = re.compile(r"^\s*SAVEPOINT\b", re.IGNORECASE)


@dataclass(frozen=True)
class Statements:
    """What one operation cost the database."""

    #: Every statement in order, BEGIN/COMMIT/SAVEPOINT included (see the module docstring).
    sql: tuple[str, ...]
    #: BEGIN ... COMMIT/ROLLBACK blocks, plus one per statement run in autocommit.
    transactions: int
    #: Of ``transactions``, the BEGIN ... COMMIT/ROLLBACK blocks.
    explicit_transactions: int
    #: Statements run outside any transaction (each its own transaction).
    autocommit_statements: int
    #: ``SAVEPOINT`` statements (nested atomic blocks).
    savepoints: int
    #: BEGIN/COMMIT/ROLLBACK that Django's log lacked and were added here.
    added: int = 0
    vendor: str = ""

    @property
    def statements(self) -> int:
        return len(self.sql)

    def describe(self) -> str:
        """One line, then the statements (cut at 100 characters): for assertion messages."""
        head = (
            f"{self.statements} statements in {self.transactions} transaction(s) "
            f"({self.explicit_transactions} BEGIN…COMMIT, {self.autocommit_statements} "
            f"autocommit), {self.savepoints} savepoint(s) [{self.vendor}]"
        )
        return "\n".join([head, *(f"  {sql[:100]}" for sql in self.sql)])

    def as_dict(self) -> dict[str, Any]:
        return {
            "statements": self.statements,
            "transactions": self.transactions,
            "explicit_transactions": self.explicit_transactions,
            "autocommit_statements": self.autocommit_statements,
            "savepoints": self.savepoints,
            "added": self.added,
            "vendor": self.vendor,
            "sql": list(self.sql),
        }


@dataclass
class _Watch:
    """Transaction boundaries seen on the connection, and those the log lacks."""

    begins: int = 0
    ends: int = 0
    autocommit: int = 0
    #: (position in the captured list, keyword) of a boundary Django did not log.
    missing: list[tuple[int, str]] = field(default_factory=list)


def _log_length(conn: BaseDatabaseWrapper) -> int:
    return len(conn.queries_log)


@contextmanager
def _watch(conn: BaseDatabaseWrapper, start: int) -> Iterator[_Watch]:
    watch = _Watch()
    names = ("set_autocommit", "commit", "rollback")
    originals = {name: getattr(conn, name) for name in names}
    own = {name: vars(conn)[name] for name in names if name in vars(conn)}

    def boundary(keyword: str, call: Callable[[], Any]) -> Any:
        before = _log_length(conn)
        try:
            return call()
        finally:
            new = list(conn.queries_log)[before:] if _log_length(conn) > before else []
            if not any(entry["sql"].strip().upper() == keyword for entry in new):
                watch.missing.append((before - start, keyword))

    def set_autocommit(autocommit: bool, *args: Any, **kwargs: Any) -> Any:
        call = originals["set_autocommit"]
        if autocommit or not conn.get_autocommit():
            return call(autocommit, *args, **kwargs)
        watch.begins += 1
        return boundary("BEGIN", lambda: call(autocommit, *args, **kwargs))

    def ender(name: str) -> Callable[[], Any]:
        def end() -> Any:
            if conn.get_autocommit() or conn.connection is None:
                return originals[name]()
            watch.ends += 1
            return boundary(name.upper(), originals[name])

        return end

    def execute(run: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if conn.get_autocommit() and not _CONTROL.match(sql):
            watch.autocommit += 1
        return run(sql, params, many, context)

    conn.set_autocommit = set_autocommit  # type: ignore[method-assign]
    conn.commit = ender("commit")  # type: ignore[method-assign]
    conn.rollback = ender("rollback")  # type: ignore[method-assign]
    try:
        with conn.execute_wrapper(execute):
            yield watch
    finally:
        for name in names:
            if name in own:
                setattr(conn, name, own[name])
            else:
                delattr(conn, name)  # back to the class's method


def count_statements(work: Callable[[], object], *, using: str = DEFAULT_DB_ALIAS) -> Statements:
    """Run ``work()`` and count its statements and transactions on the ``using`` connection.

    Raises ``RuntimeError`` inside a transaction (see the module docstring).
    """
    conn = connections[using]
    if conn.in_atomic_block:
        raise RuntimeError(
            "count_statements() must run outside any transaction: inside one, transactions "
            "become savepoints (pytest: @pytest.mark.django_db(transaction=True))."
        )
    conn.ensure_connection()
    with (
        CaptureQueriesContext(conn) as captured,
        _watch(conn, captured.initial_queries) as watch,
    ):
        work()
    sql = [entry["sql"] for entry in captured.captured_queries]
    for position, keyword in sorted(watch.missing, reverse=True):
        sql.insert(position, keyword)
    return Statements(
        sql=tuple(sql),
        transactions=max(watch.begins, watch.ends) + watch.autocommit,
        explicit_transactions=max(watch.begins, watch.ends),
        autocommit_statements=watch.autocommit,
        savepoints=sum(1 for s in sql if _SAVEPOINT.match(s)),
        added=len(watch.missing),
        vendor=conn.vendor,
    )


def webhook_event_statements(
    body: bytes | str, *, secret: str | None = None, path: str | None = None
) -> Statements:
    """Statements of one event POSTed through Django's whole stack to the real webhook view.

    ``secret`` defaults to the first ``PAUBOX["WEBHOOK_SECRET"]``; ``path`` (instead of the
    ``django_paubox:webhook`` URL) measures another view the same way, such as the floor.
    Raises ``AssertionError`` unless the view answers 200.
    """
    from django.conf import settings
    from django.test import Client
    from django.urls import reverse

    if path is None:
        configured = secret or settings.PAUBOX.get("WEBHOOK_SECRET") or ""
        first = configured if isinstance(configured, str) else next(iter(configured), "")
        path = reverse("django_paubox:webhook", kwargs={"secret": first})
    client = Client()
    statuses: list[int] = []

    def post() -> None:
        response = client.post(path, data=body, content_type="application/json")
        statuses.append(response.status_code)

    counted = count_statements(post)
    if statuses != [200]:
        raise AssertionError(f"the webhook answered {statuses}, not 200")
    return counted


def send_mail_statements(recipient: str = "patient@example.com", **kwargs: Any) -> Statements:
    """Statements of one ``send_mail()`` through the default mailer (``PauboxEmailBackend``).

    ``PAUBOX`` must point at a Paubox that answers (the sandbox). ``kwargs`` go to
    ``send_mail`` (subject, message, from_email default to a one-line reminder).
    """
    from django.core.mail import send_mail

    arguments: dict[str, Any] = {
        "subject": "Your appointment reminder",
        "message": "Hello, this is a reminder of your appointment on Monday at 10:00.",
        "from_email": "Clinic <reminders@clinic.example>",
        **kwargs,
    }
    sent: list[int] = []

    def send() -> None:
        sent.append(send_mail(recipient_list=[recipient], **arguments))  # the default mailer

    counted = count_statements(send)
    if sent != [1]:
        raise AssertionError(f"send_mail returned {sent}, not 1")
    return counted
