"""Department names and codes by the UTC day they took effect (``department_metadata``).

Every replica that adopts a policy may write its changes: a version is keyed by department and
day, so writing it again changes nothing, and a second change on the same day replaces the first
(the codes in force that day are the last ones adopted)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from costwarden.core.metadata import MetadataVersion
from costwarden.ledger.rows import utc
from costwarden.ledger.schema import department_metadata as table


def record(conn: Connection, versions: Sequence[MetadataVersion], now: datetime) -> None:
    """Write ``versions``, replacing any of the same department and day."""
    if not versions:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.department, table.c.effective_from],
        set_={name: statement.excluded[name] for name in ("name", "cost_center", "gl_account", "recorded_at")})
    conn.execute(statement, [{"department": v.department, "effective_from": v.effective_from.isoformat(),
                              "name": v.name, "cost_center": v.cost_center, "gl_account": v.gl_account,
                              "recorded_at": utc(now)} for v in versions])


def history(conn: Connection) -> list[MetadataVersion]:
    """Every version, by department and day."""
    rows = conn.execute(select(table).order_by(table.c.department, table.c.effective_from)).mappings()
    return [MetadataVersion(row["department"], date.fromisoformat(row["effective_from"]), row["name"],
                            row["cost_center"], row["gl_account"]) for row in rows]
