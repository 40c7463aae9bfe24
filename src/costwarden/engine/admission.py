"""Admission and settlement of calls over a CounterStore: the enforcement loop.

admit: plan the counters -> decide on the figures the store last showed -> reserve atomically,
the store answering with the figures it held (re-deciding on them when they had moved, or on a
lost race); settle: price the actual usage exactly -> move holds to spend and claim the alert
thresholds that settled spend crossed (each once per budget, scope and period), at once.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from costwarden.clock import utc_now
from costwarden.core.breaker import breaker_denial
from costwarden.core.decision import CallRequest, Decision, decide, with_buckets
from costwarden.core.denials import budget_denial, rate_denial
from costwarden.core.kinds import StoreFailure
from costwarden.core.policy import Policy
from costwarden.core.pricing import ServiceTier, TokenType
from costwarden.core.scopes import BudgetCheck, Caller, Plan, Planner
from costwarden.core.watch import breaker_key
from costwarden.counters.base import Conflict, CounterStore, Reservation, Settlement, Threshold
from costwarden.engine.settlements import PendingSettlements
from costwarden.errors import StorageError

RESERVATION_TTL_S = 3600.0  # a call still open after this long is settled at its estimate
MAX_ATTEMPTS = 8  # lost reservation races before refusing (only under extreme contention)
ALERT_CLAIM_S = 86400.0  # an alert's claim outlives its period by a day
THRESHOLD_PLANS = 10_000  # plans whose alert thresholds are kept (forgotten wholesale when full)
_ATTEMPTS = range(MAX_ATTEMPTS)  # made once: iterated by every admission
_new = object.__new__
Sending = Callable[[Decision, datetime], None]  # see ``Admission.admit``
_Alerting = tuple[tuple[int, BudgetCheck, tuple[tuple[int, Decimal], ...]], ...]  # as Plan.alerting


# Made for every call: plain slotted dataclasses (see core/decision.py); treat them as immutable.


@dataclass(slots=True)
class Admitted:
    """A call allowed in: its decision, its reservation and when it was admitted (``at``, and
    ``stamp``: the same instant in epoch seconds)."""

    id: str
    request: CallRequest
    decision: Decision
    reservation: Reservation
    plan: Plan
    at: datetime
    stamp: float


def _admitted(call_id: str, request: CallRequest, decision: Decision, reservation: Reservation, plan: Plan,
              at: datetime, stamp: float) -> Admitted:
    """An ``Admitted``, filled slot by slot (see core/decision.py's ``_admit``: a dataclass
    call costs several times as much)."""
    admitted = _new(Admitted)
    admitted.id, admitted.request, admitted.decision, admitted.reservation = call_id, request, decision, reservation
    admitted.plan, admitted.at, admitted.stamp = plan, at, stamp
    return admitted


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
        # per plan's alerting budgets (by the id of ``Plan.alerting``, checked by identity: a plan
        # made again as its rate windows move keeps its predecessor's), their thresholds and the
        # crossing each reports
        self._by_plan: dict[int, tuple[_Alerting, tuple[Threshold, ...], tuple[tuple[BudgetCheck, Decimal], ...]]] = {}

    async def admit(self, call_id: str, request: CallRequest, planner: Planner,
                    sending: Sending | None = None) -> Admitted | Decision:
        """An ``Admitted`` call holding its reservation, or the refusing ``Decision``.

        It decides on the figures the store last showed (with what this process sent since: see
        ``counters/figures.py``) and reserves in one round trip; the store answers with the
        figures it held. A decision is kept only if made on those (or on figures one round trip
        old, as any read-then-reserve is); a refusal or a new restriction is only ever decided on
        figures just read.

        When the store fails, a call checked by a hard budget or limit is refused (the
        ``StorageError`` propagates: 503, retry); a soft-only one follows the policy's
        ``on_store_failure`` and, when open, is let through without a reservation.
        ``sending`` is told each decision whose reservation is sent, and the admission time, so
        that the caller may prepare the call while the store answers; the call may still be
        refused, or admitted with another decision.
        """
        # One coroutine for the whole admission (the store's own aside): each nested one costs
        # a frame and a coroutine object per call.
        policy = planner.policy
        now = self.clock()
        stamp = now.timestamp()
        plan = planner.plan(request.caller, now, stamp)
        store = self.store
        try:
            if policy.alerts.breaker and request.caller.key_id is not None:
                flag_keys, breaker = _with_breaker(plan.flag_keys, request.caller)
            else:  # no rule may trip a key's breaker (tested here: a call and a tuple fewer)
                flag_keys, breaker = plan.flag_keys, None
            seen = store.remembered(plan.windows, flag_keys, stamp)
            fresh = seen is None
            if seen is None:
                seen = await store.snapshot(plan.windows, flag_keys, stamp)
            usage, flags = seen.usage, seen.flags
            conflict: Conflict | None = None
            decision: Decision | None = None
            for _ in _ATTEMPTS:
                if breaker is not None and breaker in flags:  # the key's breaker is open
                    return Decision(requested=request.model, denial=breaker_denial(request.caller, policy.alerts))
                decision = decide(policy, request, plan, usage, flags, now)
                # the flags set once this decision is acted on: a restriction it trips is set first
                expected = flags | {key for key, _ in decision.new_flags} if decision.new_flags else flags
                if decision.denial is not None or (expected is not flags and expected != flags):
                    if not fresh:
                        seen, fresh = await store.snapshot(plan.windows, flag_keys, stamp), True
                        usage, flags = seen.usage, seen.flags
                        continue
                    if expected != flags:
                        await store.set_flags([(key, end.timestamp()) for key, end in decision.new_flags])
                    if decision.denial is not None:
                        if decision.needs_buckets:
                            return await self._retry_time(decision, request, plan, usage, now)
                        return decision
                if sending is not None:
                    sending(decision, now)
                attempt = await store.try_reserve(call_id, decision.holds, stamp + self.reservation_ttl_s,
                                                  flag_keys, stamp)
                held = attempt.outcome
                if isinstance(held, Reservation):
                    if breaker is not None and breaker in attempt.flags:  # opened since the figures were seen
                        await store.release(held)
                        return Decision(requested=request.model, denial=breaker_denial(request.caller, policy.alerts))
                    answered = attempt.usage
                    # the usual answer: the figures decided on (None: a retried call whose first
                    # attempt held it); compared by identity first, as the memory store answers
                    if answered is None or ((attempt.flags is expected or attempt.flags == expected) and (
                            answered is usage or answered == usage or _same_use(usage, answered))):
                        return _admitted(call_id, request, decision, held, plan, now, stamp)
                    kept = self._kept(decision, answered, attempt.flags, fresh, request, plan, policy, now)
                    if kept is not None:
                        return _admitted(call_id, request, kept, held, plan, now, stamp)
                    await store.release(held)  # decided on figures that had moved: decide again
                    conflict = None
                else:
                    conflict = held
                assert attempt.usage is not None
                usage, flags, fresh = attempt.usage, attempt.flags, True
            assert decision is not None and conflict is not None  # only a first attempt is ever released
            return _lost_race(decision, plan, conflict, policy)
        except StorageError:
            if hard_checked(plan) or policy.on_store_failure == StoreFailure.CLOSED:
                raise
            return self._let_through(call_id, request, policy, plan, now)

    @staticmethod
    def _kept(decision: Decision, seen: list[tuple[int, int]], flags: frozenset[str], fresh: bool,
              request: CallRequest, plan: Plan, policy: Policy, now: datetime) -> Decision | None:
        """The decision to admit a held reservation with, made on figures other than those the
        store held (``seen``, ``flags``), or None to release it and decide again: the one those
        figures give if it holds the same amounts."""
        again = decide(policy, request, plan, seen, flags, now)
        if again.denial is None and again.holds == decision.holds and again.model is decision.model \
                and again.output_tokens == decision.output_tokens \
                and all(key in flags for key, _ in again.new_flags):
            return again
        return decision if fresh else None

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
        stamp = now.timestamp()
        unheld = Reservation(call_id, (), stamp + self.reservation_ttl_s)
        return _admitted(call_id, request, decision, unheld, plan, now, stamp)

    def settle(self, admitted: Admitted, input_tokens: int, output_tokens: int,
               cached_input_tokens: int = 0, *, billed: Billed | None = None) -> Coroutine[Any, Any, Settled]:
        """Charge the actual usage (priced exactly, cached input as cached, and by ``billed``'s
        token types, service tier and tool calls when given) and free the rest.

        Priced at once, then ``charge``d when awaited: a plain function returning ``charge``'s
        coroutine, so that a settlement makes one coroutine, not two."""
        # ``billed`` passed by position: a keyword argument makes CPython 3.11 call through C, not inline
        priced = self.price(admitted, input_tokens, output_tokens, cached_input_tokens, billed)
        return self.charge(admitted, priced, input_tokens + output_tokens)

    async def charge(self, admitted: Admitted, priced: Settled, tokens: int) -> Settled:
        """Settle ``admitted`` at what ``price`` made of its usage (``tokens``: input + output)."""
        reservation = admitted.reservation
        plan = admitted.plan
        cost = priced.cost_nanos
        # one amount per hold, by unit: the holds follow plan.hold_terms (core/decision.py's _admit)
        amounts = plan.hold_amounts((cost, tokens, 1))
        if not reservation.holds:  # let through while the store was down: add its spend later
            self.pending.spend(admitted.id, [(h.window, amount) for h, amount in zip(
                admitted.decision.holds, amounts, strict=True)])
            return priced
        alerting = plan.alerting
        if alerting:
            kept = self._by_plan.get(id(alerting))
            if kept is not None and kept[0] is alerting:
                thresholds, crossings = kept[1], kept[2]
            else:
                thresholds, crossings = self._thresholds(plan)
        else:
            thresholds, crossings = (), ()
        try:
            # claimed as at admission: an alert flag lasts a day past its period, far longer than a call
            settlement = await self.store.settle_claiming(reservation, amounts, thresholds, admitted.stamp)
        except StorageError:
            self.pending.settle(reservation, amounts)  # retried; the event is recorded all the same
            return priced
        if settlement.claimed:
            return Settled(cost, priced.overrun_tokens, _crossed(settlement, thresholds, crossings))
        return priced

    def _thresholds(self, plan: Plan) -> tuple[tuple[Threshold, ...], tuple[tuple[BudgetCheck, Decimal], ...]]:
        """The alert thresholds of ``plan``'s holds, made once per plan."""
        if len(self._by_plan) >= THRESHOLD_PLANS:
            self._by_plan.clear()
        thresholds: list[Threshold] = []
        crossings: list[tuple[BudgetCheck, Decimal]] = []
        for index, check, levels in plan.alerting:
            for level, fraction in levels:  # alert levels computed once per plan
                key = f"alert|{check.window.key}|{fraction}"
                thresholds.append(Threshold(index, level, key, check.window.end.timestamp() + ALERT_CLAIM_S))
                crossings.append((check, fraction))
        entry = self._by_plan[id(plan.alerting)] = (plan.alerting, tuple(thresholds), tuple(crossings))
        return entry[1], entry[2]

    @staticmethod
    def price(admitted: Admitted, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
              billed: Billed | None = None) -> Settled:
        """What ``settle`` charges, without touching the store (no alert crossings)."""
        model = admitted.decision.model
        assert model is not None
        if billed is None:
            cost = model.cost(input_tokens, output_tokens, cached_input_tokens)
        else:
            cost = model.charge(billed.tokens, billed.tier, billed.tool_calls).nanos
        overrun = input_tokens - admitted.request.input_tokens
        settled = _new(Settled)  # slot by slot, as Admitted
        settled.cost_nanos, settled.overrun_tokens, settled.crossings = cost, overrun if overrun > 0 else 0, ()
        return settled

    async def first(self, key: str, until: datetime) -> bool:
        """True for the first caller to claim ``key`` (until a day after ``until``), across every
        replica sharing the store. False when the store cannot say: an alert may be missed then,
        a call is never failed for it."""
        try:
            return await self.store.claim(key, until.timestamp() + ALERT_CLAIM_S, self.clock().timestamp())
        except StorageError:
            return False

    async def release(self, admitted: Admitted) -> None:
        """Free the holds of a call that will not be charged."""
        reservation = admitted.reservation
        try:
            await self.store.release(reservation)
        except StorageError:
            self.pending.settle(reservation, [0] * len(reservation.holds))

def _crossed(settlement: Settlement, thresholds: Sequence[Threshold],
             crossings: Sequence[tuple[BudgetCheck, Decimal]]) -> tuple[Crossing, ...]:
    """The crossings of the thresholds a settlement claimed (apart from ``charge``: a generator
    there would make closure cells at each of its calls)."""
    moved = settlement.moved
    return tuple(Crossing(*crossings[i], moved[thresholds[i].hold][1]) for i in settlement.claimed)


def _with_breaker(flag_keys: tuple[str, ...], caller: Caller) -> tuple[tuple[str, ...], str]:
    """The flags to read for a call from a key that a rule may trip the breaker of: its plan's
    and its key's breaker (read in the same snapshot, so a breaker costs no round trip of its own)."""
    assert caller.key_id is not None
    key = breaker_key(caller.department, caller.key_id)
    return (*flag_keys, key), key


def hard_checked(plan: Plan) -> bool:
    """Whether a hard budget (reject, downgrade, restrict_tiers) or an enforced limit checks the
    call: such a call must not pass unchecked when the store is unavailable."""
    return (any(term[2] is not None for term in plan.budget_terms) or bool(plan.restricting)
            or any(term[2] is not None for term in plan.limit_terms))


def _same_use(usage: list[tuple[int, int]], seen: list[tuple[int, int]]) -> bool:
    """Whether two readings show the same use (spent + reserved) of every counter: all ``decide``
    looks at."""
    for (spent, reserved), (now_spent, now_reserved) in zip(usage, seen, strict=True):
        if spent + reserved != now_spent + now_reserved:
            return False
    return True


def _lost_race(decision: Decision, plan: Plan, conflict: Conflict, policy: Policy) -> Decision:
    """Refuse a call whose reservation kept losing races for the last room of a limit."""
    index = conflict.index
    if index < len(plan.budgets):
        denial = budget_denial(plan.budgets[index], conflict.used, policy.timezone, "")
        return Decision(requested=decision.requested, denial=denial, shadow=decision.shadow)

    check = plan.limits[index - len(plan.budgets)]
    return Decision(requested=decision.requested, denial=rate_denial(check, conflict.used, decision.holds[index].amount, 1),
                    shadow=decision.shadow)
