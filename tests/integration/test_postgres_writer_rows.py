"""Rows written through the PostgreSQL writer process read back exactly as they were given: every
column of events, write-ahead rows and rejections, times to the microsecond in their instant,
any text, tags, absent team, key and user; a repeated event changes nothing. The database's
time zone is not UTC, so a time sent without its offset would be read as another instant."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine, func
from sqlalchemy import select as select_rows
from sqlalchemy.sql.schema import Table

from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.ledger import writer_process
from costwarden.ledger.engine import normalize_url
from costwarden.ledger.migrations import migrate
from costwarden.ledger.queue_items import Row, RowKind, Write
from costwarden.ledger.rows import event_row, inflight_row, rejection_row
from costwarden.ledger.schema import inflight, rejections, usage_events, usage_rollups
from costwarden.ledger.writer_process_client import Program, postgres_program
from ledger_strategies import calls, events
from ledger_strategies import rejections as refusals

pytestmark = pytest.mark.service
REPLY_S = 30.0


class Writer:
    """The writer process of a program, fed one batch at a time."""

    def __init__(self, program: Program) -> None:
        self._program = program
        self._process = subprocess.Popen(program.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=None if program.env is None else dict(program.env))
        self._number = 0
        self._buffer = bytearray()

    def commit(self, writes: list[Write]) -> tuple[str | None, str]:
        """Send ``writes`` as one batch; its outcome once the process has answered."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._number += 1
        self._process.stdin.write(self._program.encode(self._number, writes))
        self._process.stdin.flush()
        deadline = time.monotonic() + REPLY_S
        while not (replies := writer_process.unframe(self._buffer)):
            ready, _, _ = select.select([self._process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "the writer process did not answer"
            chunk = os.read(self._process.stdout.fileno(), 65536)
            assert chunk, "the writer process exited"
            self._buffer += chunk
        ((number, kind, message),) = replies
        assert number == self._number
        return kind, message

    def close(self) -> None:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.close()  # end of input: the process exits
        try:
            assert self._process.wait(timeout=REPLY_S) == 0
        finally:
            self._process.stdout.close()


@pytest.fixture
def database(postgres_database: str) -> Iterator[tuple[str, Engine]]:
    """The ledger's tables in a database whose sessions run in Kathmandu time (+05:45)."""
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {postgres_database.rsplit('/', 1)[1]} SET timezone TO 'Asia/Kathmandu'")
    engine = create_engine(normalize_url(postgres_database))
    migrate(engine)
    try:
        yield postgres_database, engine
    finally:
        engine.dispose()


@pytest.fixture
def writer(database: tuple[str, Engine]) -> Iterator[Writer]:
    url, engine = database
    process = Writer(postgres_program(url, engine.dialect))
    try:
        yield process
    finally:
        with contextlib.suppress(Exception):  # the test's own failure matters more than the stop's
            process.close()


def stored(engine: Engine, table: Table, ids: list[str]) -> dict[str, Row]:
    with engine.connect() as conn:
        return {row["id"]: dict(row) for row in conn.execute(select_rows(table).where(table.c.id.in_(ids))).mappings()}


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(events, min_size=1, max_size=3), st.lists(calls, max_size=3), st.lists(refusals, max_size=2),
       st.data())
def test_rows_read_back_as_written(database: tuple[str, Engine], writer: Writer, given_events: list[UsageEvent],
                                   given_calls: list[InflightCall], given_refusals: list[Rejection],
                                   data: st.DataObject) -> None:
    _, engine = database
    with engine.connect() as conn:
        requests_before = conn.execute(select_rows(func.coalesce(func.sum(usage_rollups.c.requests), 0))).scalar()
    # Each event's own write-ahead row first, with the calls still in flight, as the gateway sends them.
    own = [replace(data.draw(calls), id=event.id) for event in given_events]
    assert writer.commit([Write(RowKind.INFLIGHT, inflight_row(call)) for call in own + given_calls]) == (None, "")
    batch = ([Write(RowKind.EVENT, event_row(event)) for event in given_events]
             + [Write(RowKind.REJECTION, rejection_row(refusal)) for refusal in given_refusals])
    assert writer.commit(batch) == (None, "")
    again = [Write(RowKind.EVENT, event_row(replace(event, cost_nanos=event.cost_nanos + 1))) for event in given_events]
    assert writer.commit(again) == (None, "")  # duplicates: ignored

    expected_events = {event.id: event_row(event) for event in given_events}
    assert stored(engine, usage_events, list(expected_events)) == expected_events
    expected_calls = {call.id: inflight_row(call) for call in given_calls}
    assert stored(engine, inflight, [call.id for call in own + given_calls]) == expected_calls
    expected_refusals = {refusal.id: rejection_row(refusal) for refusal in given_refusals}
    assert stored(engine, rejections, list(expected_refusals)) == expected_refusals
    with engine.connect() as conn:
        requests = conn.execute(select_rows(func.sum(usage_rollups.c.requests))).scalar()
    assert requests == requests_before + len(given_events)  # each event added to the rollups once
