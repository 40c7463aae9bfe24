"""Reconciliation of two providers against their UTC-month invoices (policy in New York)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.events import UsageEvent
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy

runner = CliRunner()
POLICY = """
version: 1
timezone: America/New_York
models:
  gpt-4o:   {provider: openai, tier: 3, input: 2.50, output: 10.00}
  claude-x: {provider: anthropic, tier: 2, input: 5.00, output: 25.00}
departments:
  ENGINEERING: {}
  MARKETING: {}
"""
CATALOG = parse_policy(POLICY).catalog


def event(ident: str, department: str, model: str, at: datetime, input_tokens: int) -> UsageEvent:
    spec = CATALOG[model]
    cost = spec.cost(input_tokens, 0)
    return UsageEvent(id=ident, admitted_at=at, finished_at=at + timedelta(seconds=1), department=department,
                      model_requested=model, model_served=model, provider=spec.provider,
                      endpoint="/v1/chat/completions", input_tokens=input_tokens, cost_nanos=cost,
                      estimate_nanos=cost, price_version=spec.price_version)


def seed(db: str) -> None:
    events = [
        # 2026-11-01 02:00 UTC is 2026-10-31 22:00 in New York: on OpenAI's November invoice, not on
        # November's statement ($1.00)
        event("head", "ENGINEERING", "gpt-4o", datetime(2026, 11, 1, 2, tzinfo=UTC), 400_000),
        event("mid", "ENGINEERING", "gpt-4o", datetime(2026, 11, 15, 12, tzinfo=UTC), 4_000_000),  # $10.00
        # 2026-12-01 03:00 UTC is 2026-11-30 22:00 in New York: on November's statement, on OpenAI's
        # December invoice ($2.00)
        event("tail", "ENGINEERING", "gpt-4o", datetime(2026, 12, 1, 3, tzinfo=UTC), 800_000),
        event("claude", "MARKETING", "claude-x", datetime(2026, 11, 20, 12, tzinfo=UTC), 1_000_000),  # $5.00
    ]

    async def work() -> None:
        ledger = await Ledger.open(db)
        try:
            await ledger.record_many(events)
        finally:
            await ledger.close()

    asyncio.run(work())


def test_two_providers_against_utc_invoices(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    seed(db)
    result = runner.invoke(app, ["report", "chargeback", "--period", "2026-11", "--format", "json", "--db", db,
                                 "--policy", str(policy), "--invoice", "openai=11.50", "--invoice", "anthropic=4.90"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    reconciliation = document["reconciliation"]
    providers = {p["provider"]: p for p in reconciliation["providers"]}
    # OpenAI's UTC November: $1.00 + $10.00 = $11.00 against $11.50; Anthropic: $5.00 against $4.90
    assert providers["openai"]["ledger_utc_month_usd"] == "11"
    assert providers["openai"]["variance_usd"] == "0.5"
    assert providers["anthropic"]["variance_usd"] == "-0.1"
    # the boundary hours are shown: 4 h at the start (invoice only), 5 h at the end (statement only)
    head, tail = providers["openai"]["boundary_hours"]
    assert (head["start"], head["hours"], head["side"], head["ledger_usd"]) == (
        "2026-11-01T00:00:00+00:00", 4, "invoice only", "1")
    assert (tail["start"], tail["hours"], tail["side"], tail["ledger_usd"]) == (
        "2026-12-01T00:00:00+00:00", 5, "statement only", "2")
    assert providers["openai"]["statement_period_usd"] == "12"  # 11 - 1 + 2
    assert reconciliation["variance_usd"] == "0.4" and reconciliation["invoice_total_usd"] == "16.4"
    # The variance is allocated in proportion to usage ($12 and $5 of $17): 28.24 and 11.76 cents
    # exact, so 28 and 12 by largest remainder; boundary hours are not variance.
    lines = {line["department_id"]: line for line in document["lines"]}
    assert lines["ENGINEERING"]["usage_cost_usd"] == "12.00" and lines["ENGINEERING"]["variance_usd"] == "0.28"
    assert lines["MARKETING"]["usage_cost_usd"] == "5.00" and lines["MARKETING"]["variance_usd"] == "0.12"
    assert document["totals"]["total_cost_usd"] == "17.40"

    invoices = tmp_path / "invoices.csv"
    invoices.write_text("provider,total_usd,invoice_id\nopenai,11.50,INV-1\nanthropic,4.90,INV-2\n")
    same = runner.invoke(app, ["report", "chargeback", "--period", "2026-11", "--format", "json", "--db", db,
                               "--policy", str(policy), "--invoice-file", str(invoices)])
    assert json.loads(same.output)["reconciliation"] == reconciliation
    table = runner.invoke(app, ["report", "chargeback", "--period", "2026-11", "--db", db, "--policy", str(policy),
                                "--invoice-file", str(invoices)])
    assert "2026-11-01 00:00-2026-11-01 04:00 UTC (4 h, invoice only): 1 USD" in table.output


def test_bad_invoice_options_are_refused(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    for args, said in ((["--invoice", "openai"], "use PROVIDER=TOTAL"),
                       (["--invoice", "openai=1", "--invoice", "openai=2"], "given twice"),
                       (["--invoice", "openai=1", "--invoice-total", "3"], "not both")):
        result = runner.invoke(app, ["report", "chargeback", "--period", "2026-11", "--db", db, *args])
        assert result.exit_code == 1 and said in result.output
