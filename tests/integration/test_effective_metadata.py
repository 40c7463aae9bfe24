"""Department codes are effective-dated: a cost-center change on the 15th leaves the first half of
the month under the old cost center, in FOCUS and in the journal, before and after the close."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from costwarden.app.bootstrap import running
from costwarden.app.reload import apply_policy
from costwarden.app.settings import Settings
from costwarden.cli import app
from costwarden.core.events import UsageEvent
from costwarden.core.metadata import MetadataVersion
from costwarden.counters import MemoryCounterStore
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from ledger_helpers import on_ledger

runner = CliRunner()
POLICY = """
version: 1
models:
  gpt-4o: {{provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25}}
departments:
  HR: {{name: Human Resources, cost_center: {hr_cc}, gl_account: {hr_gl}{hr_from}}}
  ENG: {{cost_center: CC-ENG, gl_account: "6300"}}
"""
OLD = POLICY.format(hr_cc="CC-OLD", hr_gl='"6100"', hr_from="")
NEW = POLICY.format(hr_cc="CC-NEW", hr_gl='"6200"', hr_from="")
BACKDATED = POLICY.format(hr_cc="CC-NEW", hr_gl='"6200"', hr_from=", effective_from: 2026-11-15")


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def event(ident: str, department: str, when: datetime, input_tokens: int, output_tokens: int) -> UsageEvent:
    spec = parse_policy(OLD).catalog["gpt-4o"]
    cost = spec.cost(input_tokens, output_tokens)
    return UsageEvent(id=ident, admitted_at=when, finished_at=when + timedelta(seconds=1), department=department,
                      model_requested="gpt-4o", model_served="gpt-4o", provider="openai",
                      endpoint="/v1/chat/completions", input_tokens=input_tokens, cached_input_tokens=0,
                      output_tokens=output_tokens, cost_nanos=cost, estimate_nanos=cost,
                      price_version=spec.price_version, decision="allow")


async def start_with(db: str, text: str, now: datetime) -> None:
    async with running(Settings(db_url=db), parse_policy(text), lambda: now, store=MemoryCounterStore()):
        pass


def usage(db: str) -> None:
    # HR: $2.50 on the 3rd and $6.00 on the 20th; ENG: $1.00 on the 10th
    on_ledger(lambda ledger: ledger.record_many([event("hr-3", "HR", at(3), 1_000_000, 0),
                                                 event("hr-20", "HR", at(20), 2_000_000, 100_000),
                                                 event("eng-10", "ENG", at(10), 0, 100_000)]), db)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def focus_codes(db: str) -> list[tuple[str, str, str, str, str]]:
    rows = csv.DictReader(io.StringIO(cli("report", "chargeback", "--period", "2026-11", "--format", "focus",
                                          "--db", db)))
    return sorted({(row["x_DepartmentId"], row["ChargePeriodStart"][:10], row["x_CostCenter"], row["x_GlAccount"],
                    row["Tags"]) for row in rows if row["ChargeCategory"] == "Usage"})


def journal(db: str) -> list[tuple[str, str, str, str]]:
    rows = csv.DictReader(io.StringIO(cli("report", "journal", "--period", "2026-11", "--format", "csv", "--db", db)))
    return [(row["account"], row["cost_center"], row["debit_usd"], row["credit_usd"]) for row in rows]


EXPECTED_FOCUS = [
    ("ENG", "2026-11-10", "CC-ENG", "6300", '{"cost_center": "CC-ENG", "gl_account": "6300"}'),
    ("HR", "2026-11-03", "CC-OLD", "6100", '{"cost_center": "CC-OLD", "gl_account": "6100"}'),
    ("HR", "2026-11-20", "CC-NEW", "6200", '{"cost_center": "CC-NEW", "gl_account": "6200"}'),
]
EXPECTED_JOURNAL = [("6100", "CC-OLD", "2.50", "0.00"), ("6200", "CC-NEW", "6.00", "0.00"),
                    ("6300", "CC-ENG", "1.00", "0.00"), ("AI-CLEARING", "", "0.00", "9.50")]


def test_a_cost_center_change_on_the_15th_splits_the_month(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    asyncio.run(start_with(db, OLD, at(1, 8)))
    asyncio.run(start_with(db, NEW, at(15, 9)))  # adopted on the 15th: in force from that UTC day
    usage(db)
    assert [r[:4] for r in focus_codes(db)] == [r[:4] for r in EXPECTED_FOCUS]
    assert journal(db) == EXPECTED_JOURNAL
    # the statement keeps one line per department, under the codes of the period's last day
    lines = {row["department_id"]: row for row in csv.DictReader(io.StringIO(
        cli("report", "chargeback", "--period", "2026-11", "--format", "csv", "--db", db)))}
    assert (lines["HR"]["cost_center"], lines["HR"]["total_cost_usd"]) == ("CC-NEW", "8.50")
    # a closed period keeps the split: the frozen statement carries the versions it used
    cli("close", "--period", "2026-11", "--db", db)
    assert focus_codes(db) == EXPECTED_FOCUS
    assert journal(db) == EXPECTED_JOURNAL


def test_a_back_dated_change_and_replicas_record_one_version(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    asyncio.run(start_with(db, OLD, at(1, 8)))
    for _ in range(2):  # two replicas start with it on the 25th: one version, dated the 15th
        asyncio.run(start_with(db, BACKDATED, at(25)))
    usage(db)
    assert on_ledger(lambda ledger: ledger.department_metadata(), db) == [
        MetadataVersion("ENG", date(2026, 11, 1), "ENG", "CC-ENG", "6300"),
        MetadataVersion("HR", date(2026, 11, 1), "Human Resources", "CC-OLD", "6100"),
        MetadataVersion("HR", date(2026, 11, 15), "Human Resources", "CC-NEW", "6200"),
    ]
    assert focus_codes(db) == EXPECTED_FOCUS
    assert journal(db) == EXPECTED_JOURNAL


async def test_a_reload_changes_codes_from_its_day_and_a_change_back_that_day_replaces_it(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    now = [at(1, 8)]
    async with running(Settings(db_url=db), parse_policy(OLD), lambda: now[0], store=MemoryCounterStore()) as runtime:
        now[0] = at(15, 9)
        await apply_policy(runtime, parse_policy(NEW))
        assert [v.cost_center for v in await runtime.ledger.department_metadata() if v.department == "HR"] == [
            "CC-OLD", "CC-NEW"]
        now[0] = at(15, 11)  # changed back the same day: the 15th is under the old codes again
        await apply_policy(runtime, parse_policy(OLD))
        history = [(v.effective_from.day, v.cost_center) for v in await runtime.ledger.department_metadata()
                   if v.department == "HR"]
    assert history == [(1, "CC-OLD"), (15, "CC-OLD")]


def test_shared_costs_follow_the_usage_under_each_cost_center(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"
    asyncio.run(start_with(db, OLD, at(1, 8)))
    asyncio.run(start_with(db, NEW, at(15, 9)))
    usage(db)
    shared = tmp_path / "shared.yaml"
    shared.write_text("method: proportional\nitems:\n  - {name: platform, amount_usd: 1.90}\n")
    rows = list(csv.DictReader(io.StringIO(cli("report", "chargeback", "--period", "2026-11", "--format", "focus",
                                               "--shared-costs", str(shared), "--db", db))))
    # $1.90 over $9.50 of usage: HR's $8.50 takes $1.70, of which $2.50 / $8.50 ($0.50) under the old codes
    adjustments = {(r["x_DepartmentId"], r["x_CostCenter"]): r["BilledCost"] for r in rows
                   if r["ChargeCategory"] == "Adjustment"}
    assert adjustments == {("HR", "CC-OLD"): "0.5", ("HR", "CC-NEW"): "1.2", ("ENG", "CC-ENG"): "0.2"}
    entry = csv.DictReader(io.StringIO(cli("report", "journal", "--period", "2026-11", "--format", "csv", "--shared-costs", str(shared),
                                           "--db", db)))
    assert [(r["cost_center"], r["debit_usd"], r["credit_usd"]) for r in entry] == [
        ("CC-OLD", "3.00", "0.00"), ("CC-NEW", "7.20", "0.00"), ("CC-ENG", "1.20", "0.00"), ("", "0.00", "11.40")]


def test_a_ledger_from_before_versions_were_kept_gets_them_from_its_stored_policies(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/ledger.db"

    async def stored_before() -> None:  # as servers without department metadata left the ledger
        ledger = await Ledger.open(db)
        try:
            await ledger.store_policy(OLD, at(1, 8))
            await ledger.store_policy(NEW, at(15, 9))
        finally:
            await ledger.close()

    asyncio.run(stored_before())
    asyncio.run(start_with(db, NEW, at(25)))
    usage(db)
    assert [(v.department, v.effective_from.day, v.cost_center) for v in
            on_ledger(lambda ledger: ledger.department_metadata(), db)] == [
        ("ENG", 1, "CC-ENG"), ("HR", 1, "CC-OLD"), ("HR", 15, "CC-NEW")]
    assert focus_codes(db) == EXPECTED_FOCUS
    assert journal(db) == EXPECTED_JOURNAL
