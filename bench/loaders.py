"""Bulk-loading messages and deliveries with PostgreSQL's COPY (hundreds of thousands a second).

Rows get explicit ids (the tables were emptied with RESTART IDENTITY); the id sequences are
moved past them afterwards so that the app's own inserts keep working.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Model

from django_paubox.models import Delivery, Message


def _columns(model: type[Model]) -> list[tuple[str, Any]]:
    """(column, default) for every concrete field of ``model``."""
    out = []
    for field in model._meta.concrete_fields:
        default = field.get_default() if field.has_default() else None
        if (
            default is None
            and not field.null
            and field.get_internal_type()
            in (
                "CharField",
                "TextField",
            )
        ):
            default = ""
        out.append((field.column, default))
    return out


def _copy(model: type[Model], rows: Iterable[dict[str, Any]]) -> int:
    columns = _columns(model)
    names = [name for name, _ in columns]
    table = model._meta.db_table
    count = 0
    json_columns = {
        f.column for f in model._meta.concrete_fields if f.get_internal_type() == "JSONField"
    }
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor, for COPY
        with raw.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                values = []
                for name, default in columns:
                    value = row.get(name, default)
                    if name in json_columns and value is not None:
                        value = json.dumps(value)
                    values.append(value)
                copy.write_row(values)
                count += 1
    return count


def reset_sequences() -> None:
    with connection.cursor() as cursor:
        for model in (Message, Delivery):
            table = model._meta.db_table
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"COALESCE((SELECT MAX(id) FROM {table}), 1))"
            )


def load(
    first: int,
    count: int,
    *,
    message: Callable[[int], dict[str, Any]],
    deliveries: Callable[[int], Sequence[dict[str, Any]]],
) -> tuple[int, int]:
    """COPY messages ``first .. first+count-1`` (ids ``index + 1``) and their deliveries.

    ``message(index)`` and ``deliveries(index)`` give column values; unspecified columns get
    the model's default. Returns (messages, deliveries) written.
    """
    delivery_id = _max_id(Delivery)
    written = [0]

    def delivery_rows() -> Iterable[dict[str, Any]]:
        nonlocal delivery_id
        for index in range(first, first + count):
            for row in deliveries(index):
                delivery_id += 1
                written[0] += 1
                yield {"id": delivery_id, "message_id": index + 1, **row}

    messages = _copy(
        Message, ({"id": index + 1, **message(index)} for index in range(first, first + count))
    )
    _copy(Delivery, delivery_rows())
    reset_sequences()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Message._meta.db_table}")
        cursor.execute(f"ANALYZE {Delivery._meta.db_table}")
    return messages, written[0]


def _max_id(model: type[Model]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {model._meta.db_table}")  # noqa: S608
        return int(cursor.fetchone()[0])


def aware(value: datetime) -> datetime:
    from django.utils import timezone

    return value if timezone.is_aware(value) else timezone.make_aware(value)
