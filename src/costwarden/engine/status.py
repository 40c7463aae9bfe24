"""Budget status: every budget's limit, settled spend, reservations, room and forecast, read live
from the counter store (the numbers admission decides on), for the admin API and the dashboard.

Pure but for the snapshot read and the projection (the ledger's, through ``project``): the
policy, those functions and ``now`` come in, values come out; rendering is the caller's job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from costwarden.core.forecasting import Projection
from costwarden.core.money import NANOS_PER_USD
from costwarden.core.periods import Window
from costwarden.core.policy import RESTRICT, Budget, Policy
from costwarden.core.scopes import BudgetCheck, Caller, Scope, plan_for
from costwarden.counters.base import Snapshot

SnapshotFn = Callable[[Sequence[Window], Sequence[str], float], Awaitable[Snapshot]]
# the projections of the given budgets, by (scope id, budget index)
ProjectFn = Callable[[Sequence[BudgetCheck]], Awaitable[Mapping[tuple[str, int], Projection]]]
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One budget of one scope in its current period. Amounts are in the budget's unit:
    nano-dollars, or tokens when ``budget.unit == "tokens"``."""

    caller: Caller  # a caller the budget applies to (its team or key id name team and key scopes)
    check: BudgetCheck
    spent: int
    reserved: int
    restricted: bool  # a restrict_tiers budget tripped for this period
    forecast: Decimal | None  # USD rounded to cents, or whole tokens; calendar periods with enough data

    @property
    def scope(self) -> Scope:
        return self.check.scope

    @property
    def budget(self) -> Budget:
        return self.check.budget

    @property
    def remaining(self) -> int:
        """The room left for new calls (never below zero, as in the gateway's header)."""
        return max(0, self.budget.limit - self.spent - self.reserved)

    @property
    def utilization_pct(self) -> Decimal:
        """Settled spend as a percentage of the limit, with two decimals."""
        if self.budget.limit <= 0:
            return Decimal("0.00")
        return (Decimal(self.spent * 100) / self.budget.limit).quantize(CENT, rounding=ROUND_HALF_EVEN)


def status_checks(policy: Policy, now: datetime, keys: Iterable[tuple[str, str]] = (),
                  department: str | None = None,
                  users: Iterable[tuple[str, str]] = ()) -> list[tuple[Caller, BudgetCheck]]:
    """The budget checks to report, widest scope first: the organization's and the tags' (unless one
    ``department`` is asked for), each department's, its teams', the per-key budgets of ``keys``,
    given as (key id, department) pairs of active keys, and the per-user budgets of ``users``, given
    as (user, department) pairs (see ``per_user_since``)."""
    checks: list[tuple[Caller, BudgetCheck]] = []
    if department is None and policy.departments:
        first = next(iter(policy.departments))
        checks += _of_kind(policy, Caller(first), now, "organization")
        for pair in sorted(policy.tags):  # a tag's spend spans departments, like the organization's
            checks += _of_kind(policy, Caller(first, tags=(pair,)), now, "tag")
    by_department: dict[str, list[str]] = {}
    for key_id, dept_id in keys:
        by_department.setdefault(dept_id, []).append(key_id)
    users_of: dict[str, list[str]] = {}
    for user, dept_id in users:
        users_of.setdefault(dept_id, []).append(user)
    for dept in policy.departments.values():
        if department is not None and dept.id != department:
            continue
        checks += _of_kind(policy, Caller(dept.id), now, "department")
        for team in dept.teams:
            checks += _of_kind(policy, Caller(dept.id, team), now, "team")
        if dept.per_key.budgets:
            for key_id in by_department.get(dept.id, ()):
                checks += _of_kind(policy, Caller(dept.id, key_id=key_id), now, "key")
        if dept.per_user.budgets:
            for user in sorted(set(users_of.get(dept.id, ()))):
                checks += _of_kind(policy, Caller(dept.id, user=user), now, "user")
        for customer in policy.customers.values():
            if customer.department == dept.id:
                checks += _of_kind(policy, Caller(dept.id, customer=customer.id), now, "customer")
    return checks


def per_user_since(policy: Policy, now: datetime, department: str | None = None) -> dict[str, datetime]:
    """For each department with per-user budgets (or just ``department``): the start of the widest
    current window of those budgets. The users with spend since then are the ones to report."""
    starts: dict[str, datetime] = {}
    for dept in policy.departments.values():
        if not dept.per_user.budgets or department not in (None, dept.id):
            continue
        windows = [c.window.start for _, c in _of_kind(policy, Caller(dept.id, user="-"), now, "user")]
        starts[dept.id] = min(windows)
    return starts


async def budget_status(policy: Policy, snapshot: SnapshotFn, now: datetime,
                        keys: Iterable[tuple[str, str]] = (), department: str | None = None,
                        users: Iterable[tuple[str, str]] = (), project: ProjectFn | None = None) -> list[BudgetStatus]:
    """Status of the budgets ``status_checks`` picks, from one snapshot of the counters at ``now``;
    ``project`` forecasts them (``reports.budget_forecast.project_checks``), else none is given."""
    checks = status_checks(policy, now, keys, department, users)
    flag_keys = [c.flag_key for _, c in checks if c.budget.action.kind == RESTRICT]
    read = await snapshot([c.window for _, c in checks], flag_keys, now.timestamp())
    projections = await project([c for _, c in checks]) if project is not None else {}
    return [BudgetStatus(caller, check, spent, reserved,
                         check.budget.action.kind == RESTRICT and check.flag_key in read.flags,
                         forecast(check, projections.get((check.scope.id, check.index))))
            for (caller, check), (spent, reserved) in zip(checks, read.usage, strict=True)]


def forecast(check: BudgetCheck, projection: Projection | None) -> Decimal | None:
    """The projected spend at the end of a calendar period, by the method of ``core.forecasting``
    (None for rolling windows, and while it waits for enough data): USD rounded half-even to
    cents, or whole tokens."""
    if projection is None or projection.projected is None:
        return None
    if check.budget.unit == "usd":
        return (Decimal(projection.projected) / NANOS_PER_USD).quantize(CENT, rounding=ROUND_HALF_EVEN)
    return Decimal(projection.projected)


def _of_kind(policy: Policy, caller: Caller, now: datetime, kind: str) -> list[tuple[Caller, BudgetCheck]]:
    return [(caller, check) for check in plan_for(policy, caller, now).budgets if check.scope.kind == kind]

