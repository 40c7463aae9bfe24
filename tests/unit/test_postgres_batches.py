"""The PostgreSQL writer's batches carry every row as SQLAlchemy binds it: each statement's JSON
text is, byte for byte, the one built through the columns' bind processors (times in UTC as ISO
8601 text, with their microseconds), whether a row's times are UTC already or not."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects.postgresql import psycopg
from sqlalchemy.sql.schema import Table

from costwarden.ledger.queue_items import Row, RowKind, Write
from costwarden.ledger.rows import event_row, inflight_row, rejection_row
from costwarden.ledger.schema import inflight, rejections, usage_events
from costwarden.ledger.sqlite_statements import PostgresStatements
from ledger_strategies import calls, events
from ledger_strategies import rejections as refusals

DIALECT = psycopg.dialect()
STATEMENTS = PostgresStatements(DIALECT)  # one for every example, as in the gateway: what it keeps is used


def bound(table: Table, rows: list[Row]) -> str:
    """``rows`` as one JSON text of the values SQLAlchemy's bind processors give, times as ISO text."""
    processors = {c.name: c.type.dialect_impl(DIALECT).bind_processor(DIALECT) for c in table.c}

    def wire(key: str, value: Any) -> Any:
        process = processors[key]
        value = value if process is None else process(value)
        return value.isoformat() if isinstance(value, datetime) else value

    keys = tuple(rows[0])
    return orjson.dumps([{key: wire(key, row[key]) for key in keys} for row in rows]).decode()


def as_given(row: Row, source: Any, raw: bool) -> Row:
    """``row``, with its times as ``source`` holds them (any offset) when ``raw``, not in UTC."""
    if not raw:
        return row
    return {key: getattr(source, key) if isinstance(value, datetime) else value for key, value in row.items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(events, st.booleans()), min_size=0, max_size=3),
       st.lists(st.tuples(calls, st.booleans()), min_size=0, max_size=3),
       st.lists(st.tuples(refusals, st.booleans()), min_size=0, max_size=2))
def test_a_batchs_json_is_the_bind_processors_text(
        given_events: list[tuple[Any, bool]], given_calls: list[tuple[Any, bool]],
        given_refusals: list[tuple[Any, bool]]) -> None:
    ahead = [as_given(inflight_row(call), call, raw) for call, raw in given_calls]
    stored = [as_given(event_row(event), event, raw) for event, raw in given_events]
    refused = [as_given(rejection_row(refusal), refusal, raw) for refusal, raw in given_refusals]
    writes = ([Write(RowKind.INFLIGHT, row) for row in ahead] + [Write(RowKind.EVENT, row) for row in stored]
              + [Write(RowKind.REJECTION, row) for row in refused])
    expected = [bound(table, rows) for table, rows in ((inflight, ahead), (usage_events, stored), (rejections, refused))
                if rows]
    statements = STATEMENTS.batch(writes)
    # one JSON text per table, the write-ahead rows' in the events' statement when there are events
    assert [p for _, params in statements for p in params if isinstance(p, str)] == expected
    assert len(statements) == bool(ahead or stored) + bool(refused)
    if stored:  # the events' own write-ahead rows are deleted in their statement
        (_, params), = [s for s in statements if "usage_events" in s[0]]
        assert [p for p in params if isinstance(p, list)] == [sorted(row["id"] for row in stored)]


@given(events, events)
def test_rows_of_other_keys_go_as_the_statement_takes_them(first: Any, second: Any) -> None:
    rows = [event_row(first), {**event_row(second), "unknown": 1}]
    ((_, params),) = STATEMENTS.batch([Write(RowKind.EVENT, row) for row in rows])
    assert params[-1] == bound(usage_events, rows)  # the extra key is left out, as the statement would
    missing = event_row(second)
    del missing["team"]
    with pytest.raises(KeyError):
        STATEMENTS.batch([Write(RowKind.EVENT, event_row(first)), Write(RowKind.EVENT, missing)])
