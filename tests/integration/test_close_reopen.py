"""close, reopen and restate: who closed, when, under which policy version, with which checksum,
and an audit trail of every step."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, delete, inspect, text
from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.events import UsageEvent
from costwarden.ledger.engine import normalize_url
from costwarden.ledger.migrations import migrate
from costwarden.ledger.schema import schema_migrations, statement_history
from costwarden.policy import parse_policy
from ledger_helpers import on_ledger

runner = CliRunner()
POLICY = """
version: 1
timezone: UTC
models:
  gpt-4o: {provider: openai, tier: 3, input: 2.50, output: 10.00}
departments:
  HR: {}
"""
CATALOG = parse_policy(POLICY).catalog


def event(ident: str, at: datetime, tokens: int) -> UsageEvent:
    spec = CATALOG["gpt-4o"]
    cost = spec.cost(tokens, 0)
    return UsageEvent(id=ident, admitted_at=at, finished_at=at + timedelta(seconds=1), department="HR",
                      model_requested="gpt-4o", model_served="gpt-4o", provider="openai",
                      endpoint="/v1/chat/completions", input_tokens=tokens, cost_nanos=cost, estimate_nanos=cost,
                      price_version=spec.price_version)


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_close_reopen_restate_keep_a_complete_trail(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    october = datetime(2026, 10, 10, 12, tzinfo=UTC)
    on_ledger(lambda ledger: ledger.record_many([event("a", october, 400_000)]), db)  # $1.00

    code, said = cli("close", "--period", "2026-10", "--db", db, "--policy", str(policy))
    assert code == 0, said
    first = on_ledger(lambda ledger: ledger.statement_closing("2026-10"), db)
    assert first is not None and first.restatement == 0 and first.closed_by
    assert first.checksum is not None and first.checksum.startswith("sha256:") and first.checksum in said
    assert f"Closed by {first.closed_by}" in said and "policy file not stored" in said

    # Usage arrives late; the period is reopened to restate it (a reason is required).
    on_ledger(lambda ledger: ledger.record_many([event("late", october, 800_000)]), db)  # $2.00
    assert cli("reopen", "--period", "2026-10", "--reason", " ", "--db", db)[0] == 1
    code, said = cli("reopen", "--period", "2026-10", "--reason", "supplier invoice arrived late", "--db", db)
    assert code == 0, said
    assert on_ledger(lambda ledger: ledger.statement_closing("2026-10"), db) is None
    code, out = cli("report", "chargeback", "--period", "2026-10", "--format", "json", "--db", db,
                    "--policy", str(policy))
    assert json.loads(out)["status"] == "open" and json.loads(out)["totals"]["usage_cost_usd"] == "3.00"

    code, said = cli("close", "--period", "2026-10", "--db", db, "--policy", str(policy))
    assert code == 0 and "restatement 1" in said
    second = on_ledger(lambda ledger: ledger.statement_closing("2026-10"), db)
    assert second is not None and second.restatement == 1 and second.checksum != first.checksum
    [old] = on_ledger(lambda ledger: ledger.statement_history("2026-10"), db)
    assert (old.checksum, old.reason, old.restatement, old.reopened_by) == (
        first.checksum, "supplier invoice arrived late", 0, first.closed_by)
    engine = create_engine(normalize_url(db))
    with engine.connect() as conn:  # the reopened statement is kept whole: it billed $1.00
        [body] = conn.execute(text("SELECT body FROM statement_history")).scalars()
    engine.dispose()
    assert '"usage_cents":100' in body

    entries = on_ledger(lambda ledger: ledger.list_audit(None, None, None, None, 100, 0), db)
    trail = [(e.action, e.target) for e in sorted(entries, key=lambda e: e.id or 0)]
    assert trail == [("period.closed", "2026-10"), ("period.reopened", "2026-10"), ("period.closed", "2026-10")]
    reopened = next(e for e in entries if e.action == "period.reopened")
    assert reopened.detail["reason"] == "supplier invoice arrived late" and reopened.detail["checksum"] == first.checksum
    closed = [e for e in entries if e.action == "period.closed"]
    assert {e.detail["checksum"] for e in closed} == {first.checksum, second.checksum}

    # A later closed period blocks reopening (its statement may hold corrections of this one).
    assert cli("close", "--period", "2026-11", "--db", db, "--policy", str(policy))[0] == 0
    code, said = cli("reopen", "--period", "2026-10", "--reason", "again", "--db", db)
    assert code == 1 and "reopen 2026-11 first" in said


def closed_october(tmp_path: Path) -> tuple[Path, str]:
    """A policy file and a ledger with $1.00 of usage in 2026-10, closed."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    on_ledger(lambda ledger: ledger.record_many([event("a", datetime(2026, 10, 10, 12, tzinfo=UTC), 400_000)]), db)
    assert cli("close", "--period", "2026-10", "--db", db, "--policy", str(policy))[0] == 0
    return policy, db


def test_an_altered_frozen_statement_is_refused(tmp_path: Path) -> None:
    _, db = closed_october(tmp_path)
    engine = create_engine(normalize_url(db))
    with engine.begin() as conn:
        conn.execute(text("UPDATE statements SET body = replace(body, :old, :new)"),
                     {"old": '"usage_cents":100', "new": '"usage_cents":1'})
    engine.dispose()
    code, said = cli("report", "chargeback", "--period", "2026-10", "--db", db)
    assert code == 1 and "does not match its checksum" in said


def test_a_wrong_policy_path_is_refused_for_a_closed_period_too(tmp_path: Path) -> None:
    policy, db = closed_october(tmp_path)
    missing = str(tmp_path / "nope.yaml")
    for command in (("chargeback", "--format", "csv"), ("chargeback", "--format", "focus"), ("journal",)):
        code, said = cli("report", command[0], "--period", "2026-10", *command[1:], "--db", db, "--policy", missing)
        assert code == 1 and "file not found" in said and "2026-10," not in said, command
    assert cli("report", "chargeback", "--period", "2026-10", "--db", db, "--policy", str(policy))[0] == 0


def test_a_database_of_the_previous_schema_gets_the_closing_columns(ledger_url: str) -> None:
    on_ledger(lambda ledger: ledger.count_events(), ledger_url)  # a database at the current schema
    engine = create_engine(normalize_url(ledger_url))
    try:
        with engine.begin() as conn:  # as a costwarden of schema version 4 left it
            statement_history.drop(conn)
            for column in ("closed_by", "policy_version", "checksum", "restatement"):
                conn.execute(text(f'ALTER TABLE statements DROP COLUMN "{column}"'))
            conn.execute(delete(schema_migrations).where(schema_migrations.c.version == 5))
        assert migrate(engine) == [5]
        assert {"closed_by", "policy_version", "checksum", "restatement"} <= {
            c["name"] for c in inspect(engine).get_columns("statements")}
        assert "statement_history" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    stored = on_ledger(lambda ledger: ledger.freeze_statement("2026-10", "{}", closed_by="me"), ledger_url)
    assert stored is not None
    closing = on_ledger(lambda ledger: ledger.statement_closing("2026-10"), ledger_url)
    assert closing is not None and closing.closed_by == "me" and closing.restatement == 0


def test_closed_months_are_not_read_again_until_late_usage_arrives(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    db = f"sqlite:///{tmp_path}/ledger.db"
    months = ("2026-06", "2026-07", "2026-08")
    on_ledger(lambda ledger: ledger.record_many(
        [event(f"m{i}", datetime(2026, 6 + i, 10, 12, tzinfo=UTC), 400_000) for i in range(3)]), db)
    for month in months:
        assert cli("close", "--period", month, "--db", db, "--policy", str(policy))[0] == 0
    engine = create_engine(normalize_url(db))
    with engine.begin() as conn:  # the earliest statement no longer matches its checksum
        conn.execute(text("UPDATE statements SET body = replace(body, :old, :new) WHERE period = '2026-06'"),
                     {"old": '"usage_cents":100', "new": '"usage_cents":1'})
    engine.dispose()

    code, said = cli("report", "chargeback", "--period", "2026-09", "--db", db, "--policy", str(policy),
                     "--format", "csv")
    assert code == 0, said

    on_ledger(lambda ledger: ledger.record(event("late", datetime(2026, 6, 20, 12, tzinfo=UTC), 400_000)), db)
    code, said = cli("report", "chargeback", "--period", "2026-09", "--db", db, "--policy", str(policy))
    assert code == 1 and "2026-06 does not match its checksum" in said
