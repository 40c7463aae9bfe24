"""The statement broken down by team, user and project tag, and its GL journal entry."""

from __future__ import annotations

import asyncio
import csv
import io
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
  gpt-4o: {provider: openai, tier: 3, input: 2.50, output: 10.00}
departments:
  ENGINEERING: {cost_center: CC-100, gl_account: "6100", teams: {PLATFORM: {}, WEB: {}}}
  MARKETING: {cost_center: CC-200, gl_account: "6200"}
  HR: {}
"""
CATALOG = parse_policy(POLICY).catalog


def event(ident: str, department: str, tokens: int, team: str | None = None, user: str | None = None,
          project: str | None = None) -> UsageEvent:
    spec, at = CATALOG["gpt-4o"], datetime(2026, 11, 10, 15, tzinfo=UTC)
    cost = spec.cost(tokens, 0)
    return UsageEvent(id=ident, admitted_at=at, finished_at=at + timedelta(seconds=1), department=department,
                      model_requested="gpt-4o", model_served="gpt-4o", provider="openai",
                      endpoint="/v1/chat/completions", team=team, user=user,
                      tags={"project": project} if project else {}, input_tokens=tokens, cost_nanos=cost,
                      estimate_nanos=cost, price_version=spec.price_version)


def setup(tmp_path: Path) -> tuple[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    events = [
        event("a", "ENGINEERING", 400_000, "PLATFORM", "ann", "atlas"),  # $1.00
        event("b", "ENGINEERING", 800_000, "WEB", "bob", "atlas"),  # $2.00
        event("c", "ENGINEERING", 1_000, "WEB", "bob"),  # $0.0025
        event("d", "MARKETING", 1_200_000, None, "cy", "zephyr"),  # $3.00
        event("e", "HR", 2_000),  # $0.005
    ]

    async def work() -> None:
        ledger = await Ledger.open(db)
        try:
            await ledger.record_many(events)
        finally:
            await ledger.close()

    asyncio.run(work())
    return db, str(policy)


def rows(*args: str) -> list[dict[str, str]]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


def test_each_department_by_team_user_and_project(tmp_path: Path) -> None:
    db, policy = setup(tmp_path)
    base = ("report", "chargeback", "--period", "2026-11", "--db", db, "--policy", policy, "--format", "csv")
    by_team = {(r["department_id"], r["value"]): r for r in rows(*base, "--by", "team")}
    assert by_team[("ENGINEERING", "PLATFORM")]["ledger_cost_usd"] == "1"
    assert by_team[("ENGINEERING", "WEB")]["ledger_cost_usd"] == "2.0025"
    assert by_team[("MARKETING", "(none)")]["requests"] == "1"
    # the line's $3.00 (rounded from $3.0025) is split by largest remainder: 1.00 + 2.00
    assert (by_team[("ENGINEERING", "PLATFORM")]["usage_cost_usd"], by_team[("ENGINEERING", "WEB")]["usage_cost_usd"]) \
        == ("1.00", "2.00")
    by_user = {(r["department_id"], r["value"]): r["requests"] for r in rows(*base, "--by", "user")}
    assert by_user == {("ENGINEERING", "ann"): "1", ("ENGINEERING", "bob"): "2", ("MARKETING", "cy"): "1",
                       ("HR", "(none)"): "1"}
    by_project = {(r["department_id"], r["value"]): r["ledger_cost_usd"] for r in rows(*base, "--by", "tag:project")}
    assert by_project[("ENGINEERING", "atlas")] == "3" and by_project[("ENGINEERING", "(none)")] == "0.0025"
    assert by_project[("MARKETING", "zephyr")] == "3"
    refused = runner.invoke(app, [*base, "--by", "colour"])
    assert refused.exit_code == 1 and "unknown --by" in refused.output


def test_journal_entry_debits_cost_centers_and_credits_clearing(tmp_path: Path) -> None:
    db, policy = setup(tmp_path)
    entry = rows("report", "journal", "--period", "2026-11", "--db", db, "--policy", policy,
                 "--clearing-account", "2990", "--format", "csv")
    table = runner.invoke(app, ["report", "journal", "--period", "2026-11", "--db", db, "--policy", policy])
    assert table.exit_code == 0 and "AI-CLEARING" in table.output  # a table by default, as every report
    assert not table.output.startswith(",".join(entry[0]))
    debits = {(r["account"], r["cost_center"]): r["debit_usd"] for r in entry if r["debit_usd"] != "0.00"}
    # ENGINEERING $3.0025 -> 3.00, MARKETING 3.00, HR $0.005 -> 0.01 (the lines add up to round($6.0075) = $6.01)
    assert debits == {("6100", "CC-100"): "3.00", ("6200", "CC-200"): "3.00", ("UNASSIGNED", "UNASSIGNED"): "0.01"}
    [credit] = [r for r in entry if r["credit_usd"] != "0.00"]
    assert (credit["account"], credit["credit_usd"]) == ("2990", "6.01")
    assert {r["date"] for r in entry} == {"2026-11-30"} and {r["entry"] for r in entry} == {"AI-2026-11"}
