"""``ledger import`` streamed: a JSON Lines file checked and written in batches, in one transaction.

Each line is checked by ``import_rows.validated_record`` (read, re-priced at the prices in force
when it was admitted, refused with its line number) and the events go to the database in batches of
``BATCH``, rollups included, so a file of any size takes bounded memory. On SQLite an ordinary
event goes straight from its line to its row (``import_fast``; anything else takes the general
path), each batch is one ``executemany`` and its rollups one statement summing the rows it stored;
elsewhere ``rollups.insert_events`` writes them. All of it is one transaction: a file with a bad
record is refused whole, even when the bad record comes after millions of good ones, without
reading the file twice. Ids the ledger holds already are left as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.engine import Connection

from costwarden.core.events import UsageEvent
from costwarden.ledger.export import ImportResult
from costwarden.ledger.import_fast import COLUMNS, fast_row
from costwarden.ledger.import_rows import (
    ImportProblem,
    ImportRefused,
    ImportRowError,
    Prices,
    validated_record,
)
from costwarden.ledger.queries import count
from costwarden.ledger.queue_items import Row, insert_ignoring_duplicates
from costwarden.ledger.rollups import from_events, insert_events
from costwarden.ledger.rows import event_row, rejection_row
from costwarden.ledger.schema import rejections, usage_events
from costwarden.ledger.sqlite_statements import SqliteInsert

BATCH = 10_000  # events written at a time


def import_lines(conn: Connection, lines: Iterable[str], catalog: Prices,
                 progress: Callable[[int], None] | None = None) -> ImportResult:
    """Check and write every record of ``lines`` in the caller's transaction; raises ImportRefused
    (nothing must then be committed) listing every bad record. ``progress`` is told the number of
    lines read after each batch written."""
    events_before, rejections_before = count(conn, usage_events), count(conn, rejections)
    writer = _EventWriter(conn)
    fast = writer.sqlite
    problems: list[ImportProblem] = []
    events: list[Any] = []
    refused: list[Row] = []
    events_read = rejections_read = repriced = 0
    for number, line in enumerate(lines, start=1):
        if fast:
            quick = fast_row(line, catalog)
            if quick is not None:
                events_read += 1
                repriced += quick[1]
                if not problems:  # a refused file is not written further
                    events.append(quick[0])
                    if len(events) >= BATCH:
                        writer.write(events)
                        events = []
                        if progress is not None:
                            progress(number)
                continue
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
            if not problems:
                events.append(writer.row(event_row(record)))
        else:
            rejections_read += 1
            if not problems:
                refused.append(rejection_row(record))
        if len(events) >= BATCH:
            writer.write(events)
            events = []
            if progress is not None:
                progress(number)
    if problems:
        raise ImportRefused(problems)
    writer.write(events)
    if refused:
        conn.execute(insert_ignoring_duplicates(conn, rejections), refused)
    return ImportResult(events_read, count(conn, usage_events) - events_before, rejections_read,
                        count(conn, rejections) - rejections_before, repriced)


# The rows one executemany stored: a new row takes the largest rowid plus one and nothing is
# deleted from usage_events (see rollups.SQLITE_AFTER_INSERT), so they are those above the largest before it.
_ROLLUP_AFTER = from_events("sqlite", "rowid > ?")


class _EventWriter:
    """Writes batches of event rows and their rollups in ``conn``'s transaction: on SQLite rows in
    ``import_fast.COLUMNS`` order as the driver stores them, elsewhere ``event_row`` dictionaries."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        if self.sqlite:
            self._insert = SqliteInsert(usage_events, COLUMNS, conn.dialect)
            driver = conn.connection.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            self._driver = driver

    def row(self, row: Row) -> Any:
        """What ``write`` takes for an ``event_row``."""
        return self._insert.values(row) if self.sqlite else row

    def write(self, rows: list[Any]) -> None:
        if not rows:
            return
        if not self.sqlite:
            insert_events(self._conn, rows)
            return
        cursor = self._driver.cursor()
        try:
            highest = cursor.execute("SELECT coalesce(max(rowid), 0) FROM usage_events").fetchone()[0]
            cursor.executemany(self._insert.sql_for(1), rows)
            cursor.execute(_ROLLUP_AFTER, (highest,))
        finally:
            cursor.close()


__all__ = ["import_lines"]
