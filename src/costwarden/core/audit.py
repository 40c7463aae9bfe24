"""The audit trail's vocabulary: who changed what, and when (SPEC section 11).

Pure values and the one comparison they need: which budgets a new policy changes. Storing and
listing entries is the ledger's job; recording them is the job of whoever makes the change (the
admin API, the CLI, the policy follower).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from costwarden.core.money import format_dollars
from costwarden.core.policy import Budget, Policy, Rules


class AuditAction(StrEnum):
    """What changed."""

    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    TOKEN_CREATED = "token.created"
    TOKEN_REVOKED = "token.revoked"
    POLICY_RELOADED = "policy.reloaded"  # through the admin API
    POLICY_ADOPTED = "policy.adopted"  # a version stored by another process (a server started with a new file)
    BUDGETS_CHANGED = "budgets.changed"  # one entry per department (None: the organization) a new policy touches
    PERIOD_CLOSED = "period.closed"
    PERIOD_REOPENED = "period.reopened"


CLI_ROLE = "cli"  # the command line: its actor id is the operating-system user name
SERVER_ROLE = "server"  # a server adopting a policy version on its own


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change: an admin token (its id and role), or ``cli`` / ``server``."""

    id: str
    role: str


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change. ``department`` is the one it concerns (a manager reads those of its own only);
    None for the organization as a whole. ``detail`` is JSON-ready."""

    at: datetime
    actor: Actor
    action: AuditAction
    target: str | None = None  # key id, token id, period (YYYY-MM) or policy version
    department: str | None = None
    version_before: int | None = None  # policy versions, for a policy or budget change
    version_after: int | None = None
    detail: Mapping[str, object] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """One budget whose terms differ between two policies; ``before``/``after`` None: added/removed."""

    scope: str  # org, dept:D, team:D/T, key:D/* (every key of D), user:D/* (every user of D)
    department: str | None
    index: int
    before: str | None
    after: str | None

    def as_json(self) -> dict[str, object]:
        return {"scope": self.scope, "index": self.index, "before": self.before, "after": self.after}


def describe_budget(budget: Budget) -> str:
    """A budget's terms in one line, e.g. ``$200.00 monthly, reject, alerts at 0.8``."""
    amount = format_dollars(budget.limit) if budget.unit == "usd" else f"{budget.limit:,} tokens"
    text = f"{amount} {budget.period.text}, {budget.action.describe()}"
    if budget.alert_at:
        text += f", alerts at {', '.join(str(f) for f in budget.alert_at)}"
    if not budget.enforce:
        text += ", not enforced"
    return text


def budget_changes(old: Policy, new: Policy) -> list[BudgetChange]:
    """Every budget added, removed or changed from ``old`` to ``new``, widest scope first."""
    before, after = _budgets(old), _budgets(new)
    changes = []
    for (scope, department, index) in sorted(before.keys() | after.keys(), key=_order):
        was, now = before.get((scope, department, index)), after.get((scope, department, index))
        if was != now:
            changes.append(BudgetChange(scope, department, index, was, now))
    return changes


def budget_entries(changes: list[BudgetChange], at: datetime, actor: Actor, version_before: int,
                   version_after: int) -> list[AuditEntry]:
    """One ``budgets.changed`` entry per department touched (None: the organization's budgets)."""
    by_department: dict[str | None, list[BudgetChange]] = {}
    for change in changes:
        by_department.setdefault(change.department, []).append(change)
    return [AuditEntry(at, actor, AuditAction.BUDGETS_CHANGED, target=f"policy version {version_after}",
                       department=department, version_before=version_before, version_after=version_after,
                       detail={"budgets": [c.as_json() for c in items]})
            for department, items in by_department.items()]


def policy_entries(old: Policy, new: Policy, at: datetime, actor: Actor, action: AuditAction,
                   version_before: int, version_after: int) -> list[AuditEntry]:
    """The entries of a policy swap: the swap itself, then its budget changes."""
    changes = budget_changes(old, new)
    swap = AuditEntry(at, actor, action, target=f"policy version {version_after}", version_before=version_before,
                      version_after=version_after,
                      detail={"budgets_changed": len(changes), "departments": sorted(new.departments)})
    return [swap, *budget_entries(changes, at, actor, version_before, version_after)]


_Slot = tuple[str, str | None, int]  # scope, department, index


def _budgets(policy: Policy) -> dict[_Slot, str]:
    found: dict[_Slot, str] = {}

    def add(scope: str, department: str | None, rules: Rules) -> None:
        for index, budget in enumerate(rules.budgets):
            found[(scope, department, index)] = describe_budget(budget)

    add("org", None, policy.organization)
    for tag in policy.tags.values():  # a tag's budgets span departments, like the organization's
        add(tag.scope_id, None, tag.rules)
    for dept in policy.departments.values():
        add(f"dept:{dept.id}", dept.id, dept.rules)
        for team in dept.teams.values():
            add(f"team:{dept.id}/{team.id}", dept.id, team.rules)
        add(f"key:{dept.id}/*", dept.id, dept.per_key)
        add(f"user:{dept.id}/*", dept.id, dept.per_user)
    return found


def _order(slot: _Slot) -> tuple[str, str, int]:
    """Organization first, then departments by id, each scope's budgets by index."""
    scope, department, index = slot
    return (department or "", scope, index)

