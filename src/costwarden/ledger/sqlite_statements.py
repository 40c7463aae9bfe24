"""Hot-path writes without SQLAlchemy, for the writer processes: statements prepared once per
table, with SQLAlchemy's own bind processors, so that the rows stored are the same as through
SQLAlchemy Core. SQLite's (``SqliteStatements``) and PostgreSQL's (``PostgresStatements``)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.schema import Table

from costwarden.ledger import rollups
from costwarden.ledger.queue_items import MAX_ROWS_PER_STATEMENT, Row, Write, partition
from costwarden.ledger.schema import inflight, rejections, usage_events
from costwarden.ledger.writer_process import Statement

log = logging.getLogger(__name__)


class SqliteStatements:
    """The driver-level statements (SQL, parameters) of a batch of writes: ``_write_batch``'s
    effect, with one multi-row statement per table in the usual batch."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._inserts: dict[tuple[str, tuple[str, ...]], SqliteInsert] = {}
        self._max_variables = self._variables()

    @staticmethod
    def _variables() -> int:
        with contextlib.closing(sqlite3.connect(":memory:")) as probe:
            return probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def batch(self, writes: list[Write]) -> list[Statement]:
        ahead, events, stale, refused = partition(writes)
        statements: list[Statement] = []
        if events:
            self._events(statements, events, stale, ahead)
        elif ahead:
            self._insert(statements, inflight, ahead)
        if refused:
            self._insert(statements, rejections, refused)
        return statements

    def _events(self, out: list[Statement], events: list[Row], stale: list[str], ahead: list[Row]) -> None:
        """Insert write-ahead rows ``ahead`` (other calls', begun in the batch), insert usage
        ``events``, add those stored to the rollups, and delete the write-ahead rows of ids
        ``stale`` (the events' own)."""
        if ahead:
            self._insert(out, inflight, ahead)
        self._insert(out, usage_events, events, rollups.SQLITE_AFTER_INSERT)
        most = self._max_rows(1)
        for start in range(0, len(stale), most):
            part = stale[start:start + most]
            out.append((_delete_stale(len(part)), part))

    def _insert(self, out: list[Statement], table: Table, rows: list[Row], after: Statement | None = None) -> None:
        """Multi-row inserts of ``rows``, each followed by ``after`` when given. A statement has
        exactly its rows: the writer's connection keeps a text of every size prepared
        (``writer_process.STATEMENT_CACHE``), where rows repeated to fill one of a few sizes cost
        SQLite a bind of each value and a conflict check per copy (two fifths more rows at c=64)."""
        keys = tuple(rows[0])
        insert = self._inserts.get((table.name, keys))
        if insert is None:
            insert = self._inserts[(table.name, keys)] = SqliteInsert(table, keys, self._dialect)
        most = self._max_rows(len(keys))
        for start in range(0, len(rows), most):
            part = rows[start:start + most]
            values: list[Any] = []
            for row in part:
                values += insert.values(row)
            out.append((insert.sql_for(len(part)), values))
            if after is not None:
                out.append(after)

    def _max_rows(self, columns: int) -> int:
        return max(1, min(MAX_ROWS_PER_STATEMENT, self._max_variables // columns))


@lru_cache(maxsize=MAX_ROWS_PER_STATEMENT)
def _delete_stale(rows: int) -> str:
    """The deletion of ``rows`` write-ahead rows by id."""
    return f"DELETE FROM inflight WHERE id IN ({', '.join('?' * rows)})"


class SqliteInsert:
    """INSERT ... ON CONFLICT DO NOTHING of ``keys`` into ``table`` for the sqlite3 driver, and
    the bind processors SQLAlchemy would apply to those columns (UTC times as text, booleans)."""

    def __init__(self, table: Table, keys: tuple[str, ...], dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        columns = [table.c[key] for key in keys]
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) VALUES "
        self._row = f"({', '.join('?' for _ in columns)})"
        self._sql: dict[int, str] = {}
        self.keys = keys
        self._take = itemgetter(*keys) if len(keys) > 1 else lambda row: (row[keys[0]],)
        processors = [_for_wire(c.type.dialect_impl(dialect).bind_processor(dialect), dialect.name)
                      for c in columns]
        self.processors = [(i, p) for i, p in enumerate(processors) if p is not None and not _int_flag(p)]
        # columns whose processor binds True as 1 and False as 0 (booleans on SQLite): done inline
        self.flags = [(i, p) for i, p in enumerate(processors) if p is not None and _int_flag(p)]

    def sql_for(self, rows: int) -> str:
        """The statement inserting ``rows`` rows at once."""
        sql = self._sql.get(rows)
        if sql is None:
            sql = self._sql[rows] = f"{self._head}{', '.join([self._row] * rows)} ON CONFLICT DO NOTHING"
        return sql

    def values(self, row: Row) -> list[Any]:
        values = list(self._take(row))
        for index, process in self.processors:
            values[index] = process(values[index])
        for index, process in self.flags:
            value = values[index]
            values[index] = (1 if value else 0) if type(value) is bool else process(value)
        return values


class PostgresStatements(SqliteStatements):
    """``SqliteStatements`` for PostgreSQL (through psycopg): one statement per table whatever the
    batch's size, taking its rows as one JSON text (``_from_json``), so that its text is short and
    the same for every batch: psycopg parses a long text anew on every execution (a multi-row
    VALUES of 64 rows took half the writer process's time), while this one it parses once and the
    server prepares once. Times go as ISO 8601 text, read as the column's type, and each insert
    into usage_events adds the rows it stored (``RETURNING``) to the rollups in the same
    statement."""

    def __init__(self, dialect: Dialect) -> None:
        super().__init__(dialect)
        self._texts: dict[tuple[str, tuple[str, ...]], tuple[str, JsonRows]] = {}
        # by the events' insert, the write-ahead rows' insert (or ""), deleting stale rows, one event
        self._with_stored: dict[tuple[str, str, bool, bool], str] = {}

    @staticmethod
    def _variables() -> int:
        return 65_535  # parameters of one statement (the protocol's limit)

    def _insert(self, out: list[Statement], table: Table, rows: list[Row], after: Statement | None = None) -> None:
        out.append(self._rows(table, rows))  # a usage event's rollups are its own statement's (``_events``)

    def _rows(self, table: Table, rows: list[Row]) -> tuple[str, list[Any]]:
        """The insert of ``rows`` into ``table``, and its parameters: the rows as one JSON text."""
        keys = tuple(rows[0])
        known = self._texts.get((table.name, keys))
        if known is None:
            sql, insert = _from_json(table, keys, self._dialect)
            known = self._texts[(table.name, keys)] = sql, JsonRows(insert)
        sql, encoder = known
        return sql, [encoder.text(rows)]

    def _events(self, out: list[Statement], events: list[Row], stale: list[str], ahead: list[Row]) -> None:
        """One statement: the insert of write-ahead rows ``ahead`` (other calls', begun in the
        batch), the events' insert, the deletion of their write-ahead rows and the rollups'
        upsert, which the writer process runs as a transaction of its own (one round trip to the
        server instead of four, or six with write-ahead rows). No write-ahead row of the batch is
        one the deletion would find: ``partition`` drops those of calls ended in the batch."""
        sql, params = self._rows(usage_events, events)
        one_row = len(events) == 1  # a call's event, the usual batch at low load: a text of its own
        ahead_sql, ahead_params = self._rows(inflight, ahead) if ahead else ("", [])
        before = [*ahead_params, *([stale] if stale else [])]
        out.append((self._stored(sql, ahead_sql, bool(stale), one_row), [*before, *params]))

    def _stored(self, sql: str, ahead: str, deletes: bool, one_row: bool) -> str:
        """The events' insert ``sql`` with the rollups' upsert, after the write-ahead rows' insert
        ``ahead`` if any, and the deletion of their write-ahead rows if ``deletes``: built once per
        text rather than per batch."""
        key = (sql, ahead, deletes, one_row)
        known = self._with_stored.get(key)
        if known is None:
            before = [*([ahead] if ahead else []), *([_DELETE_STALE] if deletes else [])]
            known = self._with_stored[key] = rollups.after_insert_postgres(sql, before, one_row)
        return known


_DELETE_STALE = "DELETE FROM inflight WHERE id = ANY(%s::varchar[])"


def _from_json(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[str, SqliteInsert]:
    """INSERT ... SELECT FROM json_populate_recordset(one JSON array of rows) ON CONFLICT DO
    NOTHING, and the column values' processors. The rows travel as one text, whatever their
    number: psycopg adapts a text in C, where one array per column cost the writer process
    more than the commit did. The server reads each value as its column's type, as from text."""
    quote = dialect.identifier_preparer.quote
    name, columns = quote(table.name), ", ".join(quote(table.c[key].name) for key in keys)
    sql = (f"INSERT INTO {name} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{name}, %s::json) "
           "ON CONFLICT DO NOTHING")
    return sql, SqliteInsert(table, keys, dialect)


class JsonRows:
    """Rows of one table and keys as the JSON text ``_from_json``'s statement reads, with the
    values SQLAlchemy's bind processors would give (``insert``'s). orjson writes an aware UTC
    time as ``isoformat`` does (RFC 3339, microseconds when there are any, +00:00) and a boolean
    as JSON's, so a row whose processed columns hold only those is written as it is, without a
    copy through the processors (most rows: the gateway's rows are built with UTC times); any
    other row goes through the processors, as does every row when a processor is of another
    kind or writes other text for the sample values."""

    def __init__(self, insert: SqliteInsert) -> None:
        self._insert = insert
        kinds = {insert.keys[index]: _passes(process) for index, process in [*insert.processors, *insert.flags]}
        self._as_is = None not in kinds.values()
        self._times = tuple(key for key, kind in kinds.items() if kind is datetime)
        self._flags = tuple(key for key, kind in kinds.items() if kind is bool)

    def text(self, rows: list[Row]) -> str:
        """``rows`` (with the same keys) as one JSON array of objects."""
        if self._as_is and self._plain(rows):
            return orjson.dumps(rows).decode()
        keys, values = self._insert.keys, self._insert.values
        return orjson.dumps([dict(zip(keys, values(row), strict=True)) for row in rows]).decode()

    def _plain(self, rows: list[Row]) -> bool:
        """Whether ``rows`` go as they are: aware UTC times and booleans in the processed columns,
        and the first row's keys (this statement's) in every row, which the processors' path
        would otherwise take from each row, or refuse it for."""
        times, flags = self._times, self._flags
        for row in rows:
            for key in times:
                value = row[key]
                if type(value) is not datetime or value.tzinfo is not UTC:
                    return False
            for key in flags:
                if type(row[key]) is not bool:
                    return False
        if len(rows) == 1:
            return True
        keys = rows[0].keys()
        return all(row.keys() == keys for row in rows)


_SAMPLES = (datetime(2026, 11, 10, 15, 4, 5, 123456, tzinfo=UTC), datetime(987, 1, 2, 3, 4, 5, tzinfo=UTC))


def utc_text(value: Any) -> Any:
    """An aware UTC datetime as SQLite stores it through SQLAlchemy: naive UTC text."""
    return _up_to_second(value.year, value.month, value.day, value.hour, value.minute, value.second) \
        + "%06d" % value.microsecond  # noqa: UP031


@lru_cache(maxsize=16)  # the rows of a second share it: half the instructions of the whole format
def _up_to_second(year: int, month: int, day: int, hour: int, minute: int, second: int) -> str:
    return "%04d-%02d-%02d %02d:%02d:%02d." % (year, month, day, hour, minute, second)  # noqa: UP031


def _for_wire(process: Callable[[Any], Any] | None, dialect: str) -> Callable[[Any], Any] | None:
    """The bind processor, for a dialect; values only of builtin types that ``marshal`` carries."""
    if dialect == "sqlite":
        return _faster(process)
    if process is None:
        return None

    def iso(value: Any) -> Any:
        value = process(value)
        return value.isoformat() if isinstance(value, datetime) else value

    return iso


def _passes(process: Callable[[Any], Any]) -> type | None:
    """The type of values (datetime: aware UTC ones; bool) that orjson writes, as they are, as
    the text of ``process``'s value for them, by sample values; None for a processor of others."""
    for kind, samples in ((datetime, _SAMPLES), (bool, (True, False))):
        try:
            if all(orjson.dumps(process(sample)) == orjson.dumps(sample) for sample in samples):
                return kind
        except Exception:  # not a processor of this kind of values
            continue
    return None


def _int_flag(process: Callable[[Any], Any]) -> bool:
    """Whether ``process`` binds True as the integer 1 and False as 0."""
    try:
        one, zero = process(True), process(False)
    except Exception:  # not a processor of booleans
        return False
    return type(one) is int and one == 1 and type(zero) is int and zero == 0


def _faster(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A UTC time processor that skips SQLAlchemy's general one (a type decorator, then a
    dictionary format) when it gives the same text for sample times; anything else as it is."""
    if process is None:
        return None
    try:
        same = all(process(sample) == utc_text(sample) for sample in _SAMPLES)
    except Exception:  # not a processor of times
        same = False
    if not same:
        return process

    def fast(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            return utc_text(value)
        return process(value)  # other zones, naive times (refused there), None

    return fast
