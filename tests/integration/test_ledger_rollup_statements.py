"""The PostgreSQL writer process's event statements, run as the writer runs them (``Postgres.commit``
of ``PostgresStatements``' batches), with batches chosen here rather than by the writer's timing:
one event and many, ids repeated within a batch and across batches, with and without their
write-ahead rows. Afterwards the rollups must equal a GROUP BY over the stored events, and every
stored event's write-ahead row must be gone."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from costwarden.core.events import InflightCall, UsageEvent
from costwarden.ledger import Ledger
from costwarden.ledger.queue_items import RowKind, Write
from costwarden.ledger.rollups import COLUMNS
from costwarden.ledger.rows import event_row, inflight_row
from costwarden.ledger.schema import ROLLUP_DIMENSIONS, ROLLUP_MEASURES
from costwarden.ledger.sqlite_statements import PostgresStatements
from costwarden.ledger.writer_process import Postgres

pytestmark = pytest.mark.service
T0 = datetime(2026, 10, 30, 22, tzinfo=UTC)  # events on both sides of a UTC midnight
RUNS = itertools.count()

# One event: which of a few ids (so that ids repeat), its minute, and the fields rollups group by.
event_specs: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict, ident=st.integers(0, 7), minute=st.integers(0, 3 * 60), department=st.sampled_from(["HR", "ENG"]),
    team=st.sampled_from([None, "DESK"]), user=st.sampled_from([None, "ana"]),
    tags=st.sampled_from([{}, {"project": "atlas"}]), tokens=st.integers(0, 10**6), cost=st.integers(0, 10**12),
    ahead=st.booleans())
# A batch's events, and whether their write-ahead rows come in the same batch (then the writer sends
# none of them: a call that began and ended within one batch) or in one before it.
batches = st.lists(st.tuples(st.lists(event_specs, min_size=1, max_size=6), st.booleans()), min_size=1, max_size=8)


def event(ident: str, spec: dict[str, Any]) -> UsageEvent:
    at = T0 + timedelta(minutes=spec["minute"])
    return UsageEvent(
        id=ident, admitted_at=at, finished_at=at + timedelta(seconds=3), department=spec["department"],
        team=spec["team"], user=spec["user"], model_requested="gpt-4o", model_served="gpt-4o-mini",
        provider="openai", endpoint="/v1/chat/completions", tags=spec["tags"], input_tokens=spec["tokens"],
        cached_input_tokens=spec["tokens"] // 3, output_tokens=spec["tokens"] // 7, cost_nanos=spec["cost"],
        estimate_nanos=spec["cost"] + 1, price_version="p1", reasoning_tokens=spec["tokens"] // 11,
        overrun_tokens=spec["tokens"] // 13)


def ahead(event: UsageEvent) -> InflightCall:
    return InflightCall(
        id=event.id, admitted_at=event.admitted_at, department=event.department,
        model_requested=event.model_requested, model_served=event.model_served, provider=event.provider,
        endpoint=event.endpoint, estimate_input_tokens=10, estimate_output_tokens=10, estimate_nanos=7,
        price_version="p1", team=event.team, user=event.user, tags=event.tags)


@pytest.fixture
def database(postgres_database: str) -> Iterator[str]:
    async def migrate() -> None:
        await (await Ledger.open(postgres_database)).close()

    asyncio.run(migrate())
    yield postgres_database


def _q(name: str) -> str:
    return f'"{name}"'


def differences(url: str) -> tuple[list[Any], list[Any]]:
    """Rollup rows the events' GROUP BY lacks, and the other way round."""
    key = ["to_char(admitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
           *(f"coalesce({_q(name)}, '')" for name in ROLLUP_DIMENSIONS)]
    sums = ["count(*)", *(f"sum({_q(m)})" for m in ROLLUP_MEASURES)]
    scan = (f"SELECT {', '.join(key + sums)} FROM usage_events "
            f"GROUP BY {', '.join(str(i) for i in range(1, len(key) + 1))}")
    rollups = f"SELECT {', '.join(map(_q, COLUMNS))} FROM usage_rollups"
    with psycopg.connect(url) as conn:
        return (conn.execute(f"{rollups} EXCEPT ALL {scan}").fetchall(),
                conn.execute(f"{scan} EXCEPT ALL {rollups}").fetchall())


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=batches)
def test_rollups_equal_the_stored_events_whatever_the_batches(
        database: str, plan: list[tuple[list[dict[str, Any]], bool]]) -> None:
    run = next(RUNS)
    statements = PostgresStatements(postgresql.dialect())
    writer = Postgres(database)
    stored: set[str] = set()
    try:
        for batch, together in plan:
            events = [event(f"r{run}-{spec['ident']}", spec) for spec in batch]
            begun = [Write(RowKind.INFLIGHT, inflight_row(ahead(e)))
                     for e, spec in zip(events, batch, strict=True) if spec["ahead"] and e.id not in stored]
            if begun and not together:
                assert writer.commit(statements.batch(begun)) == (None, "")
                begun = []
            writes = begun + [Write(RowKind.EVENT, event_row(e)) for e in events]
            assert writer.commit(statements.batch(writes)) == (None, "")
            stored.update(e.id for e in events)
    finally:
        writer.close()
    assert differences(database) == ([], [])
    with psycopg.connect(database) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM usage_events WHERE id LIKE %s", (f"r{run}-%",))}
        left = conn.execute("SELECT id FROM inflight WHERE id = ANY(%s)", (sorted(stored),)).fetchall()
    assert ids == stored
    assert left == []


def test_a_batch_of_events_and_of_other_calls_write_ahead_rows_is_one_idempotent_statement(database: str) -> None:
    run = next(RUNS)
    spec = {"minute": 5, "department": "HR", "team": None, "user": None, "tags": {}, "tokens": 100,
            "cost": 10**9, "ahead": True}
    ended_before = [event(f"m{run}-a{i}", spec) for i in range(3)]  # write-ahead rows committed earlier
    ended_within = event(f"m{run}-b", spec)  # begins and ends within the batch
    still_open = [event(f"m{run}-c{i}", spec) for i in range(4)]  # begin in the batch, end later
    statements = PostgresStatements(postgresql.dialect())
    writer = Postgres(database)
    try:
        begun = [Write(RowKind.INFLIGHT, inflight_row(ahead(e))) for e in ended_before]
        assert writer.commit(statements.batch(begun)) == (None, "")
        writes = [*(Write(RowKind.INFLIGHT, inflight_row(ahead(e))) for e in [*still_open, ended_within]),
                  *(Write(RowKind.EVENT, event_row(e)) for e in [ended_within, *ended_before])]
        batch = statements.batch(writes)
        assert len(batch) == 1
        assert writer.commit(batch) == (None, "")
        assert writer.commit(statements.batch(writes)) == (None, "")  # sent again: adds nothing
    finally:
        writer.close()
    with psycopg.connect(database) as conn:
        pending = {row[0] for row in conn.execute("SELECT id FROM inflight WHERE id LIKE %s", (f"m{run}-%",))}
        stored = {row[0] for row in conn.execute("SELECT id FROM usage_events WHERE id LIKE %s", (f"m{run}-%",))}
    assert pending == {e.id for e in still_open}
    assert stored == {e.id for e in [ended_within, *ended_before]}
    assert differences(database) == ([], [])
