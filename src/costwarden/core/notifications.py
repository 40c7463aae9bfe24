"""Alert notifications as values: what happened, to which budget, and a sentence to act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from costwarden.core.denials import amount, budget_name, resets, spent_verb
from costwarden.core.kinds import ScopeKind
from costwarden.core.money import format_usd
from costwarden.core.scopes import BudgetCheck

KINDS = ("threshold", "exhausted", "action", "forecast", "breaker")


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert; ``payload()`` is the JSON webhook body of SPEC section 2."""

    kind: str
    department: str | None
    scope: str
    budget_index: int
    period: str
    threshold: Decimal | None
    spent: int
    limit: int
    unit: str
    period_start: datetime
    period_end: datetime
    text: str

    @property
    def dedupe_key(self) -> str:
        return f"{self.kind}|{self.scope}|{self.budget_index}|{self.period}|{self.period_start.isoformat()}|{self.threshold}"

    def payload(self) -> dict[str, object]:
        money = self.unit == "usd"
        return {
            "kind": self.kind,
            "department": self.department,
            "scope": self.scope,
            "budget": {"index": self.budget_index, "period": self.period},
            "threshold": float(self.threshold) if self.threshold is not None else None,
            "spent_usd": format_usd(self.spent) if money else None,
            "limit_usd": format_usd(self.limit) if money else None,
            "spent_tokens": None if money else self.spent,
            "limit_tokens": None if money else self.limit,
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "text": self.text,
        }


def _subject(check: BudgetCheck) -> str:
    scope = check.scope
    return scope.department if scope.kind == ScopeKind.DEPARTMENT and scope.department else scope.label


def threshold_notification(check: BudgetCheck, fraction: Decimal, spent: int, tz: ZoneInfo) -> Notification:
    """'MARKETING has reached 80% of its $1,000.00 monthly budget ($812.40 spent); it resets 2026-12-01.'"""
    budget = check.budget
    percent = f"{(fraction * 100).normalize():f}%"
    text = (f"{_subject(check)} has reached {percent} of its {budget_name(budget)} "
            f"({amount(budget.unit, spent)} {spent_verb(budget.unit)}); {resets(check, tz, day_only=True)}.")
    kind = "breaker" if check.scope.kind == "key" and budget.period.kind == "rolling" else "threshold"
    start = check.window.start if budget.period.is_calendar else check.window.end - timedelta(seconds=budget.period.seconds)
    return Notification(kind, check.scope.department, check.scope.id, check.index, budget.period.text, fraction,
                        spent, budget.limit, budget.unit, start, check.window.end, text)


def exhausted_notification(check: BudgetCheck, used: int, tz: ZoneInfo) -> Notification:
    """'HR has used up its $200.00 monthly budget ($200.00 spent); calls that do not fit are refused
    until it resets 2027-01-01.'"""
    budget = check.budget
    until = resets(check, tz, day_only=True).removeprefix("it resets ")
    text = (f"{_subject(check)} has used up its {budget_name(budget)} ({amount(budget.unit, used)} "
            f"{spent_verb(budget.unit)}); calls that do not fit are refused "
            + (f"until it resets {until}." if budget.period.is_calendar else f"({until})."))
    return _enforcement("exhausted", check, used, text)


def restriction_notification(check: BudgetCheck, used: int, tz: ZoneInfo) -> Notification:
    """'ENGINEERING has used up its $5,000.00 monthly budget; from now until 2027-01-01 only tier 1
    models are served.'"""
    budget = check.budget
    tiers = ", ".join(map(str, sorted(budget.action.tiers)))
    until = f"{check.window.end.astimezone(tz):%Y-%m-%d}"
    text = (f"{_subject(check)} has used up its {budget_name(budget)} ({amount(budget.unit, used)} "
            f"{spent_verb(budget.unit)}); from now until {until} only tier {tiers} models are served.")
    return _enforcement("action", check, used, text)


def _enforcement(kind: str, check: BudgetCheck, used: int, text: str) -> Notification:
    budget = check.budget
    start = check.window.start if budget.period.is_calendar else check.window.end - timedelta(seconds=budget.period.seconds)
    return Notification(kind, check.scope.department, check.scope.id, check.index, budget.period.text, None,
                        used, budget.limit, budget.unit, start, check.window.end, text)
