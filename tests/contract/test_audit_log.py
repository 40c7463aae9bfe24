"""The audit log contract, run against every ledger backend (SQLite file, PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import create_engine, delete, inspect

from costwarden.core.audit import Actor, AuditAction, AuditEntry
from costwarden.ledger import Ledger
from costwarden.ledger.engine import normalize_url
from costwarden.ledger.migrations import migrate
from costwarden.ledger.schema import audit_log, schema_migrations

T0 = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
ADMIN = Actor("tok_admin", "admin")
SERVER = Actor("server", "server")


def entry(action: AuditAction, at: datetime = T0, department: str | None = None, **fields: object) -> AuditEntry:
    return AuditEntry(at, ADMIN, action, department=department, **fields)  # type: ignore[arg-type]


async def test_entries_round_trip_newest_first(ledger: Ledger) -> None:
    created = entry(AuditAction.KEY_CREATED, T0, "HR", target="key_1", detail={"name": "bot", "team": None})
    reloaded = entry(AuditAction.POLICY_RELOADED, T0 + timedelta(seconds=1), target="policy version 2",
                     version_before=1, version_after=2, detail={"budgets_changed": 1})
    assert await ledger.record_audit([created]) and await ledger.record_audit([reloaded])
    listed = await ledger.list_audit()
    assert [e.action for e in listed] == [AuditAction.POLICY_RELOADED, AuditAction.KEY_CREATED]
    assert listed[1] == AuditEntry(T0, ADMIN, AuditAction.KEY_CREATED, "key_1", "HR", None, None,
                                   {"name": "bot", "team": None}, id=listed[1].id)
    assert (listed[0].version_before, listed[0].version_after) == (1, 2)


async def test_filters_window_and_offset(ledger: Ledger) -> None:
    await ledger.record_audit([entry(AuditAction.KEY_CREATED, T0 + timedelta(minutes=i), "HR" if i % 2 else "SALES",
                                     target=f"key_{i}") for i in range(6)])
    assert [e.target for e in await ledger.list_audit(department="HR")] == ["key_5", "key_3", "key_1"]
    assert [e.target for e in await ledger.list_audit(since=T0 + timedelta(minutes=2),
                                                      until=T0 + timedelta(minutes=4))] == ["key_3", "key_2"]
    assert [e.target for e in await ledger.list_audit(limit=2, offset=1)] == ["key_4", "key_3"]
    assert await ledger.list_audit(action=AuditAction.TOKEN_REVOKED) == []


async def test_an_adoption_is_recorded_once_and_not_after_a_reload_of_that_version(ledger: Ledger) -> None:
    adopted = [AuditEntry(T0, SERVER, AuditAction.POLICY_ADOPTED, version_before=1, version_after=2),
               AuditEntry(T0, SERVER, AuditAction.BUDGETS_CHANGED, department="HR", version_before=1, version_after=2)]
    # every replica adopts the version at about the same time: one set of entries lands
    written = await asyncio.gather(*[ledger.record_audit(adopted, once="policy.adopted|2") for _ in range(4)])
    assert sorted(written) == [False, False, False, True]
    assert [e.action for e in await ledger.list_audit()] == [AuditAction.BUDGETS_CHANGED, AuditAction.POLICY_ADOPTED]

    await ledger.record_audit([entry(AuditAction.POLICY_RELOADED, version_before=2, version_after=3)])
    late = [AuditEntry(T0, SERVER, AuditAction.POLICY_ADOPTED, version_before=2, version_after=3)]
    assert not await ledger.record_audit(late, once="policy.adopted|3")
    assert len(await ledger.list_audit()) == 3


async def test_a_database_of_the_previous_schema_gets_the_table(ledger_url: str) -> None:
    opened = await Ledger.open(ledger_url)
    await opened.close()
    engine = create_engine(normalize_url(ledger_url))
    try:
        with engine.begin() as conn:  # as a costwarden of schema version 3 left it
            audit_log.drop(conn)
            conn.execute(delete(schema_migrations).where(schema_migrations.c.version == 4))
        assert migrate(engine) == [4]
        assert "audit_log" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    reopened = await Ledger.open(ledger_url)
    try:
        assert await reopened.record_audit([entry(AuditAction.PERIOD_CLOSED, target="2026-10")])
    finally:
        await reopened.close()
