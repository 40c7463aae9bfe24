"""Department metadata versions in the ledger, on every backend: replicas writing one change leave
one version, a second change on the same day replaces the first, and an older database gets the
table from migration 8."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from sqlalchemy import create_engine, delete, inspect

from costwarden.core.metadata import MetadataVersion
from costwarden.ledger import Ledger
from costwarden.ledger.engine import normalize_url
from costwarden.ledger.migrations import migrate
from costwarden.ledger.schema import department_metadata, schema_migrations

NOW = datetime(2026, 11, 15, 9, tzinfo=UTC)
OLD = MetadataVersion("HR", date(2026, 11, 1), "Human Resources", "CC-OLD", "6100")
NEW = MetadataVersion("HR", date(2026, 11, 15), "Human Resources", "CC-NEW", "6200")


async def test_versions_are_kept_once_and_replaced_on_the_same_day(ledger_url: str) -> None:
    ledger = await Ledger.open(ledger_url)
    try:
        await ledger.record_department_metadata([OLD], NOW)
        await asyncio.gather(*[ledger.record_department_metadata([NEW], NOW) for _ in range(4)])
        assert await ledger.department_metadata() == [OLD, NEW]
        back = MetadataVersion("HR", date(2026, 11, 15), "Human Resources", "CC-OLD", "6100")
        await ledger.record_department_metadata([back], NOW)
        assert await ledger.department_metadata() == [OLD, back]
    finally:
        await ledger.close()


async def test_a_database_of_the_previous_schema_gets_the_table(ledger_url: str) -> None:
    opened = await Ledger.open(ledger_url)
    await opened.close()
    engine = create_engine(normalize_url(ledger_url))
    try:
        with engine.begin() as conn:  # as a costwarden without migration 8 left it
            department_metadata.drop(conn)
            conn.execute(delete(schema_migrations).where(schema_migrations.c.version == 8))
        assert migrate(engine) == [8]
        assert "department_metadata" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
    reopened = await Ledger.open(ledger_url)
    try:
        await reopened.record_department_metadata([OLD], NOW)
        assert await reopened.department_metadata() == [OLD]
    finally:
        await reopened.close()
