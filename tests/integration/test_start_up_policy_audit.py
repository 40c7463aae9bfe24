"""A server started with a policy other than the one in force records the change in the audit
log, with the versions and the budgets it changed; restarting with the same policy records
nothing more."""

from __future__ import annotations

from pathlib import Path

from costwarden.app.bootstrap import running
from costwarden.app.settings import Settings
from costwarden.core.audit import AuditAction
from costwarden.counters import MemoryCounterStore
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy

BASE = """
version: 1
departments:
  HR:
    budgets: [{limit: 200, period: monthly, action: reject}]
"""


async def start_with(db_url: str, text: str) -> None:
    async with running(Settings(db_url=db_url), parse_policy(text), store=MemoryCounterStore()):
        pass


async def test_a_changed_start_up_policy_is_audited_once(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    await start_with(db_url, BASE)
    await start_with(db_url, BASE.replace("limit: 200", "limit: 300"))
    await start_with(db_url, BASE.replace("limit: 200", "limit: 300"))  # the same again: nothing new
    ledger = await Ledger.open(db_url)
    try:
        entries = await ledger.list_audit()
    finally:
        await ledger.close()
    adopted = [e for e in entries if e.action == AuditAction.POLICY_ADOPTED]
    changed = [e for e in entries if e.action == AuditAction.BUDGETS_CHANGED]
    assert [(e.version_before, e.version_after, e.actor.role) for e in adopted] == [(1, 2, "server")]
    assert [e.department for e in changed] == ["HR"]
