"""Admission and settlement of calls over a CounterStore: the enforcement loop.

admit: plan the counters -> snapshot -> decide -> reserve atomically (re-deciding on a lost
race) ; settle: price the actual usage exactly -> move holds to spend -> report the alert
thresholds that settled spend crossed (each once per budget, scope and period).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from costwarden.clock import utc_now
from costwarden.core.breaker import breaker_denial
from costwarden.core.decision import TOKENS, USD, CallRequest, Decision, decide, with_buckets
from costwarden.core.denials import budget_denial, rate_denial
from costwarden.core.kinds import StoreFailure
from costwarden.core.policy import Policy
from costwarden.core.pricing import ServiceTier, TokenType
from costwarden.core.scopes import BudgetCheck, Caller, Plan, Planner
from costwarden.core.watch import breaker_key
from costwarden.counters.base import Conflict, CounterStore, Reservation
from costwarden.engine.settlements import PendingSettlements
from costwarden.errors import StorageError

RESERVATION_TTL_S = 3600.0  # a call still open after this long is settled at its estimate
MAX_ATTEMPTS = 8  # lost reservation races before refusing (only under extreme contention)


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


@dataclass(frozen=True, slots=True)
class Billed:
    """How a provider bills a call beyond its token totals: disjoint counts per token type (cache
    writes, reasoning, audio...), the service tier, and server-side tool calls (SPEC §9)."""

    tokens: Mapping[TokenType, int]
    tier: ServiceTier = ServiceTier.STANDARD
    tool_calls: Mapping[str, int] | None = None


@dataclass(slots=True)
class Settled:
    cost_nanos: int
    overrun_tokens: int
    crossings: tuple[Crossing, ...]


class Admission:
    """Admit, settle and release calls over one counter store.

    The policy is not held here: each call is admitted under the ``Planner`` (which carries its
    policy) that the caller captured once for that call, so a reload that swaps the policy never
    changes the rules halfway through a call.
    """

    def __init__(self, store: CounterStore, clock: Callable[[], datetime] = utc_now,
                 reservation_ttl_s: float = RESERVATION_TTL_S) -> None:
        self.store = store
        self.clock = clock
        self.reservation_ttl_s = reservation_ttl_s
        self.pending = PendingSettlements(store)  # settlements the store could not take, retried

    async def admit(self, call_id: str, request: CallRequest, planner: Planner) -> Admitted | Decision:
        """An ``Admitted`` call holding its reservation, or the refusing ``Decision``.

        When the store fails, a call checked by a hard budget or limit is refused (the
        ``StorageError`` propagates: 503, retry); a soft-only one follows the policy's
        ``on_store_failure`` and, when open, is let through without a reservation.
        """
        policy, store = planner.policy, self.store
        now = self.clock()
        stamp = now.timestamp()
        plan = planner.plan(request.caller, now, stamp)
        conflict: Conflict | None = None
        decision: Decision | None = None
        flag_keys, breaker = _with_breaker(plan.flag_keys, request.caller, policy)
        try:
            for _ in range(MAX_ATTEMPTS):
                snapshot = await store.snapshot(plan.windows, flag_keys, stamp)
                if breaker is not None and breaker in snapshot.flags:
                    return Decision(requested=request.model, denial=breaker_denial(request.caller, policy.alerts))
                decision = decide(policy, request, plan, snapshot.usage, snapshot.flags, now)
                if decision.new_flags:
                    await store.set_flags([(key, end.timestamp()) for key, end in decision.new_flags])
                if decision.denial is not None:
                    if decision.needs_buckets:
                        return await self._retry_time(decision, request, plan, snapshot.usage, now)
                    return decision
                held = await store.reserve(call_id, decision.holds, stamp + self.reservation_ttl_s)
                if isinstance(held, Reservation):
                    return Admitted(call_id, request, decision, held, plan, now)
                conflict = held
        except StorageError:
            if hard_checked(plan) or policy.on_store_failure == StoreFailure.CLOSED:
                raise
            return self._let_through(call_id, request, policy, plan, now)
        assert decision is not None and conflict is not None
        return _lost_race(decision, plan, conflict, policy)

    async def _retry_time(self, decision: Decision, request: CallRequest, plan: Plan,
                          usage: list[tuple[int, int]], now: datetime) -> Decision:
        """A rate refusal told exactly when to retry, from the ages of its windows' buckets. The
        call is refused either way: if the store cannot say, the refusal keeps its later time."""
        try:
            buckets = await self.store.buckets(plan.windows[len(plan.budgets):])
        except StorageError:
            return decision
        return with_buckets(decision, request, plan, usage, buckets, now)

    def _let_through(self, call_id: str, request: CallRequest, policy: Policy, plan: Plan,
                     now: datetime) -> Admitted | Decision:
        """Admit a soft-only call while the store is unavailable: decided on no known spend, with
        nothing reserved; its spend is added to the counters when the store is back."""
        decision = decide(policy, request, plan, [(0, 0)] * len(plan.windows), frozenset(), now)
        if decision.denial is not None:
            return decision
        unheld = Reservation(call_id, (), now.timestamp() + self.reservation_ttl_s)
        return Admitted(call_id, request, decision, unheld, plan, now)

    async def settle(self, admitted: Admitted, input_tokens: int, output_tokens: int,
                     cached_input_tokens: int = 0, *, billed: Billed | None = None) -> Settled:
        """Charge the actual usage (priced exactly, cached input as cached, and by ``billed``'s
        token types, service tier and tool calls when given) and free the rest."""
        priced = self.price(admitted, input_tokens, output_tokens, cached_input_tokens, billed=billed)
        tokens = input_tokens + output_tokens
        reservation = admitted.reservation
        if not reservation.holds:  # let through while the store was down: add its spend later
            holds = admitted.decision.holds
            self.pending.spend([(h.window, priced.cost_nanos if h.unit == USD else tokens if h.unit == TOKENS else 1)
                                for h in holds])
            return priced
        amounts = [priced.cost_nanos if h.unit == USD else tokens if h.unit == TOKENS else 1
                   for h in reservation.holds]
        try:
            moved = await self.store.settle(reservation, amounts)
        except StorageError:
            self.pending.settle(reservation, amounts)  # retried; the event is recorded all the same
            return priced
        if _crossed(admitted.plan, moved):
            return Settled(priced.cost_nanos, priced.overrun_tokens, await self._crossings(admitted, moved))
        return priced

    @staticmethod
    def price(admitted: Admitted, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0, *,
              billed: Billed | None = None) -> Settled:
        """What ``settle`` charges, without touching the store (no alert crossings)."""
        model = admitted.decision.model
        assert model is not None
        if billed is None:
            cost = model.cost(input_tokens, output_tokens, cached_input_tokens)
        else:
            cost = model.charge(billed.tokens, billed.tier, billed.tool_calls).nanos
        return Settled(cost, max(0, input_tokens - admitted.request.input_tokens), ())

    async def first(self, key: str, until: datetime) -> bool:
        """True for the first caller to claim ``key`` (until a day after ``until``), across every
        replica sharing the store. False when the store cannot say: an alert may be missed then,
        a call is never failed for it."""
        try:
            return await self.store.claim(key, until.timestamp() + 86400, self.clock().timestamp())
        except StorageError:
            return False

    async def release(self, admitted: Admitted) -> None:
        """Free the holds of a call that will not be charged."""
        reservation = admitted.reservation
        try:
            await self.store.release(reservation)
        except StorageError:
            self.pending.settle(reservation, [0] * len(reservation.holds))

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


def _with_breaker(flag_keys: tuple[str, ...], caller: Caller, policy: Policy) -> tuple[tuple[str, ...], str | None]:
    """The flags to read for a call: its plan's, and its key's breaker when a rule may trip one
    (read in the same snapshot, so a breaker costs no round trip of its own)."""
    if not policy.alerts.breaker or caller.key_id is None:
        return flag_keys, None
    key = breaker_key(caller.department, caller.key_id)
    return (*flag_keys, key), key


def hard_checked(plan: Plan) -> bool:
    """Whether a hard budget (reject, downgrade, restrict_tiers) or an enforced limit checks the
    call: such a call must not pass unchecked when the store is unavailable."""
    return (any(term[2] is not None for term in plan.budget_terms) or bool(plan.restricting)
            or any(term[2] is not None for term in plan.limit_terms))


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
        return Decision(requested=decision.requested, denial=denial, shadow=decision.shadow)

    check = plan.limits[index - len(plan.budgets)]
    return Decision(requested=decision.requested, denial=rate_denial(check, conflict.used, decision.holds[index].amount, 1),
                    shadow=decision.shadow)
