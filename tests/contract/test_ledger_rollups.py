"""The daily rollups give exactly the totals of the events they sum, on every backend: whatever
the events, duplicates and windows (whole days, hours of a day, a month in another timezone)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from costwarden.core.events import InflightCall, UsageEvent
from costwarden.ledger import Ledger
from costwarden.ledger.engine import normalize_url
from costwarden.ledger.export import event_fields, jsonl_line
from costwarden.ledger.import_stream import import_lines
from costwarden.ledger.queries import totals
from costwarden.ledger.rows import event_row
from costwarden.policy import bundled_catalog

EXAMPLES = settings(deadline=None, max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])
T0 = datetime(2026, 10, 30, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
GROUPINGS: tuple[tuple[str, ...], ...] = (
    (),
    ("department",),
    ("day", "department", "model_served", "provider", "price_version", "team", "user", "tag:project"),
    ("key_id", "model_requested", "status", "decision", "customer", "endpoint"),
)
WINDOWS: tuple[tuple[datetime | None, datetime | None], ...] = (
    (None, None),
    (T0, T0 + timedelta(days=3)),
    (T0 + timedelta(hours=5, minutes=7), T0 + timedelta(days=4, hours=1)),
    (T0 + timedelta(hours=1), T0 + timedelta(hours=20)),  # within one day: no rollup at all
    (datetime(2026, 11, 1, tzinfo=NEW_YORK), datetime(2026, 12, 1, tzinfo=NEW_YORK)),
    (None, T0 + timedelta(days=2, seconds=1)),
)

events_strategy: st.SearchStrategy[list[dict[str, Any]]] = st.lists(st.builds(
    dict,
    minute=st.integers(0, 6 * 24 * 60),
    department=st.sampled_from(["HR", "ENG"]),
    team=st.sampled_from([None, "DESK", "OPS"]),
    user=st.sampled_from([None, "ana", "bo"]),
    key_id=st.sampled_from([None, "key_1"]),
    model=st.sampled_from(["gpt-4o", "gpt-4o-mini"]),
    tags=st.sampled_from([{}, {"project": "atlas"}, {"project": "zeus", "env": "prod"}]),
    status=st.sampled_from(["ok", "error"]),
    tokens=st.integers(0, 10**6),
    cost=st.integers(0, 10**12),
    customer=st.sampled_from(["", "acme"]),
), max_size=30)


def event(ident: str, spec: dict[str, Any]) -> UsageEvent:
    at = T0 + timedelta(minutes=spec["minute"], seconds=7)
    return UsageEvent(
        id=ident, admitted_at=at, finished_at=at + timedelta(seconds=2), department=spec["department"],
        team=spec["team"], user=spec["user"], key_id=spec["key_id"], model_requested="gpt-4o",
        model_served=spec["model"], provider="openai", endpoint="/v1/chat/completions", tags=spec["tags"],
        input_tokens=spec["tokens"], cached_input_tokens=spec["tokens"] // 3, output_tokens=spec["tokens"] // 7,
        cost_nanos=spec["cost"], estimate_nanos=spec["cost"] + 5, status=spec["status"],
        reasoning_tokens=spec["tokens"] // 11, trimmed_tokens=spec["tokens"] // 13, customer=spec["customer"],
        price_version="p1" if spec["minute"] % 2 else "p2",
    )


FILTER: dict[str, Any] = {"team": ["DESK", None], "tag:project": "atlas", "user": None}


def both_ways(url: str, windows: Sequence[tuple[datetime | None, datetime | None]] = WINDOWS) -> None:
    """Every grouping and window gives the same rows from the rollups as from the events."""
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            for group_by in GROUPINGS:
                for since, until in windows:
                    for where in (None, FILTER):
                        fast = totals(conn, since, until, group_by, where, None)
                        scan = totals(conn, since, until, group_by, where, None, use_rollups=False)
                        assert sorted(map(repr, fast)) == sorted(map(repr, scan)), (group_by, where, since, until)
    finally:
        engine.dispose()


@EXAMPLES
@given(specs=events_strategy, repeat=st.integers(0, 5))
async def test_rollup_totals_equal_the_event_scan(ledger: Ledger, ledger_url: str, specs: list[dict[str, Any]],
                                                  repeat: int) -> None:
    batch = f"{datetime.now(UTC).timestamp()}"
    events = [event(f"{batch}-{i}", spec) for i, spec in enumerate(specs)]
    await ledger.record_many(events[::2])
    # New ids beside stored ones and ids repeated within the batch: each event counts once.
    await ledger.record_many(events + events[:repeat])
    await ledger.record_many(events[:repeat] + events[:repeat])  # present already: must add nothing
    for again in events[repeat:repeat + 2]:
        await ledger.record(again)
    both_ways(ledger_url)


async def test_the_empty_ledger_totals_the_same_both_ways(ledger: Ledger, ledger_url: str) -> None:
    both_ways(ledger_url)


async def test_recovered_calls_are_rolled_up(ledger: Ledger, ledger_url: str) -> None:
    for i in range(3):
        ledger.begin(InflightCall(
            id=f"call-{i}", admitted_at=T0 + timedelta(hours=i), department="HR", model_requested="gpt-4o",
            model_served="gpt-4o-mini", provider="openai", endpoint="/v1/chat/completions",
            estimate_input_tokens=300, estimate_output_tokens=700, estimate_nanos=4_245_000, price_version="p1",
            team="DESK", tags={"project": "atlas"}))
    await ledger.record(event("call-0", {"minute": 0, "department": "HR", "team": None, "user": None,
                                         "key_id": None, "model": "gpt-4o", "tags": {}, "status": "ok",
                                         "tokens": 10, "cost": 99, "customer": ""}))
    recovered = await ledger.recover_interrupted(T0 + timedelta(days=1))
    assert sorted(e.id for e in recovered) == ["call-1", "call-2"]
    await ledger.recover_interrupted(T0 + timedelta(days=1))  # nothing left: adds nothing
    rows = await ledger.totals(None, None, ("department",))
    assert [(r.groups["department"], r.requests, r.cost_nanos) for r in rows] == [("HR", 3, 99 + 2 * 4_245_000)]
    both_ways(ledger_url)


async def test_the_migration_fills_the_rollups_from_stored_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ledger = await Ledger.open(url)
    specs = [{"minute": m * 97, "department": d, "team": "DESK", "user": None, "key_id": None, "model": "gpt-4o",
              "tags": {"project": "atlas"}, "status": "ok", "tokens": 1000 + m, "cost": 10**9 + m, "customer": ""}
             for m in range(60) for d in ("HR", "ENG")]
    await ledger.record_many([event(f"e{i}", spec) for i, spec in enumerate(specs)])
    await ledger.close()
    with sqlite3.connect(tmp_path / "old.db") as conn:  # as a database from before the rollups
        conn.execute("DROP TABLE usage_rollups")
        conn.execute("DELETE FROM schema_migrations WHERE version = 7")
    ledger = await Ledger.open(url)
    try:
        rows = await ledger.totals(None, None, ("department",))
    finally:
        await ledger.close()
    assert [(r.groups["department"], r.requests) for r in rows] == [("ENG", 60), ("HR", 60)]
    both_ways(url)


async def test_an_import_keeps_the_rollups_once(ledger: Ledger, ledger_url: str, tmp_path: Path) -> None:
    specs = [{"minute": m * 61, "department": "HR", "team": "OPS", "user": "bo", "key_id": None, "model": "gpt-4o",
              "tags": {}, "status": "ok", "tokens": 0, "cost": 0, "customer": "acme"} for m in range(50)]
    lines = [jsonl_line(event_fields(event_row(event(f"i{i}", spec)))).decode() for i, spec in enumerate(specs)]
    catalog = bundled_catalog()
    first = await ledger.write_with(lambda conn: import_lines(conn, lines, catalog))
    again = await ledger.write_with(lambda conn: import_lines(conn, lines, catalog))
    assert (first.events_new, again.events_new, again.events_present) == (50, 0, 50)
    rows = await ledger.totals(None, None, ("customer",))
    assert [(r.groups["customer"], r.requests) for r in rows] == [("acme", 50)]
    both_ways(ledger_url)
