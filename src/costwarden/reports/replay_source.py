"""The ledger's usage events as replay rows, read in time order with a raw cursor.

Only the columns a replay reads are selected, and the database computes each row's epoch seconds
(exactly the float ``datetime.timestamp()`` gives: the microseconds divided by a million, rounded
once), so a row arrives as the tuple the replay takes: no row objects, no datetime per row.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy.engine import Connection

from costwarden.reports.replay import Row

FETCH = 10_000  # rows per fetch

_COLUMNS = ('id, department, team, key_id, "user", NULLIF(customer, \'\'), model_requested, input_tokens, '
            'cached_input_tokens, output_tokens, cost_nanos, tags')
# SQLite keeps an instant as UTC text 'YYYY-MM-DD HH:MM:SS.ffffff', which sorts in time order;
# its whole seconds and its microseconds are read apart (strftime would round the fraction).
_SQLITE = (f"SELECT (CAST(strftime('%s', substr(admitted_at, 1, 19)) AS INTEGER) * 1000000 "
           f"+ CAST(substr(admitted_at, 21, 6) AS INTEGER)) / 1000000.0, {_COLUMNS} FROM usage_events "
           "WHERE admitted_at >= ? AND admitted_at < ? ORDER BY admitted_at, id")
_POSTGRES = (f"SELECT EXTRACT(EPOCH FROM admitted_at)::float8, {_COLUMNS} FROM usage_events "
             "WHERE admitted_at >= %s AND admitted_at < %s ORDER BY admitted_at, id")


def ledger_rows(conn: Connection, since: datetime, until: datetime) -> Iterator[Row]:
    """The usage events admitted in [since, until), in (admitted_at, id) order, as replay rows."""
    raw: Any = conn.connection.dbapi_connection
    if conn.dialect.name == "sqlite":
        cursor = raw.cursor()
        cursor.execute(_SQLITE, (_sqlite_text(since), _sqlite_text(until)))
    else:
        cursor = raw.cursor(name="costwarden_replay")  # server side: streamed, not loaded whole
        cursor.execute(_POSTGRES, (since.astimezone(UTC), until.astimezone(UTC)))
    try:
        while page := cursor.fetchmany(FETCH):
            yield from cast(list[Row], page)
    finally:
        cursor.close()


def _sqlite_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


__all__ = ["ledger_rows"]
