"""A small, numbered migration runner with an applied-migrations table.

``migrate(engine)`` runs at every open, under a lock (BEGIN IMMEDIATE on SQLite, an advisory
transaction lock on PostgreSQL) so that several processes opening one database at once apply each
step exactly once. A fresh database gets the current schema from ``schema.py`` in one go and every
step is recorded as applied (as Alembic's "create_all, then stamp head"); an older database gets
the steps it lacks, in order. A new step therefore only has to transform the previous schema into
the current one: append a ``Step(n + 1, ...)`` whose function runs the ALTERs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection, Engine

from costwarden.errors import StorageError
from costwarden.ledger import rollups
from costwarden.ledger.schema import (
    APP_TABLES,
    BILLING_COLUMNS,
    CLOSING_COLUMNS,
    CUSTOMER_CREDENTIAL_COLUMNS,
    CUSTOMER_EVENT_COLUMNS,
    CUSTOMER_INFLIGHT_COLUMNS,
    INFLIGHT_COLUMNS,
    SUMMARY_COLUMNS,
    admin_tokens,
    api_keys,
    audit_log,
    department_metadata,
    inflight,
    metadata,
    schema_migrations,
    statement_history,
    statements,
    usage_events,
    usage_rollups,
)

# Any constant shared by every costwarden process; it names the migration lock on PostgreSQL.
_PG_LOCK_KEY = 0x636F_7374_7761_72


@dataclass(frozen=True, slots=True)
class Step:
    """One numbered, named schema change."""

    version: int
    name: str
    apply: Callable[[Connection], None]


def _initial_schema(conn: Connection) -> None:
    metadata.create_all(conn, tables=list(APP_TABLES), checkfirst=True)


def _frozen_statements(conn: Connection) -> None:
    statements.create(conn, checkfirst=True)


def _billing_dimensions(conn: Connection) -> None:
    """The id sent, token types billed at their own rates, service tier, tool calls and the
    malformed-usage flag on events; the forwarding replica on write-ahead rows."""
    for table, columns in ((usage_events, BILLING_COLUMNS), (inflight, INFLIGHT_COLUMNS)):
        for make in columns:
            column = make()
            kind = column.type.compile(dialect=conn.dialect)
            default = column.server_default.arg if column.server_default is not None else None  # type: ignore[attr-defined]
            literal = f"'{default}'" if isinstance(default, str) else "FALSE"
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind} NOT NULL DEFAULT {literal}'))


def _audit_log(conn: Connection) -> None:
    audit_log.create(conn, checkfirst=True)


def _statement_closings(conn: Connection) -> None:
    """Who closed a statement, under which policy version, its checksum and restatement number; and
    the history of reopened statements. Columns a fresh ``statements`` table has already are kept."""
    present = {column["name"] for column in inspect(conn).get_columns(statements.name)}
    for make in CLOSING_COLUMNS:
        column = make()
        if column.name in present:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        default = " NOT NULL DEFAULT 0" if column.name == "restatement" else ""
        conn.execute(text(f'ALTER TABLE {statements.name} ADD COLUMN "{column.name}" {kind}{default}'))
    statement_history.create(conn, checkfirst=True)


def _customers(conn: Connection) -> None:
    """Business customers (SPEC §12): the customer and trimmed tokens of each event, the customer
    of write-ahead rows, keys bound to a customer and ``customer`` admin tokens."""
    for table, columns in ((usage_events, CUSTOMER_EVENT_COLUMNS), (inflight, CUSTOMER_INFLIGHT_COLUMNS),
                           (api_keys, CUSTOMER_CREDENTIAL_COLUMNS), (admin_tokens, CUSTOMER_CREDENTIAL_COLUMNS)):
        for make in columns:
            column = make()
            kind = column.type.compile(dialect=conn.dialect)
            default = column.server_default.arg if column.server_default is not None else None  # type: ignore[attr-defined]
            clause = "" if default is None else f" NOT NULL DEFAULT '{default}'" if column.name == "customer" \
                else f" NOT NULL DEFAULT {int(default)}"
            conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{clause}'))
    for index in usage_events.indexes:
        if index.name == "ix_usage_events_customer_admitted_at":
            index.create(conn, checkfirst=True)


def _department_metadata(conn: Connection) -> None:
    department_metadata.create(conn, checkfirst=True)


def _usage_rollups(conn: Connection) -> None:
    """Daily rollups of usage (ledger/rollups.py), filled from the events already stored, and
    the billed summary of frozen statements (NULL for those frozen before)."""
    present = {column["name"] for column in inspect(conn).get_columns(statements.name)}
    for make in SUMMARY_COLUMNS:
        column = make()
        if column.name not in present:
            conn.execute(text(f'ALTER TABLE {statements.name} ADD COLUMN "{column.name}" {column.type.compile(dialect=conn.dialect)}'))
    usage_rollups.create(conn, checkfirst=True)
    conn.execute(usage_rollups.delete())  # rebuilt whole: a table left by an earlier run is not added to
    rollups.backfill(conn)


STEPS: tuple[Step, ...] = (
    Step(1, "initial schema", _initial_schema),
    Step(2, "frozen chargeback statements", _frozen_statements),
    Step(3, "billing dimensions and replicas", _billing_dimensions),
    Step(4, "audit log", _audit_log),
    Step(5, "statement closings and restatements", _statement_closings),
    Step(6, "customers and plans", _customers),
    Step(7, "daily usage rollups", _usage_rollups),
    Step(8, "effective-dated department metadata", _department_metadata),
)


def migrate(engine: Engine, now: datetime | None = None) -> list[int]:
    """Bring the database's schema up to date; returns the versions applied by this call."""
    at = now or datetime.now(UTC)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        schema_migrations.create(conn, checkfirst=True)
        applied = set(conn.execute(select(schema_migrations.c.version)).scalars())
        known = {step.version for step in STEPS}
        if applied - known:
            raise StorageError(
                f"the database's schema is at version {max(applied)}, newer than this costwarden "
                f"knows ({max(known)}): upgrade costwarden"
            )
        if not applied and not _has_app_tables(conn):
            metadata.create_all(conn, tables=list(APP_TABLES))
            pending = list(STEPS)
        else:
            pending = [step for step in STEPS if step.version not in applied]
            for step in pending:
                step.apply(conn)
        if pending:
            conn.execute(
                schema_migrations.insert(),
                [{"version": s.version, "name": s.name, "applied_at": at} for s in pending],
            )
        return [step.version for step in pending]


def applied_versions(engine: Engine) -> list[int]:
    """The versions recorded as applied, in order."""
    with engine.connect() as conn:
        return sorted(conn.execute(select(schema_migrations.c.version)).scalars())


def _has_app_tables(conn: Connection) -> bool:
    existing = set(inspect(conn).get_table_names())
    return any(table.name in existing for table in APP_TABLES)
