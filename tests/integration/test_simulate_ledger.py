"""``simulate --period`` reads the ledger with a raw cursor: the rows it replays are exactly the
fields of the events recorded (the instant to the microsecond, no customer as None), in time
order, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costwarden.core.events import UsageEvent
from costwarden.ledger import Ledger
from costwarden.reports.replay_source import ledger_rows
from costwarden.reports.simulate import event_row

START = datetime(2026, 11, 1, 4, tzinfo=UTC)
END = datetime(2026, 12, 1, 5, tzinfo=UTC)


def recorded() -> list[UsageEvent]:
    """Calls at instants with any microseconds, some on the bounds of the month, some outside it."""
    rng = random.Random(8)
    instants = [START, START - timedelta(microseconds=1), END, END - timedelta(microseconds=1)]
    instants += [START + timedelta(seconds=rng.randrange(30 * 86_400), microseconds=rng.randrange(10**6))
                 for _ in range(300)]
    instants += [instants[-1]] * 3  # the same instant: ordered by id
    return [UsageEvent(id=f"e{rng.randrange(10**9):09d}", admitted_at=at, finished_at=at,
                       department=rng.choice(("ENG", "HR")), model_requested="gpt-4o", model_served="gpt-4o",
                       provider="openai", endpoint="/v1/chat/completions",
                       team=rng.choice((None, "T")), key_id=rng.choice((None, "k1")), user=rng.choice((None, "u")),
                       customer=rng.choice(("", "acme")), input_tokens=rng.randrange(5000),
                       cached_input_tokens=0, output_tokens=rng.randrange(900), cost_nanos=rng.randrange(10**8))
            for at in instants]


async def rows_of(url: str, events: list[UsageEvent]) -> list[tuple[object, ...]]:
    ledger = await Ledger.open(url)
    try:
        await ledger.record_many(events)
        return await ledger.read(lambda conn: list(ledger_rows(conn, START, END)))
    finally:
        await ledger.close()


def expected(events: list[UsageEvent]) -> list[tuple[object, ...]]:
    inside = sorted((e for e in events if START <= e.admitted_at < END), key=lambda e: (e.admitted_at, e.id))
    return [(*row[:6], row[6] or None, *row[7:]) for row in map(event_row, inside)]


def test_sqlite_rows_are_the_recorded_events_in_time_order(tmp_path: Path) -> None:
    events = recorded()
    assert asyncio.run(rows_of(f"sqlite:///{tmp_path}/ledger.db", events)) == expected(events)


@pytest.mark.service
def test_postgres_rows_are_the_recorded_events_in_time_order(postgres_database: str) -> None:
    events = recorded()
    assert asyncio.run(rows_of(postgres_database, events)) == expected(events)
