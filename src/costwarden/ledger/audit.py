"""The ledger's smaller records: policy versions, alerts sent, and closed billing periods."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection, RowMapping

from costwarden.ledger.queue_items import insert_ignoring_duplicates
from costwarden.ledger.rows import utc
from costwarden.ledger.schema import alerts, closed_periods, policy_versions

_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """A policy file as loaded by a server, kept for audit."""

    id: int
    loaded_at: datetime
    sha256: str
    yaml: str


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert that was raised. ``dedupe_key`` is unique: the same alert is recorded once,
    however many replicas raise it. ``threshold`` is exact decimal text ("0.8")."""

    at: datetime
    kind: str
    scope: str
    text: str
    dedupe_key: str
    department: str | None = None
    budget_index: int | None = None
    period_start: datetime | None = None
    threshold: str | None = None
    id: int | None = None


def store_policy(conn: Connection, yaml_text: str, now: datetime) -> int:
    """Append a policy version unless it equals the latest one; returns the version id."""
    digest = hashlib.sha256(yaml_text.encode("utf-8")).hexdigest()
    latest = _latest_policy(conn)
    if latest is not None and latest.sha256 == digest:
        return latest.id
    result = conn.execute(
        policy_versions.insert().values(loaded_at=utc(now), sha256=digest, yaml=yaml_text)
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def latest_policy(conn: Connection) -> PolicyVersion | None:
    return _latest_policy(conn)


def list_policies(conn: Connection) -> list[PolicyVersion]:
    """Every stored policy version, oldest first."""
    rows = conn.execute(select(policy_versions).order_by(policy_versions.c.id)).mappings()
    return [PolicyVersion(row["id"], row["loaded_at"], row["sha256"], row["yaml"]) for row in rows]


def _latest_policy(conn: Connection) -> PolicyVersion | None:
    row = conn.execute(select(policy_versions).order_by(policy_versions.c.id.desc()).limit(1)).mappings().first()
    return None if row is None else PolicyVersion(row["id"], row["loaded_at"], row["sha256"], row["yaml"])


def insert_alert(conn: Connection, alert: AlertRecord) -> bool:
    """Record ``alert``; False when an alert with its dedupe key already exists."""
    values = {
        "at": utc(alert.at), "kind": alert.kind, "department": alert.department, "scope": alert.scope,
        "budget_index": alert.budget_index,
        "period_start": None if alert.period_start is None else utc(alert.period_start),
        "threshold": alert.threshold, "text": alert.text, "dedupe_key": alert.dedupe_key,
    }
    # RETURNING tells whether a row was inserted on both backends (rowcount does not, on psycopg).
    inserted = conn.execute(insert_ignoring_duplicates(conn, alerts).values(**values).returning(alerts.c.id))
    return inserted.first() is not None


def list_alerts(conn: Connection, since: datetime | None, department: str | None, kind: str | None,
                limit: int) -> list[AlertRecord]:
    """Alerts newest first."""
    query = select(alerts).order_by(alerts.c.at.desc(), alerts.c.id.desc()).limit(limit)
    if since is not None:
        query = query.where(alerts.c.at >= utc(since))
    if department is not None:
        query = query.where(alerts.c.department == department)
    if kind is not None:
        query = query.where(alerts.c.kind == kind)
    return [_alert(row) for row in conn.execute(query).mappings()]


def _alert(row: RowMapping) -> AlertRecord:
    return AlertRecord(
        id=row["id"], at=row["at"], kind=row["kind"], department=row["department"], scope=row["scope"],
        budget_index=row["budget_index"], period_start=row["period_start"], threshold=row["threshold"],
        text=row["text"], dedupe_key=row["dedupe_key"],
    )


def close_period(conn: Connection, period: str, now: datetime) -> bool:
    """Mark billing period ``YYYY-MM`` closed; False if it already was."""
    if not _PERIOD.match(period):
        raise ValueError(f"bad billing period {period!r}: use YYYY-MM, e.g. 2026-11")
    statement = insert_ignoring_duplicates(conn, closed_periods).values(period=period, closed_at=utc(now))
    return conn.execute(statement.returning(closed_periods.c.period)).first() is not None


def list_closed_periods(conn: Connection) -> dict[str, datetime]:
    """Closed periods and when each was closed."""
    rows = conn.execute(select(closed_periods).order_by(closed_periods.c.period)).mappings()
    return {row["period"]: row["closed_at"] for row in rows}
