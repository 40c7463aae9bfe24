"""The ledger's customer columns (migration 6, SPEC §12) on SQLite and PostgreSQL: events keep their
customer and trimmed tokens, keys and admin tokens their customer, and a ledger from before the
migration gains the columns and keeps its rows."""

from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from costwarden.core.events import UsageEvent
from costwarden.engine.rebuild import ledger_spend, ledger_totals
from costwarden.errors import InvalidRequest
from costwarden.ledger import Ledger
from costwarden.ledger.export import read_jsonl, write_export
from costwarden.ledger.schema import (
    CUSTOMER_CREDENTIAL_COLUMNS,
    CUSTOMER_EVENT_COLUMNS,
    CUSTOMER_INFLIGHT_COLUMNS,
)
from costwarden.policy import parse_policy

AT = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


def event(id: str, **extra: object) -> UsageEvent:
    fields: dict[str, object] = {"input_tokens": 100, "output_tokens": 10, "cost_nanos": 350_000, **extra}
    return UsageEvent(id=id, admitted_at=AT, finished_at=AT, department="PRODUCT", model_requested="gpt-4o",
                      model_served="gpt-4o", provider="openai", endpoint="/v1/chat/completions",
                      **fields)  # type: ignore[arg-type]


async def test_customers_round_trip(ledger_url: str) -> None:
    ledger = await Ledger.open(ledger_url)
    try:
        billed = event("a", customer="ACME", trimmed_tokens=1234)
        await ledger.record(billed)
        await ledger.record(event("b"))
        key, _ = await ledger.create_key("PRODUCT", customer="ACME", name="acme")
        token, _ = await ledger.create_token("customer", customer="ACME", name="acme portal")
        with pytest.raises(InvalidRequest):
            await ledger.create_token("customer", name="whose?")
        with pytest.raises(InvalidRequest):
            await ledger.create_token("finance", customer="ACME")
        with pytest.raises(InvalidRequest):
            await ledger.create_key(None, customer="ACME")
        stored = {e.id: e for e in await ledger.list_events(limit=10)}
        only = [e async for e in ledger.iter_events(AT - timedelta(days=1), AT + timedelta(days=1), customer="ACME")]
        totals = await ledger.totals(None, None, group_by=["customer"])
        keys = await ledger.list_keys()
        tokens = await ledger.load_tokens()
    finally:
        await ledger.close()
    assert stored["a"] == billed and stored["b"].customer == "" and stored["b"].trimmed_tokens == 0
    assert only == [billed]
    assert {row.groups["customer"]: row.requests for row in totals} == {"": 1, "ACME": 1}
    assert [(k.id, k.customer, k.department) for k in keys] == [(key.id, "ACME", "PRODUCT")]
    assert tokens[token.secret_hash].customer == "ACME" and tokens[token.secret_hash].role == "customer"


def downgrade_to_version_5(path: Path) -> None:
    """Undo migration 6 by hand, as a database written before it would be."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX ix_usage_events_customer_admitted_at")
        for table, columns in (("usage_events", CUSTOMER_EVENT_COLUMNS), ("inflight", CUSTOMER_INFLIGHT_COLUMNS),
                               ("api_keys", CUSTOMER_CREDENTIAL_COLUMNS),
                               ("admin_tokens", CUSTOMER_CREDENTIAL_COLUMNS)):
            for make in columns:
                conn.execute(f'ALTER TABLE {table} DROP COLUMN "{make().name}"')
        conn.execute("DELETE FROM schema_migrations WHERE version = 6")


async def test_a_version_5_ledger_gains_the_customer_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    ledger = await Ledger.open(f"sqlite:///{path}")
    await ledger.record(event("old"))
    old_key, _ = await ledger.create_key("PRODUCT")
    await ledger.close()
    downgrade_to_version_5(path)

    ledger = await Ledger.open(f"sqlite:///{path}")
    try:
        new = event("new", customer="ACME", trimmed_tokens=7)
        await ledger.record(new)
        stored = {e.id: e for e in await ledger.list_events(limit=10)}
        keys = {k.id: k for k in await ledger.list_keys()}
    finally:
        await ledger.close()
    assert stored["old"].customer == "" and stored["old"].cost_nanos == 350_000 and stored["new"] == new
    assert keys[old_key.id].customer is None
    with sqlite3.connect(path) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(usage_events)")}
        versions = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    assert "ix_usage_events_customer_admitted_at" in indexes and 6 in versions


async def test_customer_counters_are_rebuilt_from_the_ledger(tmp_path: Path) -> None:
    policy = parse_policy("""
version: 1
departments:
  PRODUCT: {}
plans:
  silver:
    budgets: [{limit: 500, period: monthly, action: reject}, {limit: 1000000, period: 1h, unit: tokens, action: alert}]
customers:
  GLOBEX: {plan: silver, department: PRODUCT}
""")
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/rebuild.db")
    try:
        await ledger.record(event("a", customer="GLOBEX"))
        await ledger.record(event("b", customer="GLOBEX", cost_nanos=1))
        await ledger.record(event("c"))
        spend = await ledger_spend(policy, ledger, AT + timedelta(minutes=5))
    finally:
        await ledger.close()
    totals = ledger_totals(spend)
    by_scope = {(check.scope.id, check.budget.period.text): amount for check, amount in totals.values()}
    assert by_scope[("customer:GLOBEX", "monthly")] == 350_001
    assert by_scope[("customer:GLOBEX", "1h")] == 220  # two calls of 110 tokens


async def test_an_export_keeps_the_customer_and_trimmed_tokens(tmp_path: Path) -> None:
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/export.db")
    try:
        await ledger.record(event("a", customer="ACME", trimmed_tokens=42))
        await ledger.record(event("b"))
        out = io.StringIO()
        await write_export(ledger, out, "jsonl")
    finally:
        await ledger.close()
    back = {record.id: record for record in read_jsonl(out.getvalue().splitlines())}
    assert [(r.customer, r.trimmed_tokens) for r in (back["a"], back["b"]) if isinstance(r, UsageEvent)] == [
        ("ACME", 42), ("", 0)]
