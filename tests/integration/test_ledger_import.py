"""ledger import: checked against the catalog, re-priced from it, and counted honestly."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy

runner = CliRunner()
POLICY = """
version: 1
models:
  gpt-4o:      {provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25}
departments:
  HR: {}
"""
LABEL = parse_policy(POLICY).catalog["gpt-4o"].price_version


def record(ident: str, **changes: Any) -> dict[str, Any]:
    # 1,000 input tokens at $2.50 per 1M and 100 output tokens at $10.00 per 1M: $0.0035
    base: dict[str, Any] = {
        "record": "event", "id": ident, "admitted_at": "2026-11-03T15:00:00+00:00",
        "finished_at": "2026-11-03T15:00:01+00:00", "department": "HR", "model_requested": "gpt-4o",
        "model_served": "gpt-4o", "provider": "openai", "endpoint": "/v1/chat/completions",
        "input_tokens": 1000, "cached_input_tokens": 0, "output_tokens": 100, "cost_nanos": 3_500_000,
        "price_version": LABEL,
    }
    return {**base, **changes}


def write(path: Path, records: list[dict[str, Any] | str | None]) -> Path:
    path.write_text("".join("\n" if r is None else (r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records))
    return path


def cost_of(db: str) -> int:
    async def work() -> int:
        ledger = await Ledger.open(db)
        try:
            [row] = await ledger.totals(None, None)
            return row.cost_nanos
        finally:
            await ledger.close()

    return asyncio.run(work())


def test_bad_rows_are_refused_with_their_line_numbers(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    bad = write(tmp_path / "bad.jsonl", [
        record("fine"),
        record("overpriced", cost_nanos=999_000_000_000),  # $999 for 1,100 tokens
        record("negative", cost_nanos=-5_000_000_000),
        None,
        record("unknown", model_served="gpt-17"),
        record("cached-above-input", cached_input_tokens=2000),
    ])
    result = runner.invoke(app, ["ledger", "import", str(bad), "--db", db, "--policy", str(policy)])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "4 record(s) refused, nothing imported" in message
    assert "line 2 (overpriced): inconsistent: cost 999 USD is not its tokens' price 0.0035 USD" in message
    assert "line 3 (negative): negative cost" in message
    assert "line 5 (unknown): unknown model 'gpt-17'" in message
    assert "line 6 (cached-above-input): inconsistent" in message
    assert "line 1 " not in message
    assert cost_of(db) == 0  # nothing was written


def test_import_reprices_from_the_catalog_and_counts_new_and_present(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    good = write(tmp_path / "good.jsonl", [
        record("a"),
        # charged at older prices, consistently: re-priced to the catalog's $0.0035
        record("b", cost_nanos=1_100_000, price_version="1.00/0.50/1.00@2025-01-01"),
        {"record": "rejection", "id": "r1", "admitted_at": "2026-11-03T15:00:00+00:00", "department": "HR",
         "code": "budget_exceeded", "message": "no", "http_status": 429},
    ])
    first = runner.invoke(app, ["ledger", "import", str(good), "--db", db, "--policy", str(policy)])
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())
    assert "imported 2 new events and 1 new refused calls" in said and "1 events re-priced" in said
    assert cost_of(db) == 2 * 3_500_000
    again = runner.invoke(app, ["ledger", "import", str(good), "--db", db, "--policy", str(policy)])
    said = " ".join(again.output.split())
    assert "imported 0 new events and 0 new refused calls" in said
    assert "2 events and 1 refused calls were already present" in said
    assert cost_of(db) == 2 * 3_500_000


def test_more_bad_rows_are_refused_with_their_line_numbers(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    bad = write(tmp_path / "bad.jsonl", [
        record("writes-above-input", cache_write_5m_tokens=900, cached_input_tokens=200),
        record("reasoning-above-output", reasoning_tokens=101),
        record("negative-part", audio_input_tokens=-1),
        record("backwards", finished_at="2026-11-03T14:59:59+00:00"),
        record("two-costs", cost_usd="0.0036"),
        record("fine"),
        "not json",
    ])
    result = runner.invoke(app, ["ledger", "import", str(bad), "--db", db, "--policy", str(policy)])
    assert result.exit_code == 1
    message = " ".join(result.output.split())
    assert "6 record(s) refused, nothing imported" in message
    assert ("line 1 (writes-above-input): inconsistent: 200 cached input tokens, 900 cache writes and 0 audio "
            "tokens but only 1000 input tokens") in message
    assert "line 2 (reasoning-above-output): inconsistent: 101 reasoning tokens but only 100 output" in message
    assert "line 3 (negative-part): negative audio_input_tokens" in message
    assert "line 4 (backwards): inconsistent: finished_at is before admitted_at" in message
    assert "line 5 (two-costs): inconsistent: cost_usd 0.0036 is not cost_nanos 3500000" in message
    assert "line 7 (no id): unreadable" in message and "line 6 " not in message
    assert cost_of(db) == 0


DATED = POLICY.replace(
    "cached_input: 1.25}",
    "cached_input: 1.25,\n               price_history: [{until: 2026-11-10, input: 5.00, output: 15.00, as_of: 2026-01-01}]}")
OLD_LABEL = "5.00/-/15.00@2026-01-01"


def test_events_are_priced_at_the_catalog_in_force_when_they_were_admitted(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(DATED)
    db = f"sqlite:///{tmp_path}/ledger.db"
    # 1,000 input and 100 output tokens: $0.0065 at 5.00/15.00 (before the 10th), $0.0035 at 2.50/10.00
    rows = write(tmp_path / "rows.jsonl", [
        record("old-at-old", cost_nanos=6_500_000, price_version=OLD_LABEL),  # as billed then: kept as it is
        record("old-at-new"),  # stated at today's prices: re-priced to those of the 3rd
        record("new", admitted_at="2026-11-20T09:00:00+00:00", finished_at="2026-11-20T09:00:01+00:00"),
        record("boundary", admitted_at="2026-11-10T00:00:00+00:00", finished_at="2026-11-10T00:00:01+00:00",
               cost_nanos=6_500_000, price_version=OLD_LABEL),  # the 10th is the new prices' first day
    ])
    result = runner.invoke(app, ["ledger", "import", str(rows), "--db", db, "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert "2 events re-priced" in " ".join(result.output.split())

    async def costs() -> dict[str, tuple[int, str]]:
        ledger = await Ledger.open(db)
        try:
            found = await ledger.list_events(limit=10)
        finally:
            await ledger.close()
        return {event.id: (event.cost_nanos, event.price_version) for event in found}

    assert asyncio.run(costs()) == {"old-at-old": (6_500_000, OLD_LABEL), "old-at-new": (6_500_000, OLD_LABEL),
                                    "new": (3_500_000, LABEL), "boundary": (3_500_000, LABEL)}


def test_without_a_policy_each_event_takes_the_stored_policy_version_then_in_force(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    first, second = POLICY.replace("input: 2.50", "input: 2.00"), POLICY.replace("input: 2.50", "input: 3.00")

    async def store() -> None:
        ledger = await Ledger.open(db)
        try:
            await ledger.store_policy(first, datetime(2026, 11, 1, tzinfo=UTC))
            await ledger.store_policy(second, datetime(2026, 11, 15, 12, tzinfo=UTC))
        finally:
            await ledger.close()

    asyncio.run(store())
    rows = write(tmp_path / "rows.jsonl", [
        record("before-any", admitted_at="2026-10-30T09:00:00+00:00", finished_at="2026-10-30T09:00:01+00:00"),
        record("first"),
        record("second", admitted_at="2026-11-15T12:00:00+00:00", finished_at="2026-11-15T12:00:01+00:00"),
    ])
    result = runner.invoke(app, ["ledger", "import", str(rows), "--db", db])
    assert result.exit_code == 0, result.output

    async def costs() -> dict[str, int]:
        ledger = await Ledger.open(db)
        try:
            return {event.id: event.cost_nanos for event in await ledger.list_events(limit=10)}
        finally:
            await ledger.close()

    # 1,000 input tokens at 2.00 or 3.00 and 100 output tokens at 10.00 per 1M
    assert asyncio.run(costs()) == {"before-any": 3_000_000, "first": 3_000_000, "second": 4_000_000}


def test_a_bad_record_after_whole_batches_refuses_the_file_and_rolls_them_back(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    good: list[dict[str, Any] | None] = [record(f"e{i}") for i in range(12_000)]  # more than a batch of 10,000
    late_bad = write(tmp_path / "late-bad.jsonl", [*good, record("negative", cost_nanos=-1)])
    refused = runner.invoke(app, ["ledger", "import", str(late_bad), "--db", db, "--policy", str(policy)])
    assert refused.exit_code == 1 and "line 12001 (negative): negative cost" in " ".join(refused.output.split())
    assert cost_of(db) == 0  # the batches written before the bad record were rolled back, rollups too
    fine = write(tmp_path / "good.jsonl", good)
    done = runner.invoke(app, ["ledger", "import", str(fine), "--db", db, "--policy", str(policy)])
    assert done.exit_code == 0 and "imported 12000 new events" in " ".join(done.output.split())
    assert cost_of(db) == 12_000 * 3_500_000


def test_fields_of_the_wrong_json_type_are_refused_with_their_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    bad = write(tmp_path / "bad.jsonl", [record("fine"), record("null-model", model_served=None),
                                         record("listed-tags", tags=["project", "atlas"])])
    result = runner.invoke(app, ["ledger", "import", str(bad), "--db", db, "--policy", str(policy)])
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert "2 record(s) refused, nothing imported" in message
    assert "line 2 (null-model): unreadable" in message and "line 3 (listed-tags): unreadable" in message
    assert cost_of(db) == 0
