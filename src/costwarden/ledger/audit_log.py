"""The audit log: an append-only record of every change to keys, tokens, the policy, budgets and
billing periods (SPEC section 11). Rows are never updated or deleted."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection, RowMapping

from costwarden.core.audit import Actor, AuditAction, AuditEntry
from costwarden.ledger.queue_items import insert_ignoring_duplicates
from costwarden.ledger.rows import utc
from costwarden.ledger.schema import audit_log


def insert_entries(conn: Connection, entries: Sequence[AuditEntry], once: str | None = None) -> bool:
    """Append ``entries``. With ``once`` (a policy version's adoption, which every replica sees),
    nothing is written when an entry with that key exists, or when the version was recorded as
    reloaded through the admin API already; returns whether anything was written."""
    if not entries:
        return False
    if once is not None:
        first = entries[0]
        if first.version_after is not None and _reloaded(conn, first.version_after):
            return False
        inserted = conn.execute(insert_ignoring_duplicates(conn, audit_log)
                                .values(**_row(first, once)).returning(audit_log.c.id)).first()
        if inserted is None:
            return False
        entries = entries[1:]
    if entries:
        conn.execute(audit_log.insert(), [_row(entry, None) for entry in entries])
    return True


def list_entries(conn: Connection, since: datetime | None, until: datetime | None, department: str | None,
                 action: str | None, limit: int, offset: int) -> list[AuditEntry]:
    """Entries newest first, in [since, until)."""
    query = select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit).offset(offset)
    if since is not None:
        query = query.where(audit_log.c.at >= utc(since))
    if until is not None:
        query = query.where(audit_log.c.at < utc(until))
    if department is not None:
        query = query.where(audit_log.c.department == department)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    return [_entry(row) for row in conn.execute(query).mappings()]


def _reloaded(conn: Connection, version: int) -> bool:
    found = conn.execute(select(audit_log.c.id).where(and_(
        audit_log.c.action == AuditAction.POLICY_RELOADED, audit_log.c.version_after == version)).limit(1))
    return found.first() is not None


def _row(entry: AuditEntry, dedupe_key: str | None) -> dict[str, object]:
    return {"at": utc(entry.at), "actor_id": entry.actor.id, "actor_role": entry.actor.role,
            "action": str(entry.action), "target": entry.target, "department": entry.department,
            "version_before": entry.version_before, "version_after": entry.version_after,
            "detail": orjson.dumps(dict(entry.detail), option=orjson.OPT_SORT_KEYS).decode(),
            "dedupe_key": dedupe_key}


def _entry(row: RowMapping) -> AuditEntry:
    return AuditEntry(at=row["at"], actor=Actor(row["actor_id"], row["actor_role"]),
                      action=AuditAction(row["action"]), target=row["target"], department=row["department"],
                      version_before=row["version_before"], version_after=row["version_after"],
                      detail=orjson.loads(row["detail"]), id=row["id"])
