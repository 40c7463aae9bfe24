"""Swapping a policy into a running gateway: an admin reload here, or one made on another worker
or replica, which every process picks up from the ledger within seconds (``follow_policy``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from costwarden import errors
from costwarden.app.generation import generation_of
from costwarden.app.runtime import Runtime
from costwarden.core.audit import SERVER_ROLE, Actor, AuditAction, policy_entries
from costwarden.core.metadata import MetadataVersion, changes, merged
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, scopes_of, tag_scopes
from costwarden.engine.rebuild import LOADED_MARK, ledger_spend
from costwarden.ledger import Ledger
from costwarden.policy import env_problems, parse_policy

log = logging.getLogger(__name__)
FOLLOW_S = 2.0  # how often a process looks for a policy stored by another one (SPEC §10: within 5 s)

Slot = tuple[str, int, str, str]  # scope template, budget index, period, unit: what names a counter


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What a reload did."""

    version: int
    previous_version: int
    changed: bool
    upstreams_rebuilt: bool = False
    counters_loaded: int = 0
    previous: Policy | None = None  # the policy replaced, when changed (for the audit log)


async def apply_policy(runtime: Runtime, policy: Policy) -> PolicyChange:
    """Swap a validated policy in (a reload): store it as a new version, rebuild the upstream pool
    when its upstreams changed, and load from the ledger the counters of budgets it adds. A policy
    naming an API key variable outside the server's allow-list is refused (PolicyError)."""
    # The admin API must not be able to send the server's secrets to a host of its choosing.
    problems = env_problems(policy, runtime.settings.upstream_env or ())
    if problems:
        raise errors.PolicyError(problems, source="the policy")
    async with runtime.reload_lock:
        old, previous = runtime.policy, runtime.policy_version
        if policy.source == old.source:
            return PolicyChange(previous, previous, changed=False)
        version = await runtime.ledger.store_policy(policy.source)
        await record_metadata(runtime.ledger, policy, runtime.admission.clock())
        return await _swap(runtime, policy, version)


async def record_metadata(ledger: Ledger, policy: Policy, now: datetime) -> None:
    """Keep the departments' names and codes the policy changes, effective from their
    ``effective_from`` or today (UTC), so that reports book earlier days under earlier codes."""
    added = changes(await ledger.department_metadata(), policy, now.astimezone(UTC).date())
    if added:
        await ledger.record_department_metadata(added, now)


async def backfill_metadata(ledger: Ledger, now: datetime) -> None:
    """On a ledger that has policy versions but no department metadata yet (one written before
    metadata was kept), record the codes of each stored version from the day it was loaded; a
    version that no longer loads is passed over."""
    if await ledger.department_metadata():
        return
    history: list[MetadataVersion] = []
    for version in await ledger.policy_versions():
        try:
            policy = parse_policy(version.yaml, source=f"stored policy version {version.id}")
        except errors.PolicyError:
            continue
        history = merged(history, changes(history, policy, version.loaded_at.astimezone(UTC).date()))
    if history:
        await ledger.record_department_metadata(history, now)


async def _swap(runtime: Runtime, policy: Policy, version: int) -> PolicyChange:
    """Put ``policy`` in force as one new generation (under ``reload_lock``)."""
    current = runtime.generation
    generation = generation_of(policy, version, runtime.upstreams_for, previous=current)
    rebuilt = generation.upstreams is not current.upstreams
    if rebuilt:
        runtime.retired.append(current.upstreams)
    runtime.generation = generation
    loaded = await _load_added_budgets(runtime, current.policy, policy, version)
    return PolicyChange(version, current.version, True, rebuilt, loaded, current.policy)


async def follow_policy(runtime: Runtime, interval_s: float = FOLLOW_S) -> None:
    """Forever: take in a policy version that another worker or replica stored."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await adopt_latest(runtime)
        except errors.CostwardenError as exc:  # the ledger is down: said in one line, every 2 s meanwhile
            log.warning("could not check for a newer policy (%s); keeping version %d", exc, runtime.policy_version)


async def adopt_latest(runtime: Runtime) -> PolicyChange | None:
    """Adopt the policy most recently stored in the ledger if it is not the one in force."""
    stored = await runtime.ledger.latest_policy_version()
    if stored is None or stored.id == runtime.policy_version:
        return None
    async with runtime.reload_lock:
        if stored.id == runtime.policy_version:
            return None
        if stored.yaml == runtime.policy.source:  # the same text stored again: nothing changes
            runtime.generation = generation_of(runtime.policy, stored.id, runtime.upstreams_for,
                                               previous=runtime.generation)
            return None
        policy = parse_policy(stored.yaml, source=f"stored policy version {stored.id}")
        problems = env_problems(policy, runtime.settings.upstream_env or ())
        if problems:
            # Another replica may allow variables this one does not: its policy is not taken here,
            # so that no replica sends a secret it was not allowed to (SPEC §10).
            if stored.id not in runtime.refused_versions:
                runtime.refused_versions.add(stored.id)
                log.error("not adopting policy version %d: %s", stored.id, "; ".join(problems))
            return None
        log.info("adopting policy version %d stored by another process", stored.id)
        change = await _swap(runtime, policy, stored.id)
    await _audit_adoption(runtime, change, policy)
    return change


async def _audit_adoption(runtime: Runtime, change: PolicyChange, policy: Policy) -> None:
    """Record the adoption once for all processes (none when an admin reload stored the version:
    that reload has its own entries)."""
    if change.previous is None:
        return
    entries = policy_entries(change.previous, policy, runtime.admission.clock(), Actor("server", SERVER_ROLE),
                             AuditAction.POLICY_ADOPTED, change.previous_version, change.version)
    await runtime.ledger.record_audit(entries, once=f"{AuditAction.POLICY_ADOPTED}|{change.version}")


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
    for customer in policy.customers.values():
        for scope in scopes_of(policy, Caller(customer.department, customer=customer.id)):
            slots.update((_template(scope.id), i, b.period.text, b.unit) for i, b in enumerate(scope.rules.budgets))
    for scope in tag_scopes(policy):
        slots.update((scope.id, i, b.period.text, b.unit) for i, b in enumerate(scope.rules.budgets))
    return slots


def _slot(check: BudgetCheck) -> Slot:
    return _template(check.scope.id), check.index, check.budget.period.text, check.budget.unit


def _template(scope_id: str) -> str:
    kind, _, rest = scope_id.partition(":")
    return f"{kind}:{rest.partition('/')[0]}" if kind in ("key", "user") else scope_id
