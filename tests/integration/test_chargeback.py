"""costwarden report chargeback and costwarden close, over real SQLite ledgers."""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.money import nanos_to_usd, usd_to_nanos
from costwarden.core.periods import month_bounds
from costwarden.ledger import Ledger
from costwarden.ledger.engine import normalize_url
from costwarden.policy import parse_policy
from costwarden.reports.focus import MANDATORY
from costwarden.reports.render import CSV_COLUMNS
from gateway_fixtures import Gateway
from ledger_helpers import on_ledger

runner = CliRunner()

POLICY = """
version: 1
timezone: America/New_York
upstreams:
  openai:    {type: openai,    base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  anthropic: {type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
models:
  gpt-4o:      {provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25, downgrade_to: gpt-4o-mini}
  gpt-4o-mini: {provider: openai, tier: 1, input: 0.15, output: 0.60, cached_input: 0.075}
  tiny:        {provider: openai, tier: 1, input: 0.0001, output: 0.0003}   # fractions of a nanodollar per token
attribution: {require: false}
departments:
  ENGINEERING:
    name: Engineering
    cost_center: CC-100
    gl_account: "6100"
    budgets:
      - {limit: 20, period: weekly, action: alert}
      - {limit: 5000, period: monthly, action: reject}
  MARKETING:
    name: Marketing
    cost_center: CC-200
    budgets: [{limit: 1000, period: monthly, action: alert}]
  HR:
    budgets: [{limit: 200, period: monthly, action: reject}]
  SALES: {}
"""
CATALOG = parse_policy(POLICY).catalog
HEADER = ("period,department_id,department_name,cost_center,requests,input_tokens,cached_input_tokens,"
          "output_tokens,usage_cost_usd,shared_cost_usd,total_cost_usd,share_pct,budget_usd,utilization_pct")
OCTOBER = datetime(2026, 10, 10, 15, tzinfo=UTC)


def event(ident: str, department: str, model: str, at: datetime, input_tokens: int, cached: int, output: int,
          finished: datetime | None = None) -> UsageEvent:
    spec = CATALOG[model]
    cost = spec.cost(input_tokens, output, cached)
    return UsageEvent(id=ident, admitted_at=at, finished_at=finished or at + timedelta(seconds=2),
                      department=department, model_requested=model, model_served=model, provider=spec.provider,
                      endpoint="/v1/chat/completions", input_tokens=input_tokens, cached_input_tokens=cached,
                      output_tokens=output, cost_nanos=cost, estimate_nanos=cost, price_version=spec.price_version)


def refused(ident: str, department: str, at: datetime = OCTOBER) -> Rejection:
    return Rejection(id=ident, at=at, department=department, model_requested="gpt-4o", code="budget_exceeded",
                     message="no", http_status=429)


def seed(db: str, events: list[UsageEvent], rejections: Sequence[Rejection] = ()) -> None:
    async def work(ledger: Ledger) -> None:
        await ledger.record_many(events)
        for rejection in rejections:
            await ledger.record_rejection(rejection)

    on_ledger(work, db)


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def policy_file(tmp_path: Path) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return str(path)


@pytest.fixture
def october(tmp_path: Path) -> str:
    """A ledger with a small, hand-checkable October 2026 (America/New_York)."""
    db = f"sqlite:///{tmp_path}/ledger.db"
    seed(db, [
        event("eng-1", "ENGINEERING", "gpt-4o", OCTOBER, 1_000_000, 200_000, 100_000),  # $3.25
        event("eng-2", "ENGINEERING", "gpt-4o", OCTOBER + timedelta(days=1), 1_000_000, 200_000, 100_000),
        event("mkt-1", "MARKETING", "gpt-4o-mini", OCTOBER, 2_000_000, 0, 500_000),  # $0.60
        event("hr-1", "HR", "tiny", OCTOBER, 1, 0, 1),  # 400 picodollars, charged 1 nanodollar
        event("none-1", "UNATTRIBUTED", "gpt-4o", OCTOBER, 400_000, 0, 0),  # $1.00, a shared cost
        # 23:30 on 31 October in New York: October, although it is November in UTC
        event("legacy-1", "LEGACY", "gpt-4o-mini", datetime(2026, 11, 1, 3, 30, tzinfo=UTC), 1_000_000, 0, 0),
        # 22:00 on 30 September in New York: not October
        event("eng-sept", "ENGINEERING", "gpt-4o", datetime(2026, 10, 1, 2, tzinfo=UTC), 10**6, 0, 10**6),
    ], [refused("r1", "HR"), refused("r2", "HR"), refused("r3", "MARKETING"),
        refused("r-sept", "HR", datetime(2026, 9, 30, 12, tzinfo=UTC))])
    return db


def report(db: str, policy: str | None, *args: str) -> str:
    code, out = cli("report", "chargeback", "--db", db, *(("--policy", policy) if policy else ()), *args)
    assert code == 0, out
    return out


def said(output: str) -> str:
    """Console output with its line wrapping undone."""
    return " ".join(output.split())


def rows_of(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def cents(text: str) -> int:
    return usd_to_nanos(text) // 10_000_000


# -- CSV ------------------------------------------------------------------------------------------------


def test_csv_has_the_contract_columns_and_exact_rows(october: str, policy_file: str) -> None:
    out = report(october, policy_file, "--period", "2026-10", "--format", "csv")
    lines = out.splitlines()
    assert lines[0].startswith(HEADER + ",") and tuple(lines[0].split(",")) == CSV_COLUMNS
    assert lines[1:] == [
        "2026-10,ENGINEERING,Engineering,CC-100,2,2000000,400000,200000,6.50,0.90,7.40,89.65,5000.00,0.13,,6100,0,usage,",
        "2026-10,HR,HR,,1,1,0,1,0.00,0.00,0.00,0.00,200.00,0.00,,,2,usage,",
        "2026-10,LEGACY,LEGACY,,1,1000000,0,0,0.15,0.02,0.17,2.07,,,,,0,usage,",
        "2026-10,MARKETING,Marketing,CC-200,1,2000000,0,500000,0.60,0.08,0.68,8.28,1000.00,0.06,,,1,usage,",
        "2026-10,SALES,SALES,,0,0,0,0,0.00,0.00,0.00,0.00,,,,,0,usage,",
    ]


def test_output_file_and_the_stored_policy(october: str, policy_file: str, tmp_path: Path) -> None:
    on_ledger(lambda ledger: ledger.store_policy(POLICY), october)
    target = tmp_path / "out.csv"
    assert report(october, None, "--period", "2026-10", "--format", "csv", "--output", str(target)) == ""
    assert target.read_text() == report(october, policy_file, "--period", "2026-10", "--format", "csv")


def test_statement_sums_reconcile_to_the_ledger_to_the_cent(ledger_url: str, policy_file: str) -> None:
    db = ledger_url  # SQLite and PostgreSQL
    rng = random.Random(7)
    departments = ["ENGINEERING", "MARKETING", "HR", "SALES", "UNATTRIBUTED", "OLD-TEAM"]
    events = []
    for i in range(400):
        at = datetime(2026, 10, 1, 4, tzinfo=UTC) + timedelta(seconds=rng.randrange(31 * 86400))
        input_tokens = rng.randrange(1, 200_000)
        events.append(event(f"e{i}", rng.choice(departments), rng.choice(["gpt-4o", "gpt-4o-mini"]), at,
                            input_tokens, rng.randrange(input_tokens), rng.randrange(30_000)))
    seed(db, events)
    start, end = month_bounds("2026-10", parse_policy(POLICY).timezone)
    (ledger_total,) = on_ledger(lambda ledger: ledger.totals(start, end), db)
    (unattributed,) = on_ledger(lambda ledger: ledger.totals(start, end, where={"department": "UNATTRIBUTED"}), db)
    rows = rows_of(report(db, policy_file, "--period", "2026-10", "--format", "csv"))
    assert [r["department_id"] for r in rows] == ["ENGINEERING", "HR", "MARKETING", "OLD-TEAM", "SALES"]
    usage_cents = sum(cents(r["usage_cost_usd"]) for r in rows)
    attributed = ledger_total.cost_nanos - unattributed.cost_nanos
    assert usage_cents == round(Decimal(attributed) / 10**7)
    assert sum(cents(r["total_cost_usd"]) for r in rows) == round(Decimal(ledger_total.cost_nanos) / 10**7)
    assert sum(cents(r["shared_cost_usd"]) for r in rows) == (
        round(Decimal(ledger_total.cost_nanos) / 10**7) - usage_cents)
    assert sum(int(r["requests"]) for r in rows) == ledger_total.requests - unattributed.requests
    assert sum(int(r["input_tokens"]) for r in rows) == ledger_total.input_tokens - unattributed.input_tokens
    assert sum(Decimal(r["share_pct"]) for r in rows) == Decimal("100.00")
    for row in rows:
        assert cents(row["total_cost_usd"]) == sum(cents(row[c]) for c in ("usage_cost_usd", "shared_cost_usd"))
    everything = rows_of(report(db, policy_file, "--period", "2026-10", "--format", "focus"))
    focus = [r for r in everything if r["ChargeCategory"] == "Usage"]
    assert sum(usd_to_nanos(r["BilledCost"]) for r in focus) == ledger_total.cost_nanos
    assert sum(Decimal(r["ConsumedQuantity"]) for r in focus if r["x_TokenType"] != "output") == ledger_total.input_tokens
    assert sum(Decimal(r["ConsumedQuantity"]) for r in focus if r["x_TokenType"] == "output") == ledger_total.output_tokens
    # with the allocated shared costs (which hold the unattributed usage), the rows tie to the statement
    statement_cents = Decimal(sum(cents(r["total_cost_usd"]) for r in rows))
    assert abs(sum(Decimal(r["BilledCost"]) for r in everything) * 100 - statement_cents) < 1
    document = json.loads(report(db, policy_file, "--period", "2026-10", "--format", "json"))
    assert usd_to_nanos(document["totals"]["ledger_cost_usd"]) == attributed
    assert usd_to_nanos(document["shared_costs"]["unattributed"]["cost_usd"]) == unattributed.cost_nanos


# -- shared costs and the invoice -------------------------------------------------------------------


def shared_file(tmp_path: Path, body: str, name: str = "shared.yaml") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_shared_cost_methods(october: str, policy_file: str, tmp_path: Path) -> None:
    def allocation(body: str, name: str) -> dict[str, tuple[str, str]]:
        rows = rows_of(report(october, policy_file, "--period", "2026-10", "--format", "csv",
                              "--shared-costs", shared_file(tmp_path, body, name)))
        return {r["department_id"]: (r["shared_cost_usd"], r["total_cost_usd"]) for r in rows}

    even = allocation("method: even\nitems:\n  - {name: Platform fee, amount_usd: 500.00}\n", "even.yaml")
    assert {k: v[0] for k, v in even.items()} == dict.fromkeys(["ENGINEERING", "HR", "LEGACY", "MARKETING", "SALES"],
                                                               "100.20")  # ($500 + $1.00 unattributed) / 5
    fixed = allocation('{"method": "fixed", "weights": {"ENGINEERING": 3, "MARKETING": 1},'
                       ' "items": [{"name": "Platform fee", "amount_usd": 500}]}', "fixed.json")
    assert fixed["ENGINEERING"] == ("375.75", "382.25") and fixed["MARKETING"] == ("125.25", "125.85")
    assert fixed["HR"] == fixed["SALES"] == ("0.00", "0.00") and fixed["LEGACY"] == ("0.00", "0.15")
    proportional = allocation("items: [{name: Fee, amount_usd: 7.25}]\n", "proportional.yaml")
    # $8.25 of shared costs in proportion to usage ($6.50, $0.60, $0.15 and one nanodollar)
    assert proportional["ENGINEERING"] == ("7.40", "13.90") and proportional["MARKETING"] == ("0.68", "1.28")
    assert proportional["LEGACY"] == ("0.17", "0.32") and proportional["HR"] == ("0.00", "0.00")


def test_invoice_variance_is_shown_and_allocated(october: str, policy_file: str, tmp_path: Path) -> None:
    shared = shared_file(tmp_path, "items:\n  - {name: Platform fee, amount_usd: 500}\n")
    args = ("--period", "2026-10", "--shared-costs", shared, "--invoice-total", "600")
    rows = rows_of(report(october, policy_file, *args, "--format", "csv"))
    assert sum(cents(r["total_cost_usd"]) for r in rows) == 600_00
    assert sum(cents(r["variance_usd"]) for r in rows) == 600_00 - 7_25 - 501_00
    engineering = next(r for r in rows if r["department_id"] == "ENGINEERING")
    assert cents(engineering["total_cost_usd"]) == sum(
        cents(engineering[c]) for c in ("usage_cost_usd", "shared_cost_usd", "variance_usd"))
    document = json.loads(report(october, policy_file, *args, "--format", "json"))
    assert document["reconciliation"] == {
        "invoice_total_usd": "600", "usage_usd": "7.250000001", "shared_usd": "501",
        "variance_usd": "91.749999999", "allocated_usd": "91.75"}
    assert document["totals"]["total_cost_usd"] == "600.00"
    table = report(october, policy_file, *args)
    assert "Reconciliation: invoice $600.00" in table and "variance 91.749999999 USD" in table
    negative = rows_of(report(october, policy_file, "--period", "2026-10", "--invoice-total", "$5.00", "--format", "csv"))
    assert sum(cents(r["variance_usd"]) for r in negative) == 5_00 - 8_25
    assert sum(cents(r["total_cost_usd"]) for r in negative) == 5_00


# -- JSON, table, FOCUS -----------------------------------------------------------------------------


def test_json_has_rejections_models_and_totals_equal_to_the_lines(october: str, policy_file: str) -> None:
    document = json.loads(report(october, policy_file, "--period", "2026-10", "--format", "json"))
    assert (document["period"], document["timezone"], document["status"]) == ("2026-10", "America/New_York", "open")
    assert document["start"] == "2026-10-01T04:00:00+00:00" and document["end"] == "2026-11-01T04:00:00+00:00"
    lines = {line["department_id"]: line for line in document["lines"]}
    assert (lines["HR"]["rejected_requests"], lines["MARKETING"]["rejected_requests"]) == (2, 1)
    assert lines["ENGINEERING"]["models"] == [{
        "model": "gpt-4o", "provider": "openai", "tier": 3, "requests": 2, "input_tokens": 2_000_000,
        "cached_input_tokens": 400_000, "output_tokens": 200_000, "cost_usd": "6.5"}]
    assert lines["HR"]["ledger_cost_usd"] == "0.000000001" and lines["HR"]["budget_usd"] == "200.00"
    assert lines["SALES"]["budget_usd"] is None and lines["SALES"]["utilization_pct"] is None
    totals = document["totals"]
    for name in ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "rejected_requests"):
        assert totals[name] == sum(line[name] for line in document["lines"])
    for name in ("usage_cost_usd", "shared_cost_usd", "total_cost_usd", "share_pct"):
        assert Decimal(totals[name]) == sum(Decimal(line[name]) for line in document["lines"])
    assert Decimal(totals["ledger_cost_usd"]) == sum(Decimal(line["ledger_cost_usd"]) for line in document["lines"])
    for line in document["lines"]:
        assert Decimal(line["ledger_cost_usd"]) == sum(Decimal(m["cost_usd"]) for m in line["models"])
    assert totals["total_cost_usd"] == "8.25" and totals["variance_usd"] is None
    assert document["shared_costs"]["unattributed"]["cost_usd"] == "1"
    assert document["reconciliation"] is None


def test_table_for_people(october: str, policy_file: str) -> None:
    out = report(october, policy_file, "--period", "2026-10")
    assert "Chargeback 2026-10 (America/New_York, open)" in out
    total_row = next(line for line in out.splitlines() if "TOTAL" in line)
    assert "$7.25" in total_row and "$1.00" in total_row and "$8.25" in total_row and "100.00" in total_row
    assert "Unattributed calls: $1.00 (1 calls)" in out


def test_focus_rows_have_the_mandatory_columns_and_add_up_to_the_ledger(october: str, policy_file: str) -> None:
    everything = rows_of(report(october, policy_file, "--period", "2026-10", "--format", "focus"))
    rows = [r for r in everything if r["ChargeCategory"] == "Usage"]
    # the unattributed $1.00 leaves its usage rows and is allocated as shared costs, to the cent
    adjustments = [r for r in everything if r["ChargeCategory"] == "Adjustment"]
    assert sum(usd_to_nanos(r["BilledCost"]) for r in adjustments) == 0
    assert {r["ChargeDescription"].split(",")[0] for r in adjustments} == {
        "Unattributed usage moved to shared costs", "Shared costs allocated (proportional)"}
    assert set(MANDATORY) <= set(rows[0]) and {"x_DepartmentId", "x_DepartmentName", "x_CostCenter", "x_Model",
                                                 "x_Tier", "x_TokenType"} <= set(rows[0])
    for row in rows:
        assert all(row[column] for column in MANDATORY if column != "ChargeClass")
        assert (row["ServiceCategory"], row["ConsumedUnit"], row["ChargeCategory"], row["BillingCurrency"]) == (
            "AI and Machine Learning", "Tokens", "Usage", "USD")
        # billing periods are the providers' UTC months; charge periods the statement's
        month = row["ChargePeriodStart"][:7]
        assert row["BillingPeriodStart"] == f"{month}-01T00:00:00Z"
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"] < row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        assert "2026-10-01T04:00:00Z" <= row["ChargePeriodStart"] < row["ChargePeriodEnd"] <= "2026-11-01T04:00:00Z"
        assert "e" not in row["BilledCost"].lower() and "e" not in row["ListCost"].lower()
    assert sum(usd_to_nanos(r["BilledCost"]) for r in rows) == 7_250_000_001 + 1_000_000_000
    engineering = {r["x_TokenType"]: r for r in rows if r["x_DepartmentId"] == "ENGINEERING"
                   and r["ChargePeriodStart"] == "2026-10-10T00:00:00Z"}
    assert {t: (r["BilledCost"], r["ConsumedQuantity"], r["PricingQuantity"], r["ListUnitPrice"])
            for t, r in engineering.items()} == {
        "input": ("2.0", "800000.0", "0.8", "2.5"), "cached_input": ("0.25", "200000.0", "0.2", "1.25"),
        "output": ("1.0", "100000.0", "0.1", "10.0")}
    assert engineering["input"]["x_DepartmentName"] == "Engineering" and engineering["input"]["x_CostCenter"] == "CC-100"
    assert engineering["input"]["x_Tier"] == "3" and engineering["input"]["x_Model"] == "gpt-4o"
    assert engineering["input"]["ProviderName"] == "OpenAI" and engineering["input"]["PricingUnit"] == "1000000 Tokens"
    hr = [r for r in rows if r["x_DepartmentId"] == "HR"]  # 1 input + 1 output token, charged one nanodollar
    assert [(r["x_TokenType"], r["BilledCost"], r["ListCost"], r["ListUnitPrice"]) for r in hr] == [
        ("input", "0.0", "0.0000000001", "0.0001"), ("output", "0.000000001", "0.0000000003", "0.0003")]
    legacy = next(r for r in rows if r["x_DepartmentId"] == "LEGACY")  # clipped to the billing period
    assert (legacy["ChargePeriodStart"], legacy["ChargePeriodEnd"]) == ("2026-11-01T00:00:00Z", "2026-11-01T04:00:00Z")


# -- closing ----------------------------------------------------------------------------------------


def test_close_freezes_the_statement_and_late_usage_is_a_correction(ledger_url: str, policy_file: str) -> None:
    db = ledger_url  # SQLite and PostgreSQL
    september = datetime(2026, 9, 15, 12, tzinfo=UTC)
    seed(db, [event("s1", "ENGINEERING", "gpt-4o", september, 400_000, 0, 0),  # $1.00
              event("s2", "HR", "gpt-4o-mini", september, 1_000_000, 0, 0)])  # $0.15
    before = report(db, policy_file, "--period", "2026-09", "--format", "csv")
    code, out = cli("close", "--period", "2026-09", "--db", db, "--policy", policy_file)
    assert code == 0 and "Closed 2026-09 (America/New_York): 4 lines, total $1.15." in said(out)

    # A call admitted in September that was in flight during a crash is settled on restart, now.
    async def crash_and_restart(ledger: Ledger) -> None:
        ledger.begin(InflightCall(id="inflight-1", admitted_at=september + timedelta(days=10), department="HR",
                                  model_requested="gpt-4o", model_served="gpt-4o", provider="openai",
                                  endpoint="/v1/chat/completions", estimate_input_tokens=100_000,
                                  estimate_output_tokens=25_000, estimate_nanos=500_000_000,
                                  price_version=CATALOG["gpt-4o"].price_version))
        recovered = await ledger.recover_interrupted(datetime.now(UTC))
        assert [e.id for e in recovered] == ["inflight-1"]

    on_ledger(crash_and_restart, db)
    seed(db, [event("late-unattributed", "UNATTRIBUTED", "gpt-4o", september, 40_000, 0, 0),  # $0.10
              event("o1", "SALES", "gpt-4o-mini", OCTOBER, 1_000_000, 0, 0)])  # $0.15 in October
    assert report(db, policy_file, "--period", "2026-09", "--format", "csv") == before  # frozen
    frozen = json.loads(report(db, policy_file, "--period", "2026-09", "--format", "json"))
    assert frozen["status"] == "closed" and frozen["closed_at"] and frozen["totals"]["total_cost_usd"] == "1.15"

    october_rows = rows_of(report(db, policy_file, "--period", "2026-10", "--format", "csv"))
    correction = october_rows[-1]
    assert {k: correction[k] for k in ("department_id", "line_type", "corrects_period", "requests", "input_tokens",
                                       "output_tokens", "usage_cost_usd", "shared_cost_usd", "total_cost_usd")} == {
        "department_id": "HR", "line_type": "correction", "corrects_period": "2026-09", "requests": "1",
        "input_tokens": "100000", "output_tokens": "25000", "usage_cost_usd": "0.50", "shared_cost_usd": "0.00",
        "total_cost_usd": "0.50"}
    assert [r["line_type"] for r in october_rows].count("correction") == 1
    assert sum(cents(r["total_cost_usd"]) for r in october_rows) == 15 + 50 + 10  # late unattributed is shared
    focus = rows_of(report(db, policy_file, "--period", "2026-10", "--format", "focus"))
    corrections = [r for r in focus if r["ChargeClass"] == "Correction"]
    assert {r["x_DepartmentId"] for r in corrections} == {"HR", "UNATTRIBUTED"}
    assert all(r["ChargePeriodStart"].startswith("2026-09-") for r in corrections)
    assert sum(usd_to_nanos(r["BilledCost"]) for r in corrections) == 600_000_000
    assert sum(usd_to_nanos(r["BilledCost"]) for r in focus if r["ChargeCategory"] == "Usage") == 750_000_000

    # Closing October posts the corrections in its frozen statement; later September usage goes to November.
    assert cli("close", "--period", "2026-10", "--db", db, "--policy", policy_file)[0] == 0
    seed(db, [event("later", "ENGINEERING", "gpt-4o", september, 800_000, 0, 0)])  # $2.00
    closed_october = rows_of(report(db, policy_file, "--period", "2026-10", "--format", "csv"))
    assert closed_october == october_rows
    november = rows_of(report(db, policy_file, "--period", "2026-11", "--format", "csv"))
    assert [(r["department_id"], r["corrects_period"], r["usage_cost_usd"]) for r in november
            if r["line_type"] == "correction"] == [("ENGINEERING", "2026-09", "2.00")]


def test_close_refusals(october: str, policy_file: str, tmp_path: Path) -> None:
    code, out = cli("close", "--period", "2999-01", "--db", october, "--policy", policy_file)
    assert code == 1 and "2999-01 has not ended: it ends 2999-02-01 00:00 America/New_York" in said(out)
    assert cli("close", "--period", "2026-10", "--db", october, "--policy", policy_file)[0] == 0
    code, out = cli("close", "--period", "2026-10", "--db", october, "--policy", policy_file)
    assert code == 1 and "2026-10 was closed on" in said(out)
    shared = shared_file(tmp_path, "method: even\n")
    code, out = cli("report", "chargeback", "--period", "2026-10", "--db", october, "--shared-costs", shared)
    assert code == 1 and "2026-10 is closed" in said(out)
    code, out = cli("close", "--period", "2026-09", "--db", f"sqlite:///{tmp_path}/empty.db")
    assert code == 1 and "no policy" in said(out)


def test_a_period_closed_without_a_statement_is_live_until_frozen(october: str, policy_file: str) -> None:
    closed_at = datetime(2026, 11, 3, 9, tzinfo=UTC)
    assert on_ledger(lambda ledger: ledger.close_period("2026-10", now=closed_at), october)
    live = json.loads(report(october, policy_file, "--period", "2026-10", "--format", "json"))
    assert (live["status"], live["closed_at"], live["totals"]["total_cost_usd"]) == ("closed", closed_at.isoformat(), "8.25")
    assert cli("close", "--period", "2026-10", "--db", october, "--policy", policy_file)[0] == 0
    seed(october, [event("late", "SALES", "gpt-4o", OCTOBER, 400_000, 0, 0)])
    frozen = json.loads(report(october, None, "--period", "2026-10", "--format", "json"))
    assert (frozen["closed_at"], frozen["totals"]["total_cost_usd"]) == (closed_at.isoformat(), "8.25")


def test_a_database_from_before_statements_is_migrated(october: str, policy_file: str) -> None:
    engine = create_engine(normalize_url(october))
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE statements"))
            conn.execute(text("DELETE FROM schema_migrations WHERE version = 2"))
    finally:
        engine.dispose()
    assert cli("close", "--period", "2026-10", "--db", october, "--policy", policy_file)[0] == 0
    assert json.loads(report(october, None, "--period", "2026-10", "--format", "json"))["status"] == "closed"


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (("--period", "2026-13"), "bad billing period '2026-13'"),
    (("--period", "November"), "use YYYY-MM"),
    (("--period", "0001-01"), "bad billing period '0001-01'"),  # before the earliest UTC time in New York
    (("--period", "2026-10", "--format", "xml"), "unknown format 'xml'"),
    (("--period", "2026-10", "--invoice-total", "lots"), "is not an amount in USD"),
    (("--period", "2026-10", "--invoice-total", "-5"), "negative"),
    (("--period", "2026-10", "--shared-costs", "/nonexistent/shared.yaml"), "file not found"),
])
def test_bad_options_are_refused_with_a_clear_message(october: str, policy_file: str, args: tuple[str, ...],
                                                      message: str) -> None:
    code, out = cli("report", "chargeback", "--db", october, "--policy", policy_file, *args)
    assert code == 1 and message in said(out)


def test_a_bad_shared_costs_file_names_each_problem(october: str, policy_file: str, tmp_path: Path) -> None:
    bad = shared_file(tmp_path, "method: weighted\nitems:\n  - {name: Fee, amount_usd: lots}\n")
    code, out = cli("report", "chargeback", "--period", "2026-10", "--db", october, "--policy", policy_file,
                    "--shared-costs", bad)
    text = said(out)
    assert code == 1 and "is invalid" in text
    assert "method: must be one of proportional, even, fixed (got 'weighted') (line 1)" in text
    assert "items[0].amount_usd: must be a number (got 'lots') (line 3)" in text
    unknown = shared_file(tmp_path, "method: fixed\nweights: {LEGAL: 1}\n", "unknown.yaml")
    code, out = cli("report", "chargeback", "--period", "2026-10", "--db", october, "--policy", policy_file,
                    "--shared-costs", unknown)
    assert code == 1 and "LEGAL has no line on the 2026-10 statement" in said(out)


# -- through a running gateway ----------------------------------------------------------------------


def test_a_gateway_ledger_reconciles(gateway: Gateway) -> None:
    for department, model, prompt in [("SALES", "gpt-4o-mini", "hello"), ("SALES", "gpt-4o", "a longer question"),
                                    ("MARKETING", "gpt-4o-mini", "slogan"), ("HR", "gpt-4o-mini", "policy")]:
        response = httpx.post(f"{gateway.url}/v1/chat/completions",
                              headers={"Authorization": f"Bearer {gateway.keys[department]}"},
                              json={"model": model, "messages": [{"role": "user", "content": prompt}]})
        assert response.status_code == 200, response.text
    events: list[Any] = gateway.ledger_query(lambda ledger: ledger.list_events())
    zone = parse_policy(POLICY).timezone
    period = events[0].admitted_at.astimezone(zone).strftime("%Y-%m")
    start, end = month_bounds(period, zone)
    by_department = {row["department"]: row for row in gateway.ledger_query(
        lambda ledger: ledger.totals(start, end, group_by=["department"]))}
    rows = rows_of(report(gateway.db_url, None, "--period", period, "--format", "csv"))  # the server's policy
    assert {"MARKETING", "ENGINEERING", "HR", "SALES", "SUPPORT"} <= {r["department_id"] for r in rows}
    for row in rows:
        ledger_row = by_department.get(row["department_id"])
        assert int(row["requests"]) == (ledger_row.requests if ledger_row else 0)
        exact = nanos_to_usd(ledger_row.cost_nanos if ledger_row else 0)
        assert abs(Decimal(row["usage_cost_usd"]) - exact) < Decimal("0.01")
    total = sum(row.cost_nanos for row in by_department.values())
    assert sum(cents(r["total_cost_usd"]) for r in rows) == round(Decimal(total) / 10**7)
    focus = rows_of(report(gateway.db_url, None, "--period", period, "--format", "focus"))
    assert sum(usd_to_nanos(r["BilledCost"]) for r in focus) == total
    assert {r["x_Model"] for r in focus} == {"gpt-4o-mini", "gpt-4o"}
