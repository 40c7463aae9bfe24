"""GET /audit: who changed what and when, newest first; and ``record``, which the admin
operations that change something call once the change is made."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from costwarden.app.auth import AdminIdentity
from costwarden.app.runtime import Runtime
from costwarden.core.audit import Actor, AuditAction, AuditEntry
from costwarden.http.admin.access import EVERYONE, visible_department
from costwarden.http.admin.api import AdminCall, Operation
from costwarden.http.admin.paging import newest_first
from costwarden.http.admin.schemas import AuditOut, AuditPage, AuditQuery, NoBody


def actor(who: AdminIdentity) -> Actor:
    return Actor(who.id, who.role)


async def record(runtime: Runtime, who: AdminIdentity, action: AuditAction, target: str | None,
                 department: str | None, detail: Mapping[str, object]) -> None:
    """Append one entry made by ``who`` now."""
    entry = AuditEntry(runtime.admission.clock(), actor(who), action, target=target, department=department,
                       detail=detail)
    await runtime.ledger.record_audit([entry])


async def list_audit(call: AdminCall[AuditQuery, NoBody]) -> AuditPage:
    query, ledger = call.query, call.runtime.ledger
    department = visible_department(call.who, query.department)
    action = None if query.action is None else str(query.action)

    async def fetch(until: datetime | None, limit: int, offset: int) -> list[AuditEntry]:
        return await ledger.list_audit(query.since, until, department, action, limit, offset)

    page = await newest_first(fetch, lambda e: e.at, query.until, query.limit, query.cursor)
    return AuditPage(entries=[_entry(e) for e in page.items], next_cursor=page.next_cursor)


def _entry(e: AuditEntry) -> AuditOut:
    return AuditOut(id=e.id, at=e.at, actor_id=e.actor.id, actor_role=e.actor.role, action=e.action,
                    target=e.target, department=e.department, version_before=e.version_before,
                    version_after=e.version_after, detail=dict(e.detail))


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/audit", "Read the audit log", EVERYONE, list_audit, AuditQuery, NoBody, AuditPage,
              description="Every change, newest first, paged like /events: keys and admin tokens created or "
                          "revoked (API and CLI), policies reloaded or adopted (versions before and after), "
                          "budgets changed by a policy (before and after, one entry per department), billing "
                          "periods closed. Who: the admin token's id and role, or the OS user for the CLI. A "
                          "manager sees the entries about its department only."),
]
