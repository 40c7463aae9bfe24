"""Alert notifications as values: what happened, to which budget, and a sentence to act on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from costwarden.core.denials import amount, budget_name, local_time, resets, spent_verb
from costwarden.core.forecasting import Projection
from costwarden.core.kinds import ScopeKind
from costwarden.core.money import format_dollars, format_usd
from costwarden.core.scopes import BudgetCheck
from costwarden.core.watch import describe_seconds


class AlertKind(StrEnum):
    """What an alert is about (SPEC sections 2 and 13)."""

    THRESHOLD = "threshold"  # settled spend crossed an alert_at fraction
    EXHAUSTED = "exhausted"  # a hard budget refused its first call
    ACTION = "action"  # a restriction started
    FORECAST = "forecast"  # projected to exceed the limit by the period's end
    BREAKER = "breaker"  # a key's rolling budget (the runaway-agent breaker) crossed a threshold
    ANOMALY = "anomaly"  # a key's or department's spend rate far above its own baseline
    LOOP = "loop"  # a key sending the same request again and again


KINDS = tuple(AlertKind)
CENT_NANOS = 10_000_000


@dataclass(frozen=True, slots=True)
class Notification:
    """One alert; ``payload()`` is the JSON webhook body of SPEC section 2."""

    kind: str
    department: str | None
    scope: str
    budget_index: int | None  # None for alerts about behaviour (anomaly, loop), not a budget
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
    kind = AlertKind.BREAKER if check.scope.kind == "key" and budget.period.kind == "rolling" else AlertKind.THRESHOLD
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
    return _enforcement(AlertKind.EXHAUSTED, check, used, text)


def restriction_notification(check: BudgetCheck, used: int, tz: ZoneInfo) -> Notification:
    """'ENGINEERING has used up its $5,000.00 monthly budget; from now until 2027-01-01 only tier 1
    models are served.'"""
    budget = check.budget
    tiers = ", ".join(map(str, sorted(budget.action.tiers)))
    until = f"{check.window.end.astimezone(tz):%Y-%m-%d}"
    text = (f"{_subject(check)} has used up its {budget_name(budget)} ({amount(budget.unit, used)} "
            f"{spent_verb(budget.unit)}); from now until {until} only tier {tiers} models are served.")
    return _enforcement(AlertKind.ACTION, check, used, text)


def _enforcement(kind: AlertKind, check: BudgetCheck, used: int, text: str) -> Notification:
    budget = check.budget
    start = check.window.start if budget.period.is_calendar else check.window.end - timedelta(seconds=budget.period.seconds)
    return Notification(kind, check.scope.department, check.scope.id, check.index, budget.period.text, None,
                        used, budget.limit, budget.unit, start, check.window.end, text)


def forecast_notification(check: BudgetCheck, projection: Projection, tz: ZoneInfo) -> Notification:
    """'MARKETING is projected to spend $1,240.00 of its $1,000.00 monthly budget by 2026-12-01
    ($412.00 spent; the limit is reached on 2026-11-24), at its mean weekday and weekend-day spend.'"""
    budget = check.budget
    assert projection.projected is not None
    reached = f"; the limit is reached on {projection.reaches_on:%Y-%m-%d}" if projection.reaches_on else ""
    end = f"{check.window.end.astimezone(tz):%Y-%m-%d}"
    text = (f"{_subject(check)} is projected to {'spend' if budget.unit == 'usd' else 'use'} "
            f"{amount(budget.unit, projection.projected)} of its {budget_name(budget)} by {end} "
            f"({amount(budget.unit, projection.spent)} {spent_verb(budget.unit)} so far{reached}); "
            f"method: {projection.method}.")
    return _enforcement(AlertKind.FORECAST, check, projection.spent, text)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What a key or department did that an anomaly or loop alert tells of."""

    scope: str  # key:DEPT/ID or dept:DEPT
    department: str
    key_id: str | None
    window_s: int  # how long the rule looked
    start: datetime  # the alert's period (it is raised once in it)
    end: datetime
    breaker_until: datetime | None = None  # the key's breaker is open until then

    def who(self) -> str:
        return f"key {self.key_id} of {self.department}" if self.key_id else self.department

    def then(self, tz: ZoneInfo) -> str:
        if self.breaker_until is None:
            return ""
        return f"; its breaker is open (its calls are refused) until {local_time(self.breaker_until, tz)}"


def anomaly_notification(seen: Behaviour, spent: int, usual: int, baseline_s: int, tz: ZoneInfo) -> Notification:
    """'Key k-1 of ENGINEERING spent $42.10 in the last 15 min, 84 times its average of $0.50 per
    15 min over the previous 7 d; its breaker is open ... Check for a job or agent left running.'
    ``usual``: the baseline's spend scaled to the window."""
    window = describe_seconds(seen.window_s)
    baseline = describe_seconds(baseline_s)
    average = format_dollars(usual) if usual >= CENT_NANOS else "less than $0.01"
    times = (f"{spent // usual:,} times its average of {average} per {window} over the previous {baseline}"
             if usual > 0 else f"and nothing in the previous {baseline}")
    text = (f"{_capital(seen.who())} spent {format_dollars(spent)} in the last {window}, {times}{seen.then(tz)}. "
            "Check for a job or agent left running.")
    return _behaviour(AlertKind.ANOMALY, seen, spent, usual, text)


def loop_notification(seen: Behaviour, repeats: int, tz: ZoneInfo) -> Notification:
    """'Key k-1 of ENGINEERING sent the same request 20 times in 60 s; its breaker is open ...'"""
    text = (f"{_capital(seen.who())} sent the same request {repeats:,} times in "
            f"{describe_seconds(seen.window_s)}{seen.then(tz)}. Check the client for a retry or agent loop.")
    return _behaviour(AlertKind.LOOP, seen, 0, 0, text)


def _behaviour(kind: AlertKind, seen: Behaviour, spent: int, limit: int, text: str) -> Notification:
    window = int((seen.end - seen.start).total_seconds())
    return Notification(kind, seen.department, seen.scope, None, f"{window}s", None, spent, limit, "usd",
                        seen.start, seen.end, text)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
