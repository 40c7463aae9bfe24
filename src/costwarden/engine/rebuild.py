"""Rebuild budget counters from the ledger (after a restart, the ledger is the truth).

A rebuild replaces: it sets every counter's settled spend to the ledger's figure and never adds
to what the store holds, so running it twice, or on a store that kept some counters, gives the
same counters. Reservations of calls in flight are kept.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from datetime import datetime

from costwarden.core.periods import Period, Window
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, plan_for, ruled_tag_names
from costwarden.counters.base import CounterStore
from costwarden.ledger import Ledger

_CALLER = ("department", "team", "key_id", "user", "customer")

LOADED_MARK = "costwarden|counters-loaded"  # claimed in the counter store by whoever loads it from the ledger


def _periods(policy: Policy) -> dict[str, Period]:
    rules = [policy.organization]
    for dept in policy.departments.values():
        rules += [dept.rules, dept.per_key, dept.per_user, *(t.rules for t in dept.teams.values())]
    rules += [plan.rules for plan in policy.plans.values()]
    rules += [tag.rules for tag in policy.tags.values()]
    return {b.period.text: b.period for r in rules for b in r.budgets}


async def rebuild_counters(policy: Policy, store: CounterStore, ledger: Ledger, now: datetime,
                           marker: str | None = None) -> int:
    """Set every counter to the ledger's settled spend of its current window, under a new generation
    marker (``marker``, or one made here); returns the number of counter cells written."""
    loads = [(window, amount) for _, window, amount in await ledger_spend(policy, ledger, now)]
    await store.replace(loads, marker or new_marker(now))
    return len(loads)


def new_marker(now: datetime) -> str:
    """A generation marker no earlier build used: when it was built, and a random part."""
    return f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


def ledger_totals(spend: Sequence[tuple[BudgetCheck, Window, int]]) -> dict[str, tuple[BudgetCheck, int]]:
    """The ledger's settled spend per counter (summed over a rolling window's buckets), keyed by
    counter key, with the check of its current window."""
    totals: dict[str, tuple[BudgetCheck, int]] = {}
    for check, window, amount in spend:
        _, total = totals.get(window.key, (check, 0))
        totals[window.key] = (check, total + amount)
    return totals


async def ledger_spend(policy: Policy, ledger: Ledger, now: datetime) -> list[tuple[BudgetCheck, Window, int]]:
    """The settled spend of every current budget window, as the ledger has it.

    Each ledger row group (department, team, key, user, customer, and the value of every tag name
    the policy gives rules) is added to every window its calls fall in, exactly as admission would
    have counted them, so org, department and tag totals come out right.
    """
    loads: list[tuple[BudgetCheck, Window, int]] = []
    tag_names = ruled_tag_names(policy)
    group_by = [*_CALLER, *(f"tag:{name}" for name in tag_names)]
    for text, period in _periods(policy).items():
        since, _ = period.bounds(now, policy.timezone)
        bucket = period.bucket_seconds if not period.is_calendar else None
        rows = await ledger.totals(since, None, group_by=group_by, bucket_seconds=bucket)
        for row in rows:
            department = row["department"]
            if not isinstance(department, str) or department not in policy.departments:
                continue
            tags = tuple((name, value) for name in tag_names if (value := _text(row[f"tag:{name}"])) is not None)
            team, key_id, user, customer = (_text(row[name]) for name in _CALLER[1:])
            caller = Caller(department, team, key_id, user, customer, tags)
            for check in plan_for(policy, caller, now).budgets:
                if check.budget.period.text != text:
                    continue
                budget = check.budget
                amount = row.cost_nanos if budget.unit == "usd" else row.input_tokens + row.output_tokens
                window = check.window if row.bucket is None else dataclasses.replace(check.window, bucket=row.bucket)
                loads.append((check, window, amount))
    return loads


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
