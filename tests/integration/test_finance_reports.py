"""report forecast, report efficiency and simulate over real SQLite ledgers, against hand-computed figures."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.catalog import Catalog
from costwarden.core.events import UsageEvent
from costwarden.core.forecasting import ForecastState
from costwarden.core.money import usd_to_nanos
from costwarden.core.periods import month_bounds
from costwarden.policy import parse_policy
from costwarden.reports.budget_forecast import budget_forecasts
from ledger_helpers import on_ledger

runner = CliRunner()
NEW_YORK = ZoneInfo("America/New_York")

POLICY = """
version: 1
timezone: {tz}
models:
  gpt-4o:      {{provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25, downgrade_to: gpt-4o-mini}}
  gpt-4o-mini: {{provider: openai, tier: 1, input: 0.15, output: 0.60, cached_input: 0.075}}
attribution: {{require: false}}
departments:
  ENGINEERING:
    budgets: [{{limit: {eng_limit}, period: monthly, action: {eng_action}}}]
  MARKETING:
    budgets: [{{limit: 100000, period: monthly, action: alert}}]
"""


def policy_text(tz: str = "America/New_York", eng_limit: str = "5000", eng_action: str = "reject") -> str:
    return POLICY.format(tz=tz, eng_limit=eng_limit, eng_action=eng_action)


def event(ident: str, department: str, at: datetime, catalog: Catalog, input_tokens: int, output: int,
          cached: int = 0, model: str = "gpt-4o", served: str | None = None) -> UsageEvent:
    spec = catalog[served or model]
    cost = spec.cost(input_tokens, output, cached)
    return UsageEvent(id=ident, admitted_at=at, finished_at=at + timedelta(seconds=1), department=department,
                      model_requested=model, model_served=spec.id, provider=spec.provider,
                      endpoint="/v1/chat/completions", input_tokens=input_tokens, cached_input_tokens=cached,
                      output_tokens=output, cost_nanos=cost, estimate_nanos=cost, price_version=spec.price_version,
                      decision="downgrade" if served else "allow")


def office_month(catalog: Catalog) -> list[UsageEvent]:
    """November 2026 in New York: 40 calls an hour 9-17 on weekdays, 3 calls a day on weekends."""
    rng = random.Random(8)
    events = []
    for day in range(1, 31):
        local = datetime(2026, 11, day, tzinfo=NEW_YORK)
        hours = range(9, 17) if local.weekday() < 5 else range(12, 13)
        calls = 40 if local.weekday() < 5 else 3
        for hour in hours:
            for n in range(calls):
                at = (local + timedelta(hours=hour, seconds=n * 80)).astimezone(UTC)
                events.append(event(f"e-{day}-{hour}-{n}", "ENGINEERING", at, catalog,
                                    rng.randint(500, 3500), rng.randint(100, 900)))
    return events


def test_an_office_hours_month_forecasts_within_5_percent_by_day_10(tmp_path: Path) -> None:
    policy = parse_policy(policy_text())
    events = office_month(policy.catalog)
    truth = sum(e.cost_nanos for e in events)
    db = f"sqlite:///{tmp_path}/ledger.db"
    start, end = month_bounds("2026-11", NEW_YORK)

    # The ledger only holds events up to "now" in real life: cut the month at each instant.
    early_db = f"sqlite:///{tmp_path}/early.db"
    day10_at = datetime(2026, 11, 10, 13, tzinfo=NEW_YORK).astimezone(UTC)
    on_ledger(lambda ledger: ledger.record_many([e for e in events if e.admitted_at < day10_at]), db)
    on_ledger(lambda ledger: ledger.record_many([e for e in events if e.admitted_at < datetime(2026, 11, 3, 8, tzinfo=NEW_YORK)]),
        early_db)
    day10 = on_ledger(lambda ledger: budget_forecasts(ledger, policy, start, end, day10_at), db)
    early = on_ledger(lambda ledger: budget_forecasts(
        ledger, policy, start, end, datetime(2026, 11, 3, 8, tzinfo=NEW_YORK).astimezone(UTC)), early_db)

    eng = next(line for line in day10 if line.check.scope.id == "dept:ENGINEERING")
    assert eng.projection.state == ForecastState.PROJECTED
    assert eng.projection.projected is not None
    error = abs(eng.projection.projected - truth) / truth
    assert error < 0.05, f"projected {eng.projection.projected}, true {truth}, off by {error:.2%}"
    assert "weekday" in eng.projection.method
    # Two complete days in: nothing projected.
    early_eng = next(line for line in early if line.check.scope.id == "dept:ENGINEERING")
    assert early_eng.projection.state == ForecastState.INSUFFICIENT and early_eng.projection.projected is None


def test_forecast_cli_json_states_the_method(tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy_text(eng_limit="50"))
    policy = parse_policy(policy_text(eng_limit="50"))
    db = f"sqlite:///{tmp_path}/ledger.db"
    on_ledger(lambda ledger: ledger.record_many(office_month(policy.catalog)), db)
    result = runner.invoke(app, ["report", "forecast", "--period", "2026-11", "--format", "json", "--db", db,
                                 "--policy", str(policy_path)])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    eng = next(row for row in document["rows"] if row["scope"] == "dept:ENGINEERING")
    assert eng["state"] == "period ended"  # November 2026 is over when this runs
    assert Decimal(eng["spent"]) > 50 and eng["limit"] == "50"
    assert eng["limit_reached_on"].startswith("2026-11-")


def test_efficiency_savings_are_exact(tmp_path: Path) -> None:
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(policy_text())
    catalog = parse_policy(policy_text()).catalog
    at = datetime(2026, 11, 5, 15, tzinfo=UTC)
    db = f"sqlite:///{tmp_path}/ledger.db"
    on_ledger(lambda ledger: ledger.record_many([
        # $3.00: 600k x 2.50 + 400k x 1.25 + 100k x 10.00 (per 1M); caching saved 400k x (2.50 - 1.25) = $0.50
        event("a", "ENGINEERING", at, catalog, 1_000_000, 100_000, cached=400_000),
        # asked gpt-4o, served gpt-4o-mini: 100k x 0.15 + 100k x 0.075 + 50k x 0.60 = $0.0525;
        # at gpt-4o: 100k x 2.50 + 100k x 1.25 + 50k x 10.00 = $0.875 -> saved $0.8225;
        # caching saved at the served prices: 100k x (0.15 - 0.075) = $0.0075
        event("b", "ENGINEERING", at, catalog, 200_000, 50_000, cached=100_000, served="gpt-4o-mini"),
        event("c", "MARKETING", at, catalog, 1_000, 0),  # $0.0025, nothing saved
        replace(event("d", "MARKETING", at, catalog, 3_000, 0), customer="ACME"),  # $0.0075, for a customer
    ]), db)
    result = runner.invoke(app, ["report", "efficiency", "--period", "2026-11", "--format", "csv", "--db", db,
                                 "--policy", str(policy_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    eng = next(r for r in rows if r["level"] == "department" and r["department"] == "ENGINEERING")
    assert eng["cached_input_tokens"] == "500000"
    assert Decimal(eng["saved_by_caching_usd"]) == Decimal("0.5075")
    assert Decimal(eng["saved_by_downgrades_usd"]) == Decimal("0.8225")
    assert Decimal(eng["cost_usd"]) == Decimal("3.0525")
    assert eng["tokens_trimmed"] == "0"
    assert Decimal(eng["cost_per_call_usd"]) == Decimal("1.52625")
    big = next(r for r in rows if r["level"] == "model" and r["model"] == "gpt-4o")
    assert big["tier"] == "3" and Decimal(big["cost_per_1m_tokens_usd"]) == Decimal("2.727272727")  # 3 / 1.1
    mini = next(r for r in rows if r["level"] == "model" and r["model"] == "gpt-4o-mini")
    assert Decimal(mini["cost_per_1m_tokens_usd"]) == Decimal("0.21")  # 0.0525 / 0.25
    marketing = next(r for r in rows if r["level"] == "department" and r["department"] == "MARKETING")
    assert Decimal(marketing["saved_by_caching_usd"]) == 0 and Decimal(marketing["saved_by_downgrades_usd"]) == 0
    # Per tier: gpt-4o is tier 3, gpt-4o-mini tier 1; per customer, within its department.
    tiers = {(r["department"], r["tier"]): r for r in rows if r["level"] == "tier"}
    assert set(tiers) == {("ENGINEERING", "1"), ("ENGINEERING", "3"), ("MARKETING", "3")}
    assert (tiers["ENGINEERING", "3"]["calls"], Decimal(tiers["ENGINEERING", "3"]["cost_usd"])) == ("1", Decimal(3))
    assert Decimal(tiers["ENGINEERING", "1"]["cost_per_call_usd"]) == Decimal("0.0525")
    assert Decimal(tiers["MARKETING", "3"]["cost_per_1m_tokens_usd"]) == Decimal("2.5")
    [acme] = [r for r in rows if r["level"] == "customer"]
    assert (acme["customer"], acme["department"], acme["calls"], Decimal(acme["cost_usd"])) == (
        "ACME", "MARKETING", "1", Decimal("0.0075"))
    assert all(r["customer"] == "" for r in rows if r["level"] != "customer")


def daily_quarters(catalog: Catalog) -> list[UsageEvent]:
    """One call a day at noon UTC in November 2026, each exactly $0.25: 96,000 input tokens
    at $2.50 per 1M ($0.24) and 1,000 output tokens at $10.00 per 1M ($0.01)."""
    return [event(f"d-{day}", "ENGINEERING", datetime(2026, 11, day, 12, tzinfo=UTC), catalog, 96_000, 1_000)
            for day in range(1, 31)]


@pytest.mark.parametrize("source", ["ledger", "file"])
def test_simulate_says_the_department_runs_out_on_the_19th(tmp_path: Path, source: str) -> None:
    recorded = parse_policy(policy_text(tz="UTC"))
    events = daily_quarters(recorded.catalog)
    assert all(e.cost_nanos == usd_to_nanos(Decimal("0.25")) for e in events)
    db = f"sqlite:///{tmp_path}/ledger.db"
    on_ledger(lambda ledger: ledger.record_many(events), db)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(policy_text(tz="UTC", eng_limit="4.75"))  # 19 days of $0.25
    where = ["--period", "2026-11", "--db", db]
    if source == "file":
        export = tmp_path / "events.jsonl"
        assert runner.invoke(app, ["ledger", "export", "--db", db, "--output", str(export)]).exit_code == 0
        where = ["--events", str(export)]
    result = runner.invoke(app, ["simulate", "--policy", str(proposed), *where, "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    eng = next(row for row in document["rows"] if row["department"] == "ENGINEERING")
    assert (eng["calls"], eng["allowed"], eng["downgraded"], eng["clamped"], eng["rejected"]) == (30, 19, 0, 0, 11)
    assert Decimal(eng["cost_before_usd"]) == Decimal("7.5") and Decimal(eng["cost_after_usd"]) == Decimal("4.75")
    assert "ran out on 2026-11-19" in eng["budget_runs_out"]
    [budget] = document["budgets_run_out"]
    assert budget["scope"] == "dept:ENGINEERING" and budget["ran_out_on"] == "2026-11-19"


def test_simulate_counts_downgrades_and_keeps_a_roomy_policy_unchanged(tmp_path: Path) -> None:
    recorded = parse_policy(policy_text(tz="UTC"))
    db = f"sqlite:///{tmp_path}/ledger.db"
    on_ledger(lambda ledger: ledger.record_many(daily_quarters(recorded.catalog)), db)
    roomy, tight = tmp_path / "roomy.yaml", tmp_path / "tight.yaml"
    roomy.write_text(policy_text(tz="UTC"))
    tight.write_text(policy_text(tz="UTC", eng_limit="2.60", eng_action="downgrade"))
    same = runner.invoke(app, ["simulate", "--policy", str(roomy), "--period", "2026-11", "--db", db,
                               "--format", "csv"])
    assert same.exit_code == 0, same.output
    [row] = [r for r in csv.DictReader(io.StringIO(same.output)) if r["department"] == "ENGINEERING"]
    assert (row["allowed"], row["rejected"], row["cost_after_usd"], row["budget_runs_out"]) == ("30", "0", "7.5", "")
    down = runner.invoke(app, ["simulate", "--policy", str(tight), "--period", "2026-11", "--db", db,
                               "--format", "json"])
    eng = next(r for r in json.loads(down.output)["rows"] if r["department"] == "ENGINEERING")
    # $2.60 buys 10 days of gpt-4o ($2.50); then the calls fit only on gpt-4o-mini (96,000 x 0.15 +
    # 1,000 x 0.60 per 1M = $0.015): 6 of them ($0.09) fit in the $0.10 left, the other 14 are refused
    assert (eng["allowed"], eng["downgraded"], eng["rejected"]) == (10, 6, 14)
    assert Decimal(eng["cost_after_usd"]) == Decimal("2.59")
    assert "ran out on 2026-11-11" in eng["budget_runs_out"]


def test_simulate_replays_the_current_period_when_given_no_period_or_events(tmp_path: Path) -> None:
    recorded = parse_policy(policy_text(tz="UTC"))
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    db = f"sqlite:///{tmp_path}/ledger.db"
    on_ledger(lambda ledger: ledger.record_many([
        event("now", "ENGINEERING", now - timedelta(seconds=1), recorded.catalog, 1_000, 100),
        event("before", "ENGINEERING", this_month - timedelta(seconds=1), recorded.catalog, 1_000, 100),
    ]), db)
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(policy_text(tz="UTC"))
    result = runner.invoke(app, ["simulate", "--policy", str(proposed), "--db", db, "--format", "json"])
    assert result.exit_code == 0, result.output
    [eng] = [row for row in json.loads(result.output)["rows"] if row["department"] == "ENGINEERING"]
    assert (eng["calls"], eng["allowed"]) == (1, 1)  # last month's call is not this period's
    both = runner.invoke(app, ["simulate", "--policy", str(proposed), "--db", db, "--period", "2026-11",
                               "--events", str(tmp_path / "x.jsonl")])
    assert both.exit_code == 1 and "not both" in both.output
