"""The SQLite writer's batches: each row is sent once, in statements of its own number of rows (at
most ``MAX_ROWS_PER_STATEMENT``), and once committed they hold the rows and their rollups."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.dialects import sqlite

from costwarden.core.events import InflightCall, UsageEvent
from costwarden.ledger import writer_process
from costwarden.ledger.migrations import migrate
from costwarden.ledger.queue_items import MAX_ROWS_PER_STATEMENT, RowKind, Write
from costwarden.ledger.rows import event_row, inflight_row
from costwarden.ledger.sqlite_statements import SqliteStatements

T0 = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


def event(i: int) -> UsageEvent:
    return UsageEvent(id=f"req_{i:04d}", admitted_at=T0 + timedelta(hours=i), finished_at=T0 + timedelta(hours=i),
                      department="HR", model_requested="gpt-4o", model_served="gpt-4o", provider="openai",
                      endpoint="/v1/chat/completions", team=None if i % 2 else "DESK", input_tokens=i,
                      output_tokens=1, cost_nanos=1_000 + i, estimate_nanos=2_000)


def call(i: int) -> InflightCall:
    return InflightCall(id=f"req_{i:04d}", admitted_at=T0, department="HR", model_requested="gpt-4o",
                        model_served="gpt-4o", provider="openai", endpoint="/v1/chat/completions",
                        estimate_input_tokens=1, estimate_output_tokens=1, estimate_nanos=2_000, price_version="p1")


@pytest.mark.parametrize("ended", [1, 3, MAX_ROWS_PER_STATEMENT, MAX_ROWS_PER_STATEMENT + 3])
def test_each_row_goes_once_and_is_stored_once(tmp_path: Path, ended: int) -> None:
    begun = [call(1000 + i) for i in range(3)]  # other calls', begun in the batch
    writes = ([Write(RowKind.INFLIGHT, inflight_row(c)) for c in begun]
              + [Write(RowKind.EVENT, event_row(event(i))) for i in reversed(range(ended))])
    statements = SqliteStatements(sqlite.dialect()).batch(writes)
    inserted: list[str] = []
    for sql, params in statements:
        assert sql.count("?") == len(params)
        if sql.startswith("INSERT INTO usage_events"):
            columns = sql.count("?") // (sql.count("), (") + 1)
            inserted += params[0::columns]  # each row's first value: its id
            assert len(params) // columns <= MAX_ROWS_PER_STATEMENT
    assert inserted == [f"req_{i:04d}" for i in reversed(range(ended))]  # none repeated to fill a statement
    assert [p for sql, params in statements if sql.startswith("DELETE") for p in params] == sorted(inserted)

    db = tmp_path / "ledger.db"
    migrate(create_engine(f"sqlite:///{db}"))
    with contextlib.closing(writer_process.connect(str(db), 1000)) as conn:
        assert writer_process.commit(conn, statements) == (None, "")
        assert writer_process.commit(conn, statements) == (None, "")  # again: adds nothing
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*), sum(input_tokens) FROM usage_events").fetchone() == (
            ended, sum(range(ended)))
        assert conn.execute("SELECT sum(requests), sum(input_tokens) FROM usage_rollups").fetchone() == (
            ended, sum(range(ended)))
        assert conn.execute("SELECT count(*) FROM inflight").fetchone() == (len(begun),)


def test_a_writer_connection_keeps_its_statement_journals_in_memory(tmp_path: Path) -> None:
    with contextlib.closing(writer_process.connect(str(tmp_path / "w.db"), 1000)) as conn:
        assert conn.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
