"""Closing, reading and reopening frozen chargeback statements (the ``statements`` table and its
history). A closed statement records who closed it, under which policy version, and the sha256
of its body, which every read checks; reopening moves it whole to ``statement_history`` with who
reopened it and why, so that a restated period keeps every version it had."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from costwarden.errors import StorageError
from costwarden.ledger.audit import close_period
from costwarden.ledger.queue_items import insert_ignoring_duplicates
from costwarden.ledger.rows import utc
from costwarden.ledger.schema import closed_periods, statement_history, statements


@dataclass(frozen=True, slots=True)
class Closing:
    """How a period's statement was closed (or, in the history, closed and then reopened)."""

    period: str
    closed_at: datetime
    closed_by: str | None
    policy_version: int | None
    checksum: str | None
    restatement: int
    reopened_at: datetime | None = None
    reopened_by: str | None = None
    reason: str | None = None


def checksum(body: str) -> str:
    """``sha256:<hex>`` of a statement's stored text."""
    return "sha256:" + hashlib.sha256(body.encode("utf-8")).hexdigest()


def freeze(conn: Connection, period: str, body: str, at: datetime, closed_by: str | None,
           policy_version: int | None, summary: str | None = None) -> datetime | None:
    """Close the period (unless closed already) and store its statement, with its billed
    ``summary`` (see ``schema.SUMMARY_COLUMNS``); None if one is stored."""
    close_period(conn, period, at)
    closed_at: datetime = conn.execute(
        select(closed_periods.c.closed_at).where(closed_periods.c.period == period)).scalar_one()
    restatement = conn.execute(select(func.count()).select_from(statement_history)
                               .where(statement_history.c.period == period)).scalar_one()
    stored = conn.execute(
        insert_ignoring_duplicates(conn, statements)
        .values(period=period, closed_at=closed_at, body=body, closed_by=closed_by, policy_version=policy_version,
                checksum=checksum(body), restatement=int(restatement), summary=summary)
        .returning(statements.c.period)
    ).first()
    return closed_at if stored is not None else None


def frozen(conn: Connection, period: str) -> tuple[datetime, str] | None:
    """The close time and body of a period's statement, its checksum checked; None if none is stored."""
    row = conn.execute(select(statements.c.closed_at, statements.c.body, statements.c.checksum)
                       .where(statements.c.period == period)).first()
    if row is None:
        return None
    if row[2] is not None and row[2] != checksum(row[1]):
        raise StorageError(f"the frozen statement of {period} does not match its checksum {row[2]}: it was altered")
    return row[0], row[1]


def summaries(conn: Connection, periods: Sequence[str]) -> dict[str, str | None]:
    """The billed summary of each period's frozen statement (None: stored without one)."""
    rows = conn.execute(select(statements.c.period, statements.c.summary).where(statements.c.period.in_(periods)))
    return {row[0]: row[1] for row in rows}


def closing(conn: Connection, period: str) -> Closing | None:
    """How the period's current statement was closed."""
    row = conn.execute(select(statements).where(statements.c.period == period)).mappings().first()
    if row is None:
        return None
    return Closing(period, row["closed_at"], row["closed_by"], row["policy_version"], row["checksum"],
                   row["restatement"])


def history(conn: Connection, period: str) -> list[Closing]:
    """The reopened statements of a period, oldest first."""
    rows = conn.execute(select(statement_history).where(statement_history.c.period == period)
                        .order_by(statement_history.c.id)).mappings()
    return [Closing(row["period"], row["closed_at"], row["closed_by"], row["policy_version"], row["checksum"],
                    row["restatement"], row["reopened_at"], row["reopened_by"], row["reason"]) for row in rows]


def reopen(conn: Connection, period: str, at: datetime, by: str, reason: str) -> Closing | None:
    """Move the period's statement to the history and open the period; None if it is not closed
    with a stored statement."""
    row = conn.execute(select(statements).where(statements.c.period == period)).mappings().first()
    if row is None:
        return None
    conn.execute(statement_history.insert().values(
        period=period, restatement=row["restatement"], closed_at=row["closed_at"], closed_by=row["closed_by"],
        policy_version=row["policy_version"], checksum=row["checksum"], body=row["body"], reopened_at=utc(at),
        reopened_by=by, reason=reason))
    conn.execute(delete(statements).where(statements.c.period == period))
    conn.execute(delete(closed_periods).where(closed_periods.c.period == period))
    return Closing(period, row["closed_at"], row["closed_by"], row["policy_version"], row["checksum"],
                   row["restatement"], utc(at), by, reason)


__all__ = ["Closing", "checksum", "closing", "freeze", "frozen", "history", "reopen", "summaries"]
