"""Every SQL table of costwarden, as SQLAlchemy Core tables that work on SQLite and PostgreSQL.

Conventions: money is BIGINT nano-dollars; times are UTC (``timestamptz`` on PostgreSQL, ISO text
on SQLite, always read back as aware UTC datetimes); tags and shadow decisions are JSON text so
that both backends can group by a tag with their JSON functions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime; SQLite stores it as naive UTC text that sorts in time order."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: the ledger stores aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a SQLite expression
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String, nullable=False),
    Column("applied_at", UTCDateTime, nullable=False),
)

# Columns added after the first schema (migration 3): factories, so that the migration can add
# fresh copies of the same definitions to an existing table.
BILLING_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("model_sent", String, nullable=False, server_default=""),
    lambda: Column("cache_write_5m_tokens", BigInteger, nullable=False, server_default="0"),
    lambda: Column("cache_write_1h_tokens", BigInteger, nullable=False, server_default="0"),
    lambda: Column("reasoning_tokens", BigInteger, nullable=False, server_default="0"),
    lambda: Column("audio_input_tokens", BigInteger, nullable=False, server_default="0"),
    lambda: Column("service_tier", String, nullable=False, server_default=""),
    lambda: Column("tool_calls", Text, nullable=False, server_default="{}"),
    lambda: Column("usage_malformed", Boolean, nullable=False, server_default=false()),
)
INFLIGHT_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("replica", String, nullable=False, server_default=""),
    lambda: Column("model_sent", String, nullable=False, server_default=""),
)
# Columns of business customers and plans (SPEC §12, migration 6).
CUSTOMER_EVENT_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("customer", String, nullable=False, server_default=""),
    lambda: Column("trimmed_tokens", BigInteger, nullable=False, server_default="0"),
)
CUSTOMER_INFLIGHT_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("customer", String, nullable=False, server_default=""),
)
# A key bound to a customer, and the customer a ``customer`` admin token reads (NULL: none).
CUSTOMER_CREDENTIAL_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("customer", String),
)

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", String, primary_key=True),
    Column("admitted_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("department", String, nullable=False),
    Column("team", String),
    Column("key_id", String),
    Column("user", String),
    Column("model_requested", String, nullable=False),
    Column("model_served", String, nullable=False),
    Column("provider", String, nullable=False),
    Column("endpoint", String, nullable=False),
    Column("tags", Text, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("estimate_nanos", BigInteger, nullable=False),
    Column("price_version", String, nullable=False),
    Column("decision", String, nullable=False),
    Column("status", String, nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("latency_ms", BigInteger, nullable=False),
    Column("overrun_tokens", BigInteger, nullable=False),
    Column("interrupted", Boolean, nullable=False),
    Column("shadow", Text, nullable=False),
    Column("stream", Boolean, nullable=False),
    *(column() for column in BILLING_COLUMNS),
    *(column() for column in CUSTOMER_EVENT_COLUMNS),
    Index("ix_usage_events_admitted_at", "admitted_at"),
    Index("ix_usage_events_department_admitted_at", "department", "admitted_at"),
    Index("ix_usage_events_customer_admitted_at", "customer", "admitted_at"),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", String, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("department", String),
    Column("team", String),
    Column("key_id", String),
    Column("user", String),
    Column("model_requested", String),
    Column("endpoint", String, nullable=False),
    Column("code", String, nullable=False),
    Column("message", Text, nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("tags", Text, nullable=False),
    Column("shadow", Text, nullable=False),
    Index("ix_rejections_at", "at"),
    Index("ix_rejections_department_at", "department", "at"),
)

# Write-ahead rows of calls being forwarded; deleted when the call's final event is written.
inflight = Table(
    "inflight",
    metadata,
    Column("id", String, primary_key=True),
    Column("admitted_at", UTCDateTime, nullable=False),
    Column("department", String, nullable=False),
    Column("team", String),
    Column("key_id", String),
    Column("user", String),
    Column("model_requested", String, nullable=False),
    Column("model_served", String, nullable=False),
    Column("provider", String, nullable=False),
    Column("endpoint", String, nullable=False),
    Column("tags", Text, nullable=False),
    Column("estimate_input_tokens", BigInteger, nullable=False),
    Column("estimate_output_tokens", BigInteger, nullable=False),
    Column("estimate_nanos", BigInteger, nullable=False),
    Column("price_version", String, nullable=False),
    Column("decision", String, nullable=False),
    Column("stream", Boolean, nullable=False),
    *(column() for column in INFLIGHT_COLUMNS),
    *(column() for column in CUSTOMER_INFLIGHT_COLUMNS),
)

policy_versions = Table(
    "policy_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("loaded_at", UTCDateTime, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("yaml", Text, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String, primary_key=True),
    Column("hash", String(64), nullable=False, unique=True),  # sha256 of the secret, never the secret
    Column("prefix", String, nullable=False),
    Column("department", String),  # NULL: unbound, calls must name their department
    Column("team", String),
    Column("user", String),
    Column("name", String),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    *(column() for column in CUSTOMER_CREDENTIAL_COLUMNS),  # the customer whose calls the key makes
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String, primary_key=True),
    Column("hash", String(64), nullable=False, unique=True),
    Column("prefix", String, nullable=False),
    Column("role", String, nullable=False),  # admin | finance | manager | customer
    Column("department", String),  # the managed department, for role manager
    Column("name", String),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    *(column() for column in CUSTOMER_CREDENTIAL_COLUMNS),  # the customer read, for role customer
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("kind", String, nullable=False),
    Column("department", String),
    Column("scope", String, nullable=False),
    Column("budget_index", Integer),
    Column("period_start", UTCDateTime),
    Column("threshold", String),  # exact decimal text, e.g. "0.8"
    Column("text", Text, nullable=False),
    Column("dedupe_key", String, nullable=False, unique=True),
    Index("ix_alerts_at", "at"),
)

closed_periods = Table(
    "closed_periods",
    metadata,
    Column("period", String(7), primary_key=True),  # YYYY-MM
    Column("closed_at", UTCDateTime, nullable=False),
)

# The closing columns of ``statements`` (migration 5), as factories: a Column belongs to one table.
CLOSING_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("closed_by", String),  # who closed it: a token id or the CLI's OS user
    lambda: Column("policy_version", Integer),  # the stored policy version it was computed under
    lambda: Column("checksum", String),  # sha256 of ``body``, checked on every read
    lambda: Column("restatement", Integer, nullable=False, server_default="0"),  # 0, then 1 per reopening
)

# What a frozen statement billed, in a few bytes (migration 7): JSON ``{"start", "end", "billed":
# {period: requests}}``, its window and the calls it billed per period, its own and the closed
# ones it corrects. A later open period compares it with the rollups' count of calls and skips a
# closed period nothing arrived for, without reading its statement (NULL: read the statement).
SUMMARY_COLUMNS: tuple[Callable[[], Column[Any]], ...] = (
    lambda: Column("summary", Text),
)

# The chargeback statement of a closed period, frozen at its close (JSON text, see
# costwarden.reports.codec); later usage for the period is posted as corrections elsewhere.
statements = Table(
    "statements",
    metadata,
    Column("period", String(7), primary_key=True),  # YYYY-MM
    Column("closed_at", UTCDateTime, nullable=False),
    Column("body", Text, nullable=False),
    *(make() for make in CLOSING_COLUMNS),
    *(make() for make in SUMMARY_COLUMNS),
)

# Frozen statements that were reopened (``costwarden reopen``): kept whole, with who reopened them
# and why, so that a restated period keeps every version it had.
statement_history = Table(
    "statement_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("period", String(7), nullable=False),
    Column("restatement", Integer, nullable=False),
    Column("closed_at", UTCDateTime, nullable=False),
    Column("closed_by", String),
    Column("policy_version", Integer),
    Column("checksum", String),
    Column("body", Text, nullable=False),
    Column("reopened_at", UTCDateTime, nullable=False),
    Column("reopened_by", String, nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_statement_history_period", "period"),
)

# Who changed what and when (keys, tokens, policy, budgets, periods); append-only. ``dedupe_key``
# is set only on entries that several processes may write for one change (a policy adoption).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor_id", String, nullable=False),  # token id, or the OS user for the CLI
    Column("actor_role", String, nullable=False),  # admin | finance | manager | cli | server
    Column("action", String, nullable=False),
    Column("target", String),
    Column("department", String),  # the department concerned; NULL: the organization
    Column("version_before", Integer),
    Column("version_after", Integer),
    Column("detail", Text, nullable=False),  # JSON object
    Column("dedupe_key", String, unique=True),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_department_at", "department", "at"),
)

# Department names and codes by the UTC day they took effect (migration 8): written when a policy
# that changes them is adopted, so that reports book each day under the codes in force that day.
department_metadata = Table(
    "department_metadata",
    metadata,
    Column("department", String, primary_key=True),
    Column("effective_from", String(10), primary_key=True),  # YYYY-MM-DD, a UTC day
    Column("name", String, nullable=False),
    Column("cost_center", String, nullable=False),
    Column("gl_account", String, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

# Daily totals of usage_events (migration 7), kept in the transaction that inserts the events
# (ledger/rollups.py), so that reports cost in proportion to their groups, not to events. One row
# per UTC day of admission and every dimension a report groups or filters by; absent team, key
# and user are stored as '' (a key column cannot be NULL), and ``tags`` is the event's JSON text.
ROLLUP_DIMENSIONS = ("department", "team", "key_id", "user", "model_requested", "model_served", "provider",
                     "endpoint", "status", "decision", "price_version", "customer", "service_tier", "tags")
ROLLUP_MEASURES = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_nanos", "estimate_nanos",
                   "cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens",
                   "trimmed_tokens", "overrun_tokens")

usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("day", String(10), nullable=False),  # YYYY-MM-DD, the UTC date of admitted_at
    *(Column(name, Text if name == "tags" else String, nullable=False) for name in ROLLUP_DIMENSIONS),
    Column("requests", BigInteger, nullable=False),
    *(Column(name, BigInteger, nullable=False) for name in ROLLUP_MEASURES),
    PrimaryKeyConstraint("day", *ROLLUP_DIMENSIONS, name="pk_usage_rollups"),
    sqlite_with_rowid=False,  # one B-tree, ordered by its key: an upsert finds and updates a row in one place
)

# The tables the application owns, in creation order (schema_migrations is the runner's own).
APP_TABLES = (
    usage_events,
    rejections,
    inflight,
    policy_versions,
    api_keys,
    admin_tokens,
    alerts,
    closed_periods,
    statements,
    audit_log,
    statement_history,
    usage_rollups,
    department_metadata,
)
