"""Admission and settlement of calls over a CounterStore: the enforcement loop.

admit: plan the counters -> snapshot -> decide -> reserve atomically (re-deciding on a lost
race) ; settle: price the actual usage exactly -> move holds to spend -> report the alert
thresholds that settled spend crossed (each once per budget, scope and period).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from costwarden.core.decision import TOKENS, USD, CallRequest, Decision, decide
from costwarden.core.denials import budget_denial, rate_denial
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, Plan, Planner
from costwarden.counters.base import Conflict, CounterStore, Reservation

RESERVATION_TTL_S = 3600.0  # a call still open after this long is settled at its estimate
MAX_ATTEMPTS = 8  # lost reservation races before refusing (only under extreme contention)


def utc_now() -> datetime:
    return datetime.now(UTC)


# Made for every call: plain slotted dataclasses (see core/decision.py); treat them as immutable.


@dataclass(slots=True)
class Admitted:
    """A call allowed in: its decision, its reservation and when it was admitted."""

    id: str
    request: CallRequest
    decision: Decision
    reservation: Reservation
    plan: Plan
    at: datetime


@dataclass(slots=True)
class Crossing:
    """Settled spend on a budget crossed one of its alert thresholds."""

    check: BudgetCheck
    fraction: Decimal
    spent: int


@dataclass(slots=True)
class Settled:
    cost_nanos: int
    overrun_tokens: int
    crossings: tuple[Crossing, ...]


class Admission:
    """Admit, settle and release calls for one policy (swappable on reload) and one store."""

    def __init__(self, policy: Policy, store: CounterStore, clock: Callable[[], datetime] = utc_now,
                 reservation_ttl_s: float = RESERVATION_TTL_S) -> None:
        self.store = store
        self.clock = clock
        self.reservation_ttl_s = reservation_ttl_s
        self._planner = Planner(policy)
        self.policy = policy

    @property
    def policy(self) -> Policy:
        return self._policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        """Swap the policy (a reload); plans made under the old one are dropped."""
        self._policy = policy
        if self._planner.policy is not policy:
            self._planner = Planner(policy)

    def plan(self, caller: Caller, now: datetime) -> Plan:
        """The counter plan of ``caller`` at ``now``, reused until one of its windows moves."""
        return self._planner.plan(caller, now, now.timestamp())

    async def admit(self, call_id: str, request: CallRequest) -> Admitted | Decision:
        """An ``Admitted`` call holding its reservation, or the refusing ``Decision``."""
        policy, store = self._policy, self.store
        now = self.clock()
        stamp = now.timestamp()
        plan = self._planner.plan(request.caller, now, stamp)
        conflict: Conflict | None = None
        decision: Decision | None = None
        for _ in range(MAX_ATTEMPTS):
            snapshot = await store.snapshot(plan.windows, plan.flag_keys, stamp)
            decision = decide(policy, request, plan, snapshot.usage, snapshot.flags, now)
            if decision.new_flags:
                await store.set_flags([(key, end.timestamp()) for key, end in decision.new_flags])
            if decision.denial is not None:
                return decision
            held = await store.reserve(call_id, decision.holds, stamp + self.reservation_ttl_s)
            if isinstance(held, Reservation):
                return Admitted(call_id, request, decision, held, plan, now)
            conflict = held
        assert decision is not None and conflict is not None
        return _lost_race(decision, plan, conflict, policy)

    async def settle(self, admitted: Admitted, input_tokens: int, output_tokens: int,
                     cached_input_tokens: int = 0) -> Settled:
        """Charge the actual usage (priced exactly, cached input as cached) and free the rest."""
        model = admitted.decision.model
        assert model is not None
        cost = model.cost(input_tokens, output_tokens, cached_input_tokens)
        tokens = input_tokens + output_tokens
        amounts = [cost if h.unit == USD else tokens if h.unit == TOKENS else 1 for h in admitted.reservation.holds]
        moved = await self.store.settle(admitted.reservation, amounts)
        crossings = await self._crossings(admitted, moved) if _crossed(admitted.plan, moved) else ()
        overrun = max(0, input_tokens - admitted.request.input_tokens)
        return Settled(cost, overrun, crossings)

    async def release(self, admitted: Admitted) -> None:
        """Free the holds of a call that will not be charged."""
        await self.store.release(admitted.reservation)

    async def _crossings(self, admitted: Admitted, moved: list[tuple[int, int]]) -> tuple[Crossing, ...]:
        found: list[Crossing] = []
        for index, check, levels in admitted.plan.alerting:
            before, after = moved[index]
            for level, fraction in levels:  # alert levels computed once per plan
                if before < level <= after:
                    key = f"alert|{check.window.key}|{fraction}"
                    if await self.store.claim(key, check.window.end.timestamp() + 86400, self.clock().timestamp()):
                        found.append(Crossing(check, fraction, after))
        return tuple(found)


def _crossed(plan: Plan, moved: list[tuple[int, int]]) -> bool:
    """Whether settled spend crossed any alert level (the usual answer, no, without a coroutine)."""
    for index, _, levels in plan.alerting:
        before, after = moved[index]
        if before != after:
            for level, _ in levels:
                if before < level <= after:
                    return True
    return False


def _lost_race(decision: Decision, plan: Plan, conflict: Conflict, policy: Policy) -> Decision:
    """Refuse a call whose reservation kept losing races for the last room of a limit."""
    index = conflict.index
    if index < len(plan.budgets):
        denial = budget_denial(plan.budgets[index], conflict.used, policy.timezone, "")
        return Decision(decision.requested, denial=denial, shadow=decision.shadow)

    check = plan.limits[index - len(plan.budgets)]
    return Decision(decision.requested, denial=rate_denial(check, conflict.used, decision.holds[index].amount, 1),
                    shadow=decision.shadow)
