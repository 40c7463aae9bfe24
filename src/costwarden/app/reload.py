"""Swapping a policy into a running gateway (admin reload)."""

from __future__ import annotations

from dataclasses import dataclass

from costwarden.app.bootstrap import LOADED_MARK, upstream_keys
from costwarden.app.runtime import Runtime
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, scopes_of
from costwarden.engine.rebuild import ledger_spend
from costwarden.providers import UpstreamPool

Slot = tuple[str, int, str, str]  # scope template, budget index, period, unit: what names a counter


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What a reload did."""

    version: int
    previous_version: int
    changed: bool
    upstreams_rebuilt: bool = False
    counters_loaded: int = 0


async def apply_policy(runtime: Runtime, policy: Policy) -> PolicyChange:
    """Swap a validated policy in (a reload): store it as a new version, rebuild the upstream pool
    when its upstreams changed, and load from the ledger the counters of budgets it adds."""
    async with runtime.reload_lock:
        old, previous = runtime.admission.policy, runtime.policy_version
        if policy.source == old.source:
            return PolicyChange(previous, previous, changed=False)
        version = await runtime.ledger.store_policy(policy.source)
        rebuilt = dict(policy.upstreams) != dict(old.upstreams)
        if rebuilt:
            pool = UpstreamPool(policy.upstreams, upstream_keys(policy, runtime.settings.environ))
            runtime.retired_pools.append(runtime.pool)
            runtime.pool = runtime.service.pool = pool
        runtime.admission.policy = policy
        runtime.policy_version = version
        loaded = await _load_added_budgets(runtime, old, policy, version)
        return PolicyChange(version, previous, True, rebuilt, loaded)


async def _load_added_budgets(runtime: Runtime, old: Policy, new: Policy, version: int) -> int:
    """Counters are keyed by scope, budget index, period and unit (see ``plan_for``): a budget whose
    limit or action changed keeps its counter, but one the old policy lacked starts empty and must
    be loaded with this period's spend, once per policy version however many replicas reload it."""
    known = _budget_slots(old)
    if _budget_slots(new) <= known:
        return 0
    store, now = runtime.admission.store, runtime.admission.clock()
    if not await store.claim(f"{LOADED_MARK}|policy-{version}", now.timestamp() + 366 * 86400, now.timestamp()):
        return 0
    spend = await ledger_spend(new, runtime.ledger, now)
    added = [(window, amount) for check, window, amount in spend if _slot(check) not in known]
    await store.load(added)
    return len(added)


def _budget_slots(policy: Policy) -> set[Slot]:
    """(scope template, index, period, unit) of every budget; key and user scopes by department."""
    slots: set[Slot] = set()
    for dept in policy.departments.values():
        for team in (None, *dept.teams):
            for scope in scopes_of(policy, Caller(dept.id, team, key_id="", user="")):
                slots.update((_template(scope.id), i, b.period.text, b.unit) for i, b in enumerate(scope.rules.budgets))
    return slots


def _slot(check: BudgetCheck) -> Slot:
    return _template(check.scope.id), check.index, check.budget.period.text, check.budget.unit


def _template(scope_id: str) -> str:
    kind, _, rest = scope_id.partition(":")
    return f"{kind}:{rest.partition('/')[0]}" if kind in ("key", "user") else scope_id
