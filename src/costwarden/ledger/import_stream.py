"""``ledger import`` streamed: a JSON Lines file checked and written in batches, in one transaction.

Each line is checked by ``import_rows.validated_record`` (read, re-priced at the prices in force
when it was admitted, refused with its line number) and the events go to the database in batches of ``BATCH`` through the writer's own
statements, rollups included (``SqliteStatements`` on SQLite, ``rollups.insert_events`` elsewhere),
so a file of any size takes bounded memory. All of it is one transaction: a file with a bad
record is refused whole, even when the bad record comes after millions of good ones, without
reading the file twice. Ids the ledger holds already are left as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from sqlalchemy.engine import Connection

from costwarden.core.events import UsageEvent
from costwarden.ledger.export import ImportResult
from costwarden.ledger.import_rows import (
    ImportProblem,
    ImportRefused,
    ImportRowError,
    Prices,
    validated_record,
)
from costwarden.ledger.queries import count
from costwarden.ledger.queue_items import Row, RowKind, Write, insert_ignoring_duplicates
from costwarden.ledger.rollups import insert_events
from costwarden.ledger.rows import event_row, rejection_row
from costwarden.ledger.schema import rejections, usage_events
from costwarden.ledger.sqlite_statements import SqliteStatements
from costwarden.ledger.writer_process import parameters

BATCH = 10_000  # events written at a time


def import_lines(conn: Connection, lines: Iterable[str], catalog: Prices,
                 progress: Callable[[int], None] | None = None) -> ImportResult:
    """Check and write every record of ``lines`` in the caller's transaction; raises ImportRefused
    (nothing must then be committed) listing every bad record. ``progress`` is told the number of
    lines read after each batch written."""
    events_before, rejections_before = count(conn, usage_events), count(conn, rejections)
    write_events = _event_writer(conn)
    problems: list[ImportProblem] = []
    events: list[Row] = []
    refused: list[Row] = []
    events_read = rejections_read = repriced = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            checked = validated_record(line, number, catalog)
        except ImportRowError as exc:
            problems.append(exc.problem)
            continue
        record = checked.record
        if isinstance(record, UsageEvent):
            events_read += 1
            repriced += checked.repriced
            if not problems:  # a refused file is not written further
                events.append(event_row(record))
        else:
            rejections_read += 1
            if not problems:
                refused.append(rejection_row(record))
        if len(events) >= BATCH:
            write_events(events)
            events = []
            if progress is not None:
                progress(number)
    if problems:
        raise ImportRefused(problems)
    write_events(events)
    if refused:
        conn.execute(insert_ignoring_duplicates(conn, rejections), refused)
    return ImportResult(events_read, count(conn, usage_events) - events_before, rejections_read,
                        count(conn, rejections) - rejections_before, repriced)


def _event_writer(conn: Connection) -> Callable[[list[Row]], None]:
    """A function writing a batch of event rows and their rollups in ``conn``'s transaction."""
    if conn.dialect.name != "sqlite":
        def write_rows(rows: list[Row]) -> None:
            if rows:
                insert_events(conn, rows)

        return write_rows
    statements = SqliteStatements(conn.dialect)
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)

    def write(rows: list[Row]) -> None:
        if not rows:
            return
        cursor = driver.cursor()
        try:
            for sql, values, size in statements.batch([Write(RowKind.EVENT, row) for row in rows]):
                cursor.execute(sql, parameters(values, size))
        finally:
            cursor.close()

    return write


__all__ = ["import_lines"]
