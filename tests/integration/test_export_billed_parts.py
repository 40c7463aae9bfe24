"""A ledger whose events carry cache writes, reasoning, a service tier and tool calls survives
`ledger export` and `ledger import` whole: same parts, same exact cost, nothing refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.events import UsageEvent
from costwarden.core.pricing import ServiceTier
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy

runner = CliRunner()
POLICY = """
version: 1
departments:
  HR: {}
"""
AT = datetime(2026, 11, 3, 15, 0, tzinfo=UTC)


def billed_event(ident: str) -> UsageEvent:
    spec = parse_policy(POLICY).catalog["claude-sonnet-4-6"]
    event = UsageEvent(id=ident, admitted_at=AT, finished_at=AT, department="HR",
                       model_requested="claude-sonnet-4-6", model_served="claude-sonnet-4-6", provider="anthropic",
                       endpoint="/v1/messages", input_tokens=5_000, cached_input_tokens=1_000, output_tokens=300,
                       price_version=spec.price_version, model_sent="anthropic/claude-sonnet-4-6",
                       cache_write_5m_tokens=1_000, cache_write_1h_tokens=2_000, reasoning_tokens=100,
                       tool_calls={"web_search": 2})
    cost = spec.charge(event.by_type(), ServiceTier.STANDARD, event.tool_calls).nanos
    return UsageEvent(**{**{f: getattr(event, f) for f in event.__dataclass_fields__}, "cost_nanos": cost})


def seeded(db: str, event: UsageEvent, tmp_path: Path) -> Path:
    """A ledger at ``db`` holding ``event``, and the policy file the commands read."""

    async def seed() -> None:
        ledger = await Ledger.open(db)
        try:
            await ledger.record(event)
        finally:
            await ledger.close()

    asyncio.run(seed())
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return policy


def test_billed_parts_survive_export_and_import(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"
    original = billed_event("evt-1")
    policy = seeded(source, original, tmp_path)
    exported = runner.invoke(app, ["ledger", "export", "--format", "jsonl", "--db", source])
    assert exported.exit_code == 0, exported.output
    dump = tmp_path / "dump.jsonl"
    dump.write_text(exported.stdout)
    imported = runner.invoke(app, ["ledger", "import", str(dump), "--db", target, "--policy", str(policy)])
    assert imported.exit_code == 0, imported.output

    async def read() -> list[UsageEvent]:
        ledger = await Ledger.open(target)
        try:
            return list(await ledger.list_events(limit=10))
        finally:
            await ledger.close()

    [copy] = asyncio.run(read())
    assert copy == original
    # $3 input, $0.30 cached, $3.75 and $6 cache writes, $15 output (reasoning too), $10 per 1,000 searches
    # in nano-dollars per token: 5,000 input tokens are 1,000 plain, 1,000 cached and 3,000 cache writes
    assert original.cost_nanos == (1_000 * 3_000 + 1_000 * 300 + 1_000 * 3_750 + 2_000 * 6_000
                                   + 300 * 15_000 + 2 * 10_000_000)


def test_focus_rows_carry_each_billed_token_type_and_add_up_to_the_cost(tmp_path: Path) -> None:
    import csv
    import io
    from decimal import Decimal

    db = f"sqlite:///{tmp_path}/a.db"
    original = billed_event("evt-1")
    policy = seeded(db, original, tmp_path)
    result = runner.invoke(app, ["report", "chargeback", "--period", "2026-11", "--format", "focus",
                                 "--db", db, "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    rows = [r for r in csv.DictReader(io.StringIO(result.stdout)) if r["ChargeCategory"] == "Usage"]
    quantity = {r["x_TokenType"]: Decimal(r["ConsumedQuantity"]) for r in rows}
    assert quantity == {"input": 1_000, "cached_input": 1_000, "cache_write_5m": 1_000, "cache_write_1h": 2_000,
                        "reasoning": 100, "output": 200}
    billed = {r["x_TokenType"]: Decimal(r["BilledCost"]) for r in rows}
    assert billed["cache_write_1h"] == Decimal("0.012")  # 2,000 tokens at $6 per 1M
    assert sum(billed.values()) == Decimal(original.cost_nanos) / 10**9
