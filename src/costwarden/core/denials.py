"""Refusals as data: the error to raise and a sentence a person can act on."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from costwarden import errors
from costwarden.core.catalog import ModelSpec
from costwarden.core.kinds import ScopeKind, Unit
from costwarden.core.money import format_dollars
from costwarden.core.policy import RESTRICT, Budget, Department
from costwarden.core.scopes import BudgetCheck, LimitCheck, Plan, Scope


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a call is refused: the error class to raise and a message a person can act on."""

    error: type[errors.CostwardenError]
    message: str
    retry_after: int | None = None
    check: BudgetCheck | None = None  # the budget that refused the call, when a budget did
    used: int = 0  # what that budget had spent and held then

    def exception(self) -> errors.CostwardenError:
        exc = self.error(self.message, retry_after=self.retry_after)
        if self.check is not None:
            exc.budget_scope = self.check.scope.id
        return exc


def subject(scope: Scope) -> str:
    """Who a refusal names: the scope's label, and for a tag's budget which calls it counts (a
    caller in any department may meet it)."""
    if scope.kind == ScopeKind.TAG:
        return f"{scope.label} (calls tagged {scope.id.removeprefix('tag:')})"
    return scope.label


def amount(unit: Unit, value: int) -> str:
    """'$1,000.00' for money, '12,000 tokens' for token budgets."""
    return format_dollars(value) if unit == Unit.USD else f"{value:,} tokens"


def local_time(instant: datetime, tz: ZoneInfo) -> str:
    """'2026-12-01 00:00 America/New_York'."""
    return f"{instant.astimezone(tz):%Y-%m-%d %H:%M} {tz.key}"


def budget_name(budget: Budget) -> str:
    """'$1,000.00 monthly budget', '50,000 tokens rolling 1h budget'."""
    return f"{amount(budget.unit, budget.limit)} {budget.period.describe()} budget"


def spent_verb(unit: Unit) -> str:
    """'spent' for money, 'used' for tokens."""
    return "spent" if unit == Unit.USD else "used"


def resets(check: BudgetCheck, tz: ZoneInfo, *, day_only: bool = False) -> str:
    """When a budget's room comes back: 'it resets 2026-12-01 00:00 America/New_York' (or the day)."""
    period = check.budget.period
    if period.is_calendar:
        end = f"{check.window.end.astimezone(tz):%Y-%m-%d}" if day_only else local_time(check.window.end, tz)
        return f"it resets {end}"
    return f"spend leaves this rolling window {period.text} after it was made"


def budget_denial(check: BudgetCheck, used: int, tz: ZoneInfo, why: str) -> Denial:
    budget = check.budget
    text = (f"{subject(check.scope)} has {spent_verb(budget.unit)} {amount(budget.unit, used)} of its "
            f"{budget_name(budget)}{why}; "
            f"{resets(check, tz)}.")
    return Denial(errors.BudgetExceeded, text, check=check, used=used)


def rate_denial(check: LimitCheck, used: int, need: int, wait: int | None) -> Denial:
    """A call a rate limit has no room for; ``wait`` is when its sliding window will have room
    (whole seconds), None when the call alone needs more than the limit."""
    what = "requests" if check.metric == "rpm" else "tokens"
    text = (f"{subject(check.scope)} is limited to {check.limit:,} {what} per minute and has used {used:,} in "
            f"the last minute; this call needs {need:,}.")
    if wait is None:
        text += f" It can never fit in {check.limit:,} {what} per minute: make it smaller."
        return Denial(errors.RateLimitNeverFits, text)
    text += f" Retry after {wait} s."
    return Denial(errors.RateLimited, text, retry_after=wait)


def rights_denial(dept: Department, model: ModelSpec, restricted: frozenset[int] | None, plan: Plan,
                  flags: Set[str], new_flags: list[BudgetCheck], tz: ZoneInfo) -> Denial:
    tripped = [c for c in plan.budgets if c.budget.action.kind == RESTRICT and (c.flag_key in flags or c in new_flags)]
    if restricted is not None and tripped:
        check = tripped[0]
        tiers = ", ".join(map(str, sorted(restricted)))
        text = (f"{subject(check.scope)} has used up its {budget_name(check.budget)} and may use only tier {tiers} "
                f"models until {local_time(check.window.end, tz)}; {model.id} is tier {model.tier} "
                f"and has no downgrade into tier {tiers}.")
        return Denial(errors.ModelNotAllowed, text)
    tiers = ", ".join(map(str, sorted(dept.tiers)))
    if dept.models is not None:
        text = (f"Department {dept.id} may use only {', '.join(sorted(dept.models))} (tier {tiers}); {model.id} "
                f"is not among them and has no downgrade that is.")
    else:
        text = (f"Department {dept.id} may use tier {tiers} models; {model.id} is tier {model.tier} and has "
                f"no downgrade into an allowed tier.")
    return Denial(errors.ModelNotAllowed, text)

