"""``report forecast``: every calendar budget of the organization, its tags, departments and teams,
projected to its period's end from the ledger (see ``core.forecasting`` for the method)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from zoneinfo import ZoneInfo

from costwarden.core.forecasting import LOOKBACK_DAYS, Projection, local_days, project
from costwarden.core.kinds import ScopeKind, Unit
from costwarden.core.money import format_usd
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck
from costwarden.engine.status import status_checks
from costwarden.ledger import Ledger
from costwarden.ledger.queries import GroupValue
from costwarden.reports.tabular import Cell, Report

# Spend is read in quarter hours, so that local days are exact in every timezone (offsets are
# whole quarter hours), with a bounded number of rows: 96 per day and group.
QUARTER_HOUR_S = 900


@dataclass(frozen=True, slots=True)
class ForecastLine:
    """One budget and its projection; amounts in the budget's unit."""

    check: BudgetCheck
    projection: Projection

    @property
    def unit(self) -> Unit:
        return self.check.budget.unit

    @property
    def limit(self) -> int:
        return self.check.budget.limit


async def budget_forecasts(ledger: Ledger, policy: Policy, period_start: datetime, period_end: datetime,
                           now: datetime, department: str | None = None) -> list[ForecastLine]:
    """The forecast of every calendar budget in force during the billing period [start, end) as
    seen at ``now`` (a period that has ended shows its actual spend)."""
    at = min(max(now, period_start), period_end - timedelta(microseconds=1))
    checks = [check for _, check in status_checks(policy, at, (), department) if check.budget.period.is_calendar]
    projections = await project_checks(ledger, checks, policy.timezone, now)
    return [ForecastLine(check, projections[check.scope.id, check.index]) for check in checks]


async def project_checks(ledger: Ledger, checks: Sequence[BudgetCheck], tz: ZoneInfo,
                         now: datetime) -> dict[tuple[str, int], Projection]:
    """The projection of each calendar budget of ``checks`` at ``now``, by (scope id, budget
    index), from one grouped read of the ledger: its period and the lookback before it."""
    checks = [check for check in checks if check.budget.period.is_calendar]
    if not checks:
        return {}
    today = now.astimezone(tz).date()
    earliest = min(check.window.start for check in checks) - timedelta(days=LOOKBACK_DAYS + 1)
    until = min(now, max(check.window.end for check in checks))
    kinds = {check.scope.kind for check in checks}
    group_by = ["department", "team"] + [_DIMENSION[kind] for kind in _DIMENSION if kind in kinds]
    group_by += sorted({f"tag:{_tag(check)[0]}" for check in checks if check.scope.kind == ScopeKind.TAG})
    rows = await ledger.totals(earliest, until, group_by=group_by, bucket_seconds=QUARTER_HOUR_S)
    # group values -> local day -> (nano-dollars, tokens)
    daily: dict[tuple[GroupValue, ...], dict[date, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    first: date | None = None
    for row in rows:
        assert row.bucket is not None
        day = datetime.fromtimestamp(row.bucket * QUARTER_HOUR_S, UTC).astimezone(tz).date()
        first = day if first is None else min(first, day)
        cell = daily[tuple(row.groups[name] for name in group_by)][day]
        cell[0] += row.cost_nanos
        cell[1] += row.input_tokens + row.output_tokens
    projections = {}
    for check in checks:
        amounts = _scope_daily(check, group_by, daily)
        days = local_days(check.window.start, check.window.end, tz)
        projections[check.scope.id, check.index] = project(amounts, days, today, check.budget.limit, first)
    return projections


COLUMNS = ("scope", "label", "period", "period_start", "period_end", "unit", "limit", "spent", "projected",
           "projected_pct", "limit_reached_on", "state", "method")


def forecast_report(lines: list[ForecastLine], timezone: str, now: datetime) -> Report:
    """The lines as a report: USD amounts as exact decimal strings, tokens as integers."""
    rows = []
    for line in lines:
        check, p = line.check, line.projection
        amount = _usd if line.unit == Unit.USD else _tokens
        pct = None if p.projected is None or line.limit <= 0 else _pct(p.projected, line.limit)
        rows.append({
            "scope": check.scope.id, "label": check.scope.label, "period": check.budget.period.text,
            "period_start": check.window.start.isoformat(), "period_end": check.window.end.isoformat(),
            "unit": str(line.unit), "limit": amount(line.limit), "spent": amount(p.spent),
            "projected": None if p.projected is None else amount(p.projected), "projected_pct": pct,
            "limit_reached_on": None if p.reaches_on is None else p.reaches_on.isoformat(),
            "state": str(p.state), "method": p.method,
        })
    notes = (f"As of {now.astimezone(UTC):%Y-%m-%d %H:%M} UTC; days are local days in {timezone}. "
             "projected_pct is the projected spend as a percentage of the limit.",)
    return Report("Budget forecast", COLUMNS, rows, notes, {"as_of": now.astimezone(UTC).isoformat(),
                                                             "timezone": timezone})


def _usd(nanos: int) -> Cell:
    return format_usd(nanos)


def _tokens(tokens: int) -> Cell:
    return tokens


def _pct(value: int, limit: int) -> str:
    return str((Decimal(value * 100) / limit).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


# the ledger dimension that names the member of a scope kind below the department
_DIMENSION = {ScopeKind.KEY: "key_id", ScopeKind.USER: "user", ScopeKind.CUSTOMER: "customer"}


def _tag(check: BudgetCheck) -> tuple[str, str]:
    """The (name, value) of a tag scope: ``tag:project=atlas`` -> ("project", "atlas")."""
    name, _, value = check.scope.id.removeprefix("tag:").partition("=")
    return name, value


def _scope_daily(check: BudgetCheck, group_by: list[str],
                 daily: dict[tuple[GroupValue, ...], dict[date, list[int]]]) -> dict[date, int]:
    """The daily amounts of one budget's scope, in its unit."""
    scope = check.scope
    index = 0 if check.budget.unit == Unit.USD else 1
    wanted: dict[int, GroupValue] = {}  # group position -> the value the scope requires there
    if scope.kind == ScopeKind.TAG:
        name, value = _tag(check)
        wanted[group_by.index(f"tag:{name}")] = value
    elif scope.kind != ScopeKind.ORGANIZATION and scope.kind != ScopeKind.CUSTOMER:
        wanted[0] = scope.department
    if scope.kind == ScopeKind.TEAM:
        wanted[1] = scope.id.split("/", 1)[1]
    elif scope.kind in _DIMENSION:
        member = scope.id.split(":", 1)[1] if scope.kind == ScopeKind.CUSTOMER else scope.id.split("/", 1)[1]
        wanted[group_by.index(_DIMENSION[scope.kind])] = member
    total: dict[date, int] = defaultdict(int)
    for groups, days in daily.items():
        if all(groups[i] == value for i, value in wanted.items()):
            for day, cell in days.items():
                total[day] += cell[index]
    return total


__all__ = ["ForecastLine", "budget_forecasts", "forecast_report", "project_checks"]
