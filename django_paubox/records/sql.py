"""Statements written by hand, where the ORM would take several round trips for one step.

Each works on PostgreSQL and on SQLite (3.35 or later, for ``RETURNING``); :func:`can_insert_once`
tells the caller when to fall back to the ORM. Values are adapted by the model fields
(``get_db_prep_save``), so that JSON and datetimes are written exactly as the ORM writes them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection

from ..models import Delivery, Message, Suppression, WebhookEvent

_MODELS: dict[str, Any] = {m._meta.label: m for m in (Delivery, Message, Suppression, WebhookEvent)}
#: ``WebhookEvent`` columns written by :func:`insert_event_once`, besides ``message_id``.
_EVENT_FIELDS = (
    "event_name",
    "dedupe_key",
    "source_tracking_id",
    "recipient",
    "occurred_at",
    "received_at",
    "payload",
)


def _table(model: type[Any]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[Any], name: str) -> str:
    return _quoted_column(connection.vendor, model._meta.label, name)


@functools.cache
def _quoted_column(vendor: str, label: str, name: str) -> str:
    model = _MODELS[label]
    return connection.ops.quote_name(model._meta.get_field(name).column)


def can_insert_once() -> bool:
    """Whether the database has ``INSERT ... ON CONFLICT DO NOTHING RETURNING``."""
    return connection.vendor in ("postgresql", "sqlite") and bool(
        connection.features.can_return_columns_from_insert
    )


@functools.cache
def _insert_event_sql(vendor: str) -> str:
    columns = ", ".join(_column(WebhookEvent, name) for name in _EVENT_FIELDS)
    marks = ", ".join(["%s"] * len(_EVENT_FIELDS))
    pk, message_id = _column(WebhookEvent, "id"), _column(WebhookEvent, "message")
    lookup = (
        f"(SELECT {_column(Message, 'id')} FROM {_table(Message)} "  # noqa: S608
        f"WHERE {_column(Message, 'tracking_id')} = %s)"
    )
    return (
        f"INSERT INTO {_table(WebhookEvent)} ({columns}, {message_id}) "  # noqa: S608
        f"VALUES ({marks}, {lookup}) "
        f"ON CONFLICT ({_column(WebhookEvent, 'dedupe_key')}) DO NOTHING "
        f"RETURNING {pk}, {message_id}"
    )


def insert_event_once(values: dict[str, Any], tracking_id: str) -> tuple[int, int | None] | None:
    """Store an event unless its ``dedupe_key`` is stored already: one statement for both.

    ``values`` holds the :data:`_EVENT_FIELDS`; the event is linked to the message whose
    tracking id is ``tracking_id`` (if there is one) in the same statement. Returns the new
    row's ``(id, message_id)``, or None for a replay (nothing written). A concurrent insert of
    the same key waits for the other transaction and then does nothing (PostgreSQL), or is
    serialised by the database lock (SQLite).
    """
    with connection.cursor() as cursor:
        cursor.execute(_insert_event_sql(connection.vendor), _event_params(values, tracking_id))
        row = cursor.fetchone()
    return None if row is None else (row[0], row[1])


def _event_params(values: dict[str, Any], tracking_id: str) -> list[Any]:
    params = [_prep(WebhookEvent, name, values[name]) for name in _EVENT_FIELDS]
    params.append(tracking_id or None)  # no tracking id: no message, even one saved with ""
    return params


def can_lock_on_insert() -> bool:
    """Whether :func:`insert_event_locking` applies: PostgreSQL (a data-modifying ``WITH``
    and a locking ``LATERAL`` subquery)."""
    return connection.vendor == "postgresql"


@functools.cache
def _insert_event_locking_sql(vendor: str) -> str:
    pk, message_id = _column(WebhookEvent, "id"), _column(WebhookEvent, "message")
    # The locking read is a LATERAL subquery: FOR UPDATE cannot reach the nullable side of
    # the outer join itself, and the event's row comes back also when nothing is locked.
    return (
        f"WITH stored AS ({_insert_event_sql(vendor)}) "  # noqa: S608
        f"SELECT stored.{pk}, stored.{message_id}, locked.* FROM stored LEFT JOIN LATERAL "
        f"({_locking_read(f'stored.{message_id}', True)}) locked ON true"
    )


def insert_event_locking(
    values: dict[str, Any], tracking_id: str
) -> tuple[int, int | None, list[Delivery]] | None:
    """PostgreSQL: :func:`insert_event_once`, and :func:`lock_deliveries` of the message it
    linked the event to, in one statement; ``(id, message_id, deliveries)``, or None for a
    replay (nothing written, nothing locked). For a new event that will be applied: the lock
    is taken at once, in the insert's round trip.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _insert_event_locking_sql(connection.vendor), _event_params(values, tracking_id)
        )
        rows = cursor.fetchall()
    if not rows:
        return None
    event_id, message_id = rows[0][0], rows[0][1]
    return event_id, message_id, _locked([row[2:] for row in rows if row[2] is not None])


def _message_fields() -> list[Any]:
    """The message's columns read with its deliveries: all but ``payload`` (PHI, and large),
    which stays deferred on the instance."""
    return [f for f in Message._meta.concrete_fields if f.name != "payload"]


@functools.cache
def _lock_sql(vendor: str, for_update: bool) -> str:
    return _locking_read("%s", for_update)


def _locking_read(message_id: str, for_update: bool) -> str:
    """The read of :func:`lock_deliveries`, for the message whose id is ``message_id`` (a
    placeholder or a column)."""
    m, d = _table(Message), _table(Delivery)
    m_id, d_message = f"{m}.{_column(Message, 'id')}", f"{d}.{_column(Delivery, 'message')}"
    columns = ", ".join(f"{d}.{_column(Delivery, f.name)}" for f in Delivery._meta.concrete_fields)
    message_columns = ", ".join(f"{m}.{_column(Message, f.name)}" for f in _message_fields())
    return (
        f"SELECT {columns}, {message_columns} "  # noqa: S608
        f"FROM {m} INNER JOIN {d} ON {d_message} = {m_id} "
        f"WHERE {m_id} = {message_id} ORDER BY {d}.{_column(Delivery, 'id')}"
        + (" FOR UPDATE" if for_update else "")
    )


@functools.cache
def _converters(alias: str, label: str, names: tuple[str, ...]) -> list[tuple[int, list[Any], Any]]:
    """What the ORM would apply to each column of these fields (JSON, SQLite's datetimes)."""
    model = _MODELS[label]
    found = []
    for index, name in enumerate(names):
        column = model._meta.get_field(name).get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if converters:
            found.append((index, converters, column))
    return found


def _from_row(model: type[Any], names: tuple[str, ...], values: list[Any]) -> Any:
    for index, functions, column in _converters(connection.alias, model._meta.label, names):
        for convert in functions:
            values[index] = convert(values[index], column, connection)
    return model.from_db(connection.alias, list(names), values)


def lock_deliveries(message_id: int) -> list[Delivery]:
    """Lock a message and its deliveries, and read them, in one statement.

    Each delivery's ``message`` is the message read with it (its ``payload``, which can be
    large, deferred), so that ``delivery_status_changed`` receivers reach its metadata without
    a query. The lock order is the one every disposition keeps (message first, then its
    deliveries by id): PostgreSQL locks the rows of each result row in the order of the
    ``FROM`` list, the message's first, and the deliveries in the order of ``ORDER BY``. A
    message without deliveries is not locked: an event can change nothing on it. The rows
    become model instances as the ORM would make them, without its per-query overhead.
    """
    sql = _lock_sql(connection.vendor, bool(connection.features.has_select_for_update))
    with connection.cursor() as cursor:
        cursor.execute(sql, [message_id])
        return _locked(cursor.fetchall())


def _locked(rows: Sequence[Sequence[Any]]) -> list[Delivery]:
    """Rows of :func:`_locking_read` as deliveries, each with the one message read with them."""
    d_names = tuple(f.attname for f in Delivery._meta.concrete_fields)
    m_names = tuple(f.attname for f in _message_fields())
    deliveries = []
    message = None
    for row in rows:
        if message is None:
            message = _from_row(Message, m_names, list(row[len(d_names) :]))
        delivery = _from_row(Delivery, d_names, list(row[: len(d_names)]))
        delivery.message = message
        deliveries.append(delivery)
    return deliveries


def update_delivery(
    pk: int,
    values: dict[str, Any],
    unless_status_in: Sequence[str],
    *,
    message_status: tuple[int, str] | None = None,
) -> bool:
    """``UPDATE`` one delivery's ``values``, unless its status is one of ``unless_status_in``
    (the rank guard); True when the row was written. A plain statement: the ORM's ``update()``
    cost more than the database's work for it.

    ``message_status``: ``(message id, status)`` to write to the message too, only if the
    delivery was written. On PostgreSQL that is the same statement (the delivery's ``UPDATE``
    in a ``WITH``), one round trip; elsewhere a second statement (the caller holds a
    transaction).
    """
    sets = ", ".join(f"{_column(Delivery, name)} = %s" for name in values)
    params = [_prep(Delivery, name, value) for name, value in values.items()]
    sql = f"UPDATE {_table(Delivery)} SET {sets} WHERE {_column(Delivery, 'id')} = %s"  # noqa: S608
    params.append(pk)
    if unless_status_in:
        marks = ", ".join(["%s"] * len(unless_status_in))
        sql += f" AND {_column(Delivery, 'status')} NOT IN ({marks})"
        params += list(unless_status_in)
    with connection.cursor() as cursor:
        if message_status is not None and accepted_in_one_statement():
            message_id, status = message_status
            cursor.execute(
                f"WITH moved AS ({sql} RETURNING 1) "  # noqa: S608
                f"UPDATE {_table(Message)} SET {_column(Message, 'status')} = %s "
                f"WHERE {_column(Message, 'id')} = %s AND EXISTS (SELECT 1 FROM moved)",
                [*params, status, message_id],
            )
            return bool(cursor.rowcount)
        cursor.execute(sql, params)
        written = bool(cursor.rowcount)
    if written and message_status is not None:
        set_message_status(*message_status)
    return written


def set_message_status(pk: int, status: str) -> None:
    """``UPDATE`` one message's aggregate status."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_table(Message)} SET {_column(Message, 'status')} = %s "  # noqa: S608
            f"WHERE {_column(Message, 'id')} = %s",
            [status, pk],
        )


def statuses_at_or_above(status: str, ranks: dict[str, int]) -> list[str]:
    """The statuses a report of ``status`` may not replace (the rank guard of an UPDATE)."""
    return [s for s, r in ranks.items() if r >= ranks[status]]


def update_rows(model: type[Any], rows: Sequence[Any], fields: Sequence[str]) -> None:
    """Write ``fields`` of each of ``rows`` (model instances, by primary key), as
    ``bulk_update`` would: the values on the instances, adapted by their fields, no
    ``pre_save``. On PostgreSQL one ``UPDATE ... FROM (VALUES ...)``: ``bulk_update``'s
    ``CASE`` per field and row cost many times the database's work in Python (receipts polling,
    100 messages a batch). Elsewhere a plain ``UPDATE`` for one row, ``bulk_update`` for more.
    """
    if not rows:
        return
    if connection.vendor != "postgresql":
        if len(rows) == 1:
            (row,) = rows
            model._default_manager.filter(pk=row.pk).update(
                **{name: getattr(row, name) for name in fields}
            )
        else:
            model._default_manager.bulk_update(list(rows), list(fields))
        return
    written = [model._meta.get_field(name) for name in fields]
    params: list[Any] = []
    for row in rows:
        params.append(row.pk)
        params.extend(f.get_db_prep_save(getattr(row, f.attname), connection) for f in written)
    with connection.cursor() as cursor:
        cursor.execute(_update_rows_sql(model._meta.label, tuple(fields), len(rows)), params)


@functools.lru_cache(maxsize=128)
def _update_rows_sql(label: str, fields: tuple[str, ...], count: int) -> str:
    model = _MODELS[label]
    q = connection.ops.quote_name
    columns = [model._meta.pk, *(model._meta.get_field(name) for name in fields)]
    # Each value cast to its column's type: a VALUES list types its columns by their first
    # row, where a NULL would otherwise make one text.
    row = ", ".join(f"CAST(%s AS {f.cast_db_type(connection)})" for f in columns)
    names = ", ".join(q(f.column) for f in columns)
    sets = ", ".join(f"{q(f.column)} = v.{q(f.column)}" for f in columns[1:])
    table, pk = _table(model), q(model._meta.pk.column)
    return (
        f"UPDATE {table} SET {sets} FROM (VALUES {', '.join([f'({row})'] * count)}) "  # noqa: S608
        f"AS v ({names}) WHERE {table}.{pk} = v.{pk}"
    )


def _prep(model: type[Any], name: str, value: Any) -> Any:
    return model._meta.get_field(name).get_db_prep_save(value, connection)


def accepted_in_one_statement() -> bool:
    """Whether :func:`update_accepted` is one statement (PostgreSQL: an ``UPDATE`` in a
    ``WITH``), atomic without a transaction around it."""
    return connection.vendor == "postgresql"


def update_accepted(
    values: dict[str, Any],
    tracking_ids: Sequence[tuple[int, str]],
    deliveries: dict[str, Any],
    delivery_from: Iterable[str],
) -> None:
    """The after-send writes of accepted messages: ``values`` and each message's tracking id
    in one ``UPDATE`` of the messages, ``attempts`` incremented, and ``deliveries`` written to
    their deliveries whose status is in ``delivery_from``.

    On PostgreSQL both are one statement (the message ``UPDATE`` in a ``WITH``), atomic on its
    own; elsewhere two, which the caller wraps in a transaction.
    """
    states = list(delivery_from)
    messages_sql, delivery_sql = _accepted_sql(
        connection.vendor, tuple(values), len(tracking_ids), tuple(deliveries), len(states)
    )
    ids = [message_id for message_id, _ in tracking_ids]
    params: list[Any] = [_prep(Message, name, value) for name, value in values.items()]
    params += [value for pair in tracking_ids for value in pair]
    params += ids
    delivery_params = [_prep(Delivery, name, value) for name, value in deliveries.items()]
    delivery_params += [*ids, *states]
    with connection.cursor() as cursor:
        if accepted_in_one_statement():
            cursor.execute(
                f"WITH accepted AS ({messages_sql}) {delivery_sql}", params + delivery_params
            )
        else:
            cursor.execute(messages_sql, params)
            cursor.execute(delivery_sql, delivery_params)


@functools.cache
def _accepted_sql(
    vendor: str, values: tuple[str, ...], messages: int, deliveries: tuple[str, ...], states: int
) -> tuple[str, str]:
    """The two statements of :func:`update_accepted`, by the shape of its arguments."""
    m, d = _table(Message), _table(Delivery)
    pk = _column(Message, "id")
    sets = [f"{_column(Message, name)} = %s" for name in values]
    attempts = _column(Message, "attempts")
    sets.append(f"{attempts} = {attempts} + 1")
    cases = " ".join(["WHEN %s THEN %s"] * messages)
    sets.append(f"{_column(Message, 'tracking_id')} = CASE {pk} {cases} END")
    marks = ", ".join(["%s"] * messages)
    messages_sql = f"UPDATE {m} SET {', '.join(sets)} WHERE {pk} IN ({marks})"  # noqa: S608
    delivery_sql = (
        f"UPDATE {d} SET "  # noqa: S608
        + ", ".join(f"{_column(Delivery, name)} = %s" for name in deliveries)
        + f" WHERE {_column(Delivery, 'message')} IN ({marks})"
        + f" AND {_column(Delivery, 'status')} IN ({', '.join(['%s'] * states)})"
    )
    return messages_sql, delivery_sql


def insert_message_with_deliveries(
    message: Message, deliveries: Sequence[Delivery], *, suppressed_of: Sequence[str] = ()
) -> dict[str, str] | None:
    """PostgreSQL: insert one message and its deliveries in one statement (the message's
    ``INSERT`` in a ``WITH``), atomic on its own; sets ``message.pk``.

    ``suppressed_of``: addresses to look up on the suppression list in the same statement
    (the snapshot a separate lookup would have seen, without its round trip and transaction).
    Returns ``{address: reason}`` of those listed ({} when none was asked for), or None,
    writing nothing, where this does not apply (another database, no deliveries, a value the
    database computes): the caller then uses the ORM.

    Every concrete field is written as the ORM's ``bulk_create`` would write it (defaults,
    ``auto_now``, adapted by the field).
    """
    if not accepted_in_one_statement() or not deliveries:
        return None
    m_fields, d_named = _inserted_fields()
    m_values = [f.pre_save(message, True) for f in m_fields]
    d_rows = [[f.pre_save(d, True) for f in d_named] for d in deliveries]
    d_values = [v for row in d_rows for v in row]
    if any(hasattr(v, "resolve_expression") for v in [*m_values, *d_values]):
        return None
    m_params = [f.get_db_prep_save(v, connection) for f, v in zip(m_fields, m_values, strict=True)]
    d_params = [
        f.get_db_prep_save(v, connection)
        for row in d_rows
        for f, v in zip(d_named, row, strict=True)
    ]
    wanted = sorted(set(suppressed_of))
    sql = _insert_message_sql(connection.vendor, len(deliveries), len(wanted))
    with connection.cursor() as cursor:
        cursor.execute(sql, m_params + d_params + wanted)
        message.pk, listed = cursor.fetchone()
    message._state.adding = False
    message._state.db = connection.alias
    for delivery in deliveries:
        delivery.message = message
    return json.loads(listed) if listed else {}


@functools.cache
def _inserted_fields() -> tuple[list[Any], list[Any]]:
    """The fields :func:`insert_message_with_deliveries` writes: the message's, and its
    deliveries' but ``message`` (which the statement fills in)."""
    m_fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
    d_named = [
        f for f in Delivery._meta.concrete_fields if not f.primary_key and f.name != "message"
    ]
    return m_fields, d_named


@functools.cache
def _insert_message_sql(vendor: str, deliveries: int, looked_up: int) -> str:
    m_fields, d_named = _inserted_fields()
    m_pk = _column(Message, "id")
    m_columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in m_fields)
    d_columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in d_named)
    row = f"((SELECT {m_pk} FROM created), {', '.join(['%s'] * len(d_named))})"  # noqa: S608
    listed = "NULL"
    if looked_up:
        address, reason = _column(Suppression, "address"), _column(Suppression, "reason")
        listed = (
            f"(SELECT json_object_agg({address}, {reason})::text "  # noqa: S608
            f"FROM {_table(Suppression)} "
            f"WHERE {address} IN ({', '.join(['%s'] * looked_up)}))"
        )
    # A data-modifying WITH runs exactly once, read or not: the deliveries are inserted
    # although the final SELECT does not read them.
    return (
        f"WITH created AS (INSERT INTO {_table(Message)} ({m_columns}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(m_fields))}) RETURNING {m_pk}), "
        f"added AS (INSERT INTO {_table(Delivery)} ({_column(Delivery, 'message')}, {d_columns}) "
        f"VALUES {', '.join([row] * deliveries)} RETURNING 1) "
        f"SELECT (SELECT {m_pk} FROM created), {listed}"
    )


def sender_domains() -> list[str]:
    """Every ``Message.sender_domain``, sorted: the choices of the admin's filter.

    PostgreSQL walks the column's index from one value to the next (a recursive query, a few
    index probes per domain) instead of reading every message as ``SELECT DISTINCT`` does;
    elsewhere, ``SELECT DISTINCT``.
    """
    column, table = _column(Message, "sender_domain"), _table(Message)
    if connection.vendor != "postgresql":
        return list(
            Message.objects.order_by("sender_domain")
            .values_list("sender_domain", flat=True)
            .distinct()
        )
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH RECURSIVE domains(value) AS ("  # noqa: S608
            f"(SELECT {column} FROM {table} ORDER BY {column} LIMIT 1) "
            f"UNION ALL SELECT (SELECT {column} FROM {table} WHERE {column} > domains.value "
            f"ORDER BY {column} LIMIT 1) FROM domains WHERE domains.value IS NOT NULL) "
            "SELECT value FROM domains WHERE value IS NOT NULL"
        )
        return [row[0] for row in cursor.fetchall()]
