"""GET /budgets (live budget status from the counters) and GET /spend (grouped ledger totals)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from costwarden import errors
from costwarden.core.money import format_usd
from costwarden.core.policy import RESTRICT
from costwarden.engine.status import BudgetStatus, budget_status, per_user_since
from costwarden.http.admin.access import EVERYONE, known_department, visible_department
from costwarden.http.admin.api import AdminCall, Operation
from costwarden.http.admin.schemas import (
    BudgetList,
    BudgetOut,
    BudgetQuery,
    NoBody,
    SpendQuery,
    SpendReport,
    SpendRow,
    SpendTotals,
)
from costwarden.ledger import Ledger, TotalsRow
from costwarden.reports.budget_forecast import project_checks

# group_by names of the API -> the ledger's dimensions (a team is only unique within its department)
_GROUPS = {"department": ("department",), "team": ("department", "team"), "model": ("model_served",),
           "key": ("key_id",), "user": ("user",), "day": ("day",)}
_NAMES = {"model_served": "model", "key_id": "key"}


async def list_budgets(call: AdminCall[BudgetQuery, NoBody]) -> BudgetList:
    runtime = call.runtime
    policy = runtime.policy
    department = visible_department(call.who, call.query.department)
    if department is not None:
        known_department(policy, department)
    keys = [(k.id, k.department) for k in await runtime.ledger.list_keys(department, include_revoked=False)
            if k.department is not None]
    now = runtime.admission.clock()
    users = await _users_with_spend(runtime.ledger, per_user_since(policy, now, department))
    statuses = await budget_status(policy, runtime.admission.store.snapshot, now, keys, department, users,
                                   lambda checks: project_checks(runtime.ledger, checks, policy.timezone, now))
    return BudgetList(as_of=now, timezone=policy.timezone_name, budgets=[_budget(s) for s in statuses])


async def _users_with_spend(ledger: Ledger, since: Mapping[str, datetime]) -> list[tuple[str, str]]:
    """(user, department) of every user with calls in the current window of its department's
    per-user budgets: one grouped ledger read from the earliest of those windows."""
    if not since:
        return []
    rows = await ledger.totals(min(since.values()), None, ["department", "user"], {"department": sorted(since)})
    return [(str(row.groups["user"]), str(row.groups["department"])) for row in rows
            if row.groups["user"] is not None and row.groups["department"] in since]


def _budget(status: BudgetStatus) -> BudgetOut:
    check, budget, scope = status.check, status.budget, status.scope
    amounts = {"limit": budget.limit, "spent": status.spent, "reserved": status.reserved,
               "remaining": status.remaining}
    fields: dict[str, Any] = {}
    for name, value in amounts.items():
        usd = budget.unit == "usd"
        fields[f"{name}_usd"] = format_usd(value) if usd else None
        fields[f"{name}_nanos"] = value if usd else None
        fields[f"{name}_tokens"] = None if usd else value
    forecast = status.forecast
    return BudgetOut(
        scope=scope.id, scope_kind=scope.kind, label=scope.label, department=scope.department,
        team=status.caller.team if scope.kind == "team" else None,
        key_id=status.caller.key_id if scope.kind == "key" else None,
        user=status.caller.user if scope.kind == "user" else None,
        index=check.index, period=budget.period.text, unit=budget.unit,
        action=budget.action.kind,
        action_tiers=sorted(budget.action.tiers) if budget.action.kind == RESTRICT else None,
        enforce=budget.enforce, alert_at=[str(f) for f in budget.alert_at],
        utilization_pct=str(status.utilization_pct), period_start=check.window.start, period_end=check.window.end,
        restricted=status.restricted,
        forecast_usd=None if forecast is None or budget.unit != "usd" else str(forecast),
        forecast_tokens=None if forecast is None or budget.unit == "usd" else int(forecast),
        **fields,
    )


async def spend(call: AdminCall[SpendQuery, NoBody]) -> SpendReport:
    query = call.query
    names = [name.strip() for name in query.group_by.split(",") if name.strip()]
    dimensions: list[str] = []
    for name in names:
        for dimension in _dimensions(name):
            if dimension not in dimensions:
                dimensions.append(dimension)
    department = visible_department(call.who, query.department)
    where = None if department is None else {"department": department}
    rows = await call.runtime.ledger.totals(query.since, query.until, dimensions, where)
    data = [SpendRow(group={_NAMES.get(d, d): _text(row.groups[d]) for d in dimensions}, **_sums([row]))
            for row in rows]
    return SpendReport(since=query.since, until=query.until, group_by=[_NAMES.get(d, d) for d in dimensions],
                       rows=data, totals=SpendTotals(**_sums(rows)))


def _dimensions(name: str) -> tuple[str, ...]:
    if name in _GROUPS:
        return _GROUPS[name]
    if name.startswith("tag:") and 0 < len(name) - 4 <= 64:
        return (name,)
    raise errors.InvalidRequest(f"Cannot group spend by {name!r}: use department, team, model, key, user, day "
                                "or tag:<name>, comma-separated.", param="group_by")


def _sums(rows: list[TotalsRow]) -> dict[str, Any]:
    cost = sum(row.cost_nanos for row in rows)
    return {"requests": sum(row.requests for row in rows), "input_tokens": sum(row.input_tokens for row in rows),
            "cached_input_tokens": sum(row.cached_input_tokens for row in rows),
            "output_tokens": sum(row.output_tokens for row in rows), "cost_usd": format_usd(cost), "cost_nanos": cost}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/budgets", "Read budget status", EVERYONE, list_budgets, BudgetQuery, NoBody, BudgetList,
              description="Every budget of the organization, each tag value, each department and team, the per-key "
                          "budgets of "
                          "active keys and the per-user budgets of every user with calls in their period, each in "
                          "its current period: limit, settled spend, in-flight reservations, room, utilization "
                          "and a forecast at the period's end (the method of report forecast: weekday/weekend aware, none "
                          "before enough data), read live from the counters. A manager sees its department only "
                          "(no organization or tag budgets)."),
    Operation("GET", "/spend", "Read spend", EVERYONE, spend, SpendQuery, NoBody, SpendReport,
              description="Exact ledger totals of admitted calls in [since, until), grouped; the rows add up "
                          "to the totals. A manager sees its department only."),
]
