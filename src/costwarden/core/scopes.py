"""Which counters a call is checked against: its scopes, their budgets and their rate limits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from costwarden.core.periods import Period, Window
from costwarden.core.policy import RESTRICT, Budget, Policy, Rules

RATE_PERIOD = Period(text="1m", kind="rolling", seconds=60)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a call is attributed to."""

    department: str
    team: str | None = None
    key_id: str | None = None
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """One accountable scope: ``id`` is stable (counter keys), ``label`` is for people."""

    id: str
    kind: str  # organization | department | team | key | user
    label: str
    department: str | None
    rules: Rules


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    scope: Scope
    index: int
    budget: Budget
    window: Window

    @property
    def flag_key(self) -> str:
        """The store flag that marks a restrict_tiers budget as tripped for this period."""
        return f"restrict|{self.window.key}"


@dataclass(frozen=True, slots=True)
class LimitCheck:
    scope: Scope
    metric: str  # rpm | tpm
    limit: int
    enforce: bool
    window: Window


@dataclass(frozen=True, slots=True)
class Plan:
    """Every counter a call touches. ``windows`` orders budgets first, then limits.

    A plan holds until ``valid_until`` (epoch seconds): the first instant a calendar window ends
    or a rolling window moves to its next bucket, so callers may reuse it until then.
    """

    budgets: tuple[BudgetCheck, ...]
    limits: tuple[LimitCheck, ...]
    windows: tuple[Window, ...]
    flag_keys: tuple[str, ...]
    valid_until: float


def scopes_of(policy: Policy, caller: Caller) -> tuple[Scope, ...]:
    """The scopes a call falls in, widest first: organization, department, team, key, user."""
    dept = policy.departments[caller.department]
    scopes = [Scope("org", "organization", "The organization", None, policy.organization),
              Scope(f"dept:{dept.id}", "department", f"Department {dept.id}", dept.id, dept.rules)]
    if caller.team is not None and caller.team in dept.teams:
        team = dept.teams[caller.team]
        scopes.append(Scope(f"team:{dept.id}/{team.id}", "team", f"Team {team.id} of {dept.id}", dept.id, team.rules))
    if caller.key_id is not None and dept.per_key:
        scopes.append(Scope(f"key:{dept.id}/{caller.key_id}", "key", f"Key {caller.key_id} of {dept.id}", dept.id, dept.per_key))
    if caller.user is not None and dept.per_user:
        scopes.append(Scope(f"user:{dept.id}/{caller.user}", "user", f"User {caller.user} of {dept.id}", dept.id, dept.per_user))
    return tuple(scopes)


def plan_for(policy: Policy, caller: Caller, now: datetime) -> Plan:
    """Build the counter plan of a call at ``now``."""
    budgets: list[BudgetCheck] = []
    limits: list[LimitCheck] = []
    for scope in scopes_of(policy, caller):
        for index, budget in enumerate(scope.rules.budgets):
            base = f"b|{scope.id}|{index}|{budget.period.text}|{budget.unit}"
            budgets.append(BudgetCheck(scope, index, budget, budget.period.window(base, now, policy.timezone)))
        rate = scope.rules.limits
        if rate is None:
            continue
        for metric, limit in (("rpm", rate.rpm), ("tpm", rate.tpm)):
            if limit is not None:
                window = RATE_PERIOD.window(f"r|{scope.id}|{metric}", now, policy.timezone)
                limits.append(LimitCheck(scope, metric, limit, rate.enforce, window))
    windows = tuple(c.window for c in budgets) + tuple(c.window for c in limits)
    flags = tuple(c.flag_key for c in budgets if c.budget.action.kind == RESTRICT)
    return Plan(tuple(budgets), tuple(limits), windows, flags, _valid_until(budgets, limits, now))


def _valid_until(budgets: list[BudgetCheck], limits: list[LimitCheck], now: datetime) -> float:
    until = now.timestamp() + 3600.0
    for check in budgets:
        period = check.budget.period
        edge = check.window.end.timestamp() if period.is_calendar else (check.window.bucket + 1) * period.bucket_seconds
        until = min(until, edge)
    for limit in limits:
        until = min(until, (limit.window.bucket + 1) * RATE_PERIOD.bucket_seconds)
    return until
