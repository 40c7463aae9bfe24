"""An existing ledger is brought up to date in place: a database from before the billing
dimensions gains their columns, keeps its events, and records new events in full."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from costwarden.core.events import UsageEvent
from costwarden.ledger import Ledger
from costwarden.ledger.schema import BILLING_COLUMNS, INFLIGHT_COLUMNS

AT = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


def event(id: str, **extra: object) -> UsageEvent:
    return UsageEvent(id=id, admitted_at=AT, finished_at=AT, department="HR", model_requested="gpt-4o",
                      model_served="gpt-4o", provider="openai", endpoint="/v1/chat/completions",
                      input_tokens=100, output_tokens=10, cost_nanos=350_000, **extra)  # type: ignore[arg-type]


def downgrade_to_version_2(path: Path) -> None:
    """Undo migration 3 by hand, as a database written before it would be."""
    with sqlite3.connect(path) as conn:
        for table, columns in (("usage_events", BILLING_COLUMNS), ("inflight", INFLIGHT_COLUMNS)):
            for make in columns:
                conn.execute(f'ALTER TABLE {table} DROP COLUMN "{make().name}"')
        conn.execute("DELETE FROM schema_migrations WHERE version = 3")


async def test_a_version_2_ledger_gains_the_billing_columns_and_keeps_its_events(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ledger = await Ledger.open(f"sqlite:///{path}")
    await ledger.record(event("old"))
    await ledger.close()
    downgrade_to_version_2(path)

    ledger = await Ledger.open(f"sqlite:///{path}")
    try:
        billed = event("new", model_sent="openai/gpt-4o-2024-08-06", cache_write_1h_tokens=40, reasoning_tokens=4,
                       service_tier="priority", tool_calls={"web_search": 2}, usage_malformed=True)
        await ledger.record(billed)
        stored = {e.id: e for e in await ledger.list_events(limit=10)}
    finally:
        await ledger.close()
    assert stored["old"].model_sent == "" and stored["old"].tool_calls == {} and stored["old"].cost_nanos == 350_000
    assert stored["new"] == billed
