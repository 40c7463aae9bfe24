"""The admission decision: allow, clamp, downgrade, restrict or refuse a call.

``decide`` is pure: it reads a snapshot of the counters (spent and reserved per window, and the
restriction flags) and returns a ``Decision`` value. Denial is data; the HTTP edge renders it.
The store then reserves the decision's holds atomically, re-checking every hard limit, so a
snapshot that went stale under concurrency can never let a hard budget overrun.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import assert_never

from costwarden import errors
from costwarden.core.catalog import ModelSpec
from costwarden.core.denials import Denial, budget_denial, rate_denial, rights_denial
from costwarden.core.kinds import ActionKind, Unit
from costwarden.core.periods import Window
from costwarden.core.policy import DOWNGRADE, Policy
from costwarden.core.scopes import RATE_PERIOD, BudgetCheck, Caller, LimitCheck, Plan
from costwarden.core.sliding import restored_at, room_at, seconds_until

MIN_CLAMPED_OUTPUT = 64  # a clamped call must still be able to say something useful
USD, TOKENS, REQUESTS = Unit.USD, Unit.TOKENS, Unit.REQUESTS
# read on every admitted call with rate limits: a property and an attribute, looked up once here
_RATE_SECONDS, _RATE_WIDTH = RATE_PERIOD.seconds, RATE_PERIOD.bucket_seconds
_new = object.__new__  # a bare instance, its slots filled in one by one (see _admit)


# The values below are made once or more per call, so they are plain slotted dataclasses: a
# frozen one sets each field through object.__setattr__, which made up a large share of the
# admission hot path. Treat them as immutable all the same.


@dataclass(slots=True)
class CallRequest:
    """What is known of a call before it is sent."""

    caller: Caller
    model: str
    input_tokens: int
    output_tokens: int | None  # the client's bound (max_tokens...), None when it gave none
    choices: int = 1  # completions asked for at once (OpenAI ``n``): each may use the whole bound
    # A proven lower bound of the input that must fit the context window; None: ``input_tokens``.
    # The window is judged on it, so that an over-estimate never refuses a call (SPEC §9).
    input_floor: int | None = None
    # Input priced above the input rate in the worst case, as that many input tokens: a request
    # that asks for prompt caching may be billed its input as cache writes (1.25x or 2x).
    priced_input: int | None = None

    @property
    def input_priced(self) -> int:
        """The input tokens the worst-case cost is computed on."""
        return self.input_tokens if self.priced_input is None else self.priced_input

    @property
    def window_tokens(self) -> int:
        """The input tokens held against the model's context window."""
        return self.input_tokens if self.input_floor is None else self.input_floor


@dataclass(slots=True)
class Hold:
    """An amount to reserve on one counter; ``limit`` is re-checked atomically when set."""

    window: Window
    amount: int
    limit: int | None
    unit: Unit


@dataclass(slots=True)
class RateInfo:
    """The tightest rate limit of each kind, for the rate-limit headers: its limit, what remains
    (after this call when it is admitted), and when its window is fully restored, both as whole
    seconds from the decision (rounded up) and as the instant (epoch seconds)."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: int = 0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: int = 0
    reset_requests_at: int = 0
    reset_tokens_at: int = 0


@dataclass(slots=True, kw_only=True)
class Decision:
    requested: str
    model: ModelSpec | None = None
    output_tokens: int = 0
    estimate_nanos: int = 0
    clamped: bool = False
    downgraded_from: str | None = None
    holds: tuple[Hold, ...] = ()
    new_flags: tuple[tuple[str, datetime], ...] = ()
    shadow: tuple[str, ...] = ()
    denial: Denial | None = None
    remaining_nanos: int | None = None
    rate: RateInfo | None = None
    # A rate limit refused the call and its retry time was judged without the window's buckets
    # (as if all its use were in the newest): ``with_buckets`` makes it exact. On such a refusal,
    # ``output_tokens`` is the output bound the call was judged with.
    needs_buckets: bool = False

    @property
    def allowed(self) -> bool:
        return self.denial is None

    @property
    def label(self) -> str:
        """allow | clamp | downgrade | clamp,downgrade"""
        # Read twice on every admitted call (its write-ahead row, its event): by cases, without
        # the list and join of the general form.
        if self.clamped:
            return "clamp,downgrade" if self.downgraded_from else "clamp"
        return "downgrade" if self.downgraded_from else "allow"


@dataclass(slots=True)
class _Fit:
    """The outcome of checking one candidate model against every budget."""

    output_tokens: int
    move_on: BudgetCheck | None = None
    denial: Denial | None = None
    shadow: list[str] = field(default_factory=list)
    new_flags: list[BudgetCheck] = field(default_factory=list)


def decide(policy: Policy, call: CallRequest, plan: Plan, usage: Sequence[tuple[int, int]],
           flags: Set[str], now: datetime, buckets: Sequence[Sequence[tuple[int, int]]] | None = None) -> Decision:
    """Decide a call. ``usage`` holds (spent, reserved) per window of ``plan.windows``; ``buckets``,
    when given, the non-empty buckets of each rate window of ``plan.limits``, oldest first, as
    (bucket, spent + reserved), from which a rate refusal tells exactly when to retry."""
    # The model asked for, when the plan's caller may use it, is kept on the plan with the policy
    # that says so: a look-up and a call each fewer than the catalog's and the department's.
    known = plan.usable.get(call.model)
    if known is not None and known[0] is policy:
        requested: ModelSpec | None = known[1]
    else:
        requested, known = policy.catalog.get(call.model), None
        if requested is not None and policy.departments[call.caller.department].may_use(requested.id, requested.tier):
            known = plan.usable[call.model] = (policy, requested)
    if known is not None and (not plan.restricting or active_restriction(plan, flags) is None) \
            and (call.input_tokens if call.input_floor is None else call.input_floor) <= known[1].context_window:
        # The usual call: the model asked for is allowed and its worst case fits every budget.
        # This is what the general path concludes for it, without its bookkeeping (and with
        # CallRequest's properties and _output_bound read inline: a frame each). A refusal
        # by a rate limit there carries its rate headers already.
        spec = known[1]
        most, bound = spec.max_output, call.output_tokens
        if bound is None or bound > most:
            bound = most
        fits = _worst_cost_if_fits(plan, usage, spec, call, bound)
        if fits is not None:
            return _admit(call, plan, usage, spec, bound, [], (), spec.id, now, buckets, fits[1], fits[0], bound)
    decision = _decide(policy, call, plan, usage, flags, now, buckets, requested)
    if decision.denial is not None and decision.rate is None and plan.limit_terms:
        # Every refusal tells the caller's rate limits as they stand (a 429 for a budget too, as
        # OpenAI's insufficient_quota does); the refused call takes no room, so it is not counted.
        used = [spent + reserved for spent, reserved in usage]
        decision.rate = _standing_rate(plan, used, len(plan.budget_terms), buckets, now.timestamp())
    return decision


def _decide(policy: Policy, call: CallRequest, plan: Plan, usage: Sequence[tuple[int, int]],
            flags: Set[str], now: datetime, buckets: Sequence[Sequence[tuple[int, int]]] | None,
            requested: ModelSpec | None) -> Decision:
    """The general path of ``decide``: models down the downgrade chain, tier restrictions,
    clamping, and every kind of refusal."""
    if requested is None:
        return Decision(requested=call.model, denial=Denial(errors.ModelNotFound, _unknown_model(call.model)))
    dept = policy.departments[call.caller.department]
    allowed_tiers = active_restriction(plan, flags) if plan.restricting else None
    used = [spent + reserved for spent, reserved in usage]
    shadow: list[str] = []
    new_flags: list[BudgetCheck] = []
    last_move: BudgetCheck | None = None
    rights_ok = False
    for model in policy.catalog.chain(call.model):
        if model.kind != requested.kind or not dept.may_use(model.id, model.tier):
            continue
        rights_ok = True
        if allowed_tiers is not None and model.tier not in allowed_tiers:
            continue
        if call.window_tokens > model.context_window:
            return Decision(requested=call.model, denial=Denial(errors.ContextLengthExceeded, (
                f"This call has {'about' if call.input_floor is None else 'at least'} {call.window_tokens:,} input "
                f"tokens; {model.id} accepts at most "
                f"{model.context_window:,}. Shorten the messages or choose a model with a larger context window.")))
        fit = _fit_budgets(plan, used, model, call, policy)
        shadow.extend(fit.shadow)
        if fit.denial is not None:
            return Decision(requested=call.model, denial=fit.denial, shadow=tuple(shadow))
        for check in fit.new_flags:
            if check not in new_flags:
                new_flags.append(check)
                tiers = check.budget.action.tiers
                allowed_tiers = tiers if allowed_tiers is None else allowed_tiers & tiers
        if fit.move_on is not None:
            last_move = fit.move_on
            continue
        return _admit(call, plan, usage, model, fit.output_tokens, shadow, new_flags, requested.id, now, buckets,
                      _least_usd_room(plan, usage))
    if last_move is not None and last_move.budget.action.kind == DOWNGRADE:
        denial = budget_denial(last_move, used[plan.budgets.index(last_move)], policy.timezone,
                               " and no cheaper model in its downgrade chain fits")
    else:
        denial = rights_denial(dept, requested, allowed_tiers if rights_ok else None, plan, flags, new_flags,
                               policy.timezone)
    flags_out = tuple((c.flag_key, c.window.end) for c in new_flags)
    return Decision(requested=call.model, denial=denial, shadow=tuple(shadow), new_flags=flags_out)


def active_restriction(plan: Plan, flags: Set[str]) -> frozenset[int] | None:
    """The tiers a tripped ``restrict_tiers`` budget of ``plan`` still serves (None: no restriction)."""
    tiers: frozenset[int] | None = None
    for check in plan.restricting:
        if check.flag_key in flags:
            action = check.budget.action
            tiers = action.tiers if tiers is None else tiers & action.tiers
    return tiers


def _worst_cost_if_fits(plan: Plan, usage: Sequence[tuple[int, int]], model: ModelSpec, call: CallRequest,
                        bound: int) -> tuple[int, int | None] | None:
    """The worst-case cost of ``call`` on ``model`` if it fits in the room of every budget, with
    the least room of a dollar budget before it (None without one; see ``_least_usd_room``)."""
    outputs = bound * call.choices
    worst_tokens = call.input_tokens + outputs
    worst_cost = model.cost(call.input_tokens if call.priced_input is None else call.priced_input, outputs)
    least = None
    i = 0  # budgets come first in the usage (counted by hand: enumerate() costs a call of its own)
    for limit, in_tokens, _ in plan.budget_terms:
        spent, reserved = usage[i]
        room = limit - spent - reserved
        if in_tokens:
            if worst_tokens > room:
                return None
        elif worst_cost > room:
            return None
        elif least is None or room < least:
            least = room
        i += 1  # noqa: SIM113
    return worst_cost, least


def _least_usd_room(plan: Plan, usage: Sequence[tuple[int, int]]) -> int | None:
    """The least room left in a dollar budget of ``plan`` (None: it has none)."""
    least = None
    for i, limit in plan.usd_budgets:
        spent, reserved = usage[i]
        room = limit - spent - reserved
        if least is None or room < least:
            least = room
    return least


def _fit_budgets(plan: Plan, used: list[int], model: ModelSpec, call: CallRequest, policy: Policy) -> _Fit:
    bound = _output_bound(model, call)
    fit = _Fit(output_tokens=bound)
    worst_tokens = call.input_tokens + bound * call.choices
    worst_cost = model.cost(call.input_priced, bound * call.choices)
    for i, check in enumerate(plan.budgets):
        budget = check.budget
        room = budget.limit - used[i]
        if (worst_tokens if budget.unit == TOKENS else worst_cost) <= room:
            continue
        kind = budget.action.kind
        if kind == ActionKind.ALERT:
            continue
        if not budget.enforce:
            fit.shadow.append(f"would {budget.action.describe()}: {check.scope.id} budget {check.index}")
            continue
        match kind:
            case ActionKind.RESTRICT_TIERS:
                fit.new_flags.append(check)
                if model.tier not in budget.action.tiers:
                    fit.move_on = check
                    return fit
            case ActionKind.DOWNGRADE:
                fit.move_on = check
                return fit
            case ActionKind.REJECT:
                most = _output_that_fits(budget.unit, room, model, call.input_tokens, call.input_priced) // call.choices
                if most < 0 or (bound > 0 and most < MIN_CLAMPED_OUTPUT):
                    fit.denial = budget_denial(check, used[i], policy.timezone, "")
                    return fit
                fit.output_tokens = min(fit.output_tokens, most)
            case _:
                assert_never(kind)
    return fit


def _output_that_fits(unit: Unit, room: int, model: ModelSpec, input_tokens: int, input_priced: int) -> int:
    """The largest output bound whose worst case fits in ``room`` (negative when input alone does not)."""
    if unit == TOKENS:
        return room - input_tokens
    input_cost = model.cost(input_priced, 0)
    if input_cost > room:
        return -1
    per_token = model.output.picos_per_token
    if per_token == 0:
        return model.max_output
    # cost() rounds the whole call up to a nano-dollar, so search down from the linear bound.
    most = ((room - input_cost) * 1000) // per_token
    while most > 0 and model.cost(input_priced, most) > room:
        most -= 1
    return most


def _admit(call: CallRequest, plan: Plan, usage: Sequence[tuple[int, int]], model: ModelSpec,
           output_tokens: int, shadow: list[str], new_flags: Sequence[BudgetCheck], requested: str,
           now: datetime, buckets: Sequence[Sequence[tuple[int, int]]] | None, usd_room: int | None,
           estimate: int | None = None, requested_bound: int | None = None) -> Decision:
    """Admit ``call`` on ``model`` with ``output_tokens`` if its rate limits allow; ``usd_room`` is
    the least room left in a dollar budget before it (``_least_usd_room``), ``estimate`` its
    worst-case cost and ``requested_bound`` its output bound on ``model`` when known."""
    choices = call.choices
    tokens = call.input_tokens + output_tokens * choices
    rate = None
    if plan.limit_terms:
        rate = _check_limits(plan, usage, tokens, shadow)
        if rate is None:
            used = [spent + reserved for spent, reserved in usage]
            rate, rate_denied = _refuse_rate(plan, used, len(plan.budget_terms), tokens, buckets, now)
            return Decision(requested=call.model, output_tokens=output_tokens, denial=rate_denied,
                            shadow=tuple(shadow), rate=rate, needs_buckets=buckets is None)
    if estimate is None:
        estimate = model.cost(call.input_priced, output_tokens * choices)
    # One hold per window of the plan, in its order (plan.hold_terms), made once per plan and
    # amounts: a caller's calls of one size within a plan's life (a second at most, with rate
    # limits) share them (values, never changed). Here and below, values made on every admitted
    # call are filled in slot by slot on a bare instance: in CPython 3.11 a dataclass call goes
    # through type.__call__ into an __init__ frame of its own, several times the cost (and a
    # keyword call to Decision several times more).
    memo = plan.last_holds
    last = memo[0]
    if last[0] == estimate and last[1] == tokens:
        holds = last[2]
    else:
        made = []
        for window, hard, unit in plan.hold_terms:
            hold = _new(Hold)
            hold.window, hold.amount, hold.limit, hold.unit = \
                window, estimate if unit is USD else tokens if unit is TOKENS else 1, hard, unit
            made.append(hold)
        holds = tuple(made)
        memo[0] = (estimate, tokens, holds)
    # Kept below zero when the hold overruns a budget that admits it anyway (alert, an allowed
    # tier of restrict_tiers): the refund at settlement is added to this, then floored at 0.
    remaining = None if usd_room is None else usd_room - estimate
    if requested_bound is None:
        requested_bound = _output_bound(model, call)
    decision = _new(Decision)
    decision.requested = requested
    decision.model = model
    decision.output_tokens = output_tokens
    decision.estimate_nanos = estimate
    decision.clamped = output_tokens < requested_bound
    decision.downgraded_from = requested if model.id != requested else None
    decision.holds = holds
    decision.new_flags = tuple((c.flag_key, c.window.end) for c in new_flags) if new_flags else ()
    decision.shadow = tuple(shadow) if shadow else ()
    decision.denial = None
    decision.remaining_nanos = remaining
    decision.rate = rate
    decision.needs_buckets = False
    return decision


def _check_limits(plan: Plan, usage: Sequence[tuple[int, int]], tokens: int, shadow: list[str]) -> RateInfo | None:
    """The rate headers of an admitted call (the tightest limit of each kind, remaining after
    this call), or None when an enforced limit has no room for it (``_refuse_rate`` says more)."""
    rpm_limit = tpm_limit = None
    rpm_left = tpm_left = 0
    rpm_reset = tpm_reset = (0, 0)
    refused = False
    for limit, rpm, enforced, index, resets in plan.rate_terms:
        spent, reserved = usage[index]
        left = limit - spent - reserved - (1 if rpm else tokens)
        if rpm:
            if rpm_limit is None or left < rpm_left:
                rpm_limit, rpm_left, rpm_reset = limit, left, resets
        elif tpm_limit is None or left < tpm_left:
            tpm_limit, tpm_left, tpm_reset = limit, left, resets
        if left < 0:
            if enforced:
                refused = True
            elif not refused:
                check = plan.limits[index - len(plan.budget_terms)]
                shadow.append(f"would rate-limit: {check.scope.id} {check.metric}")
    if refused:
        return None
    # An admitted call lands in its window's newest bucket, so the window is fully restored when
    # that bucket leaves (plan.limit_resets): one whole window from the start of the current
    # second, which is ceil(RATE_PERIOD.seconds - fraction) = RATE_PERIOD.seconds whole seconds from now.
    info = _new(RateInfo)
    info.limit_requests = rpm_limit
    info.limit_tokens = tpm_limit
    if rpm_limit is None:
        info.remaining_requests, info.reset_requests_s, info.reset_requests_at = None, 0, 0
    else:
        info.remaining_requests = rpm_left if rpm_left > 0 else 0
        info.reset_requests_s, info.reset_requests_at = _RATE_SECONDS, rpm_reset[0]
    if tpm_limit is None:
        info.remaining_tokens, info.reset_tokens_s, info.reset_tokens_at = None, 0, 0
    else:
        info.remaining_tokens = tpm_left if tpm_left > 0 else 0
        if tpm_left < tpm_limit:
            info.reset_tokens_s, info.reset_tokens_at = _RATE_SECONDS, tpm_reset[0]
        else:  # nothing in the window, not even this call: it is full already
            info.reset_tokens_s, info.reset_tokens_at = 0, tpm_reset[1]
    return info


def with_buckets(decision: Decision, call: CallRequest, plan: Plan, usage: Sequence[tuple[int, int]],
                 buckets: Sequence[Sequence[tuple[int, int]]], now: datetime) -> Decision:
    """A rate refusal that ``decide`` judged without buckets (``needs_buckets``), told exactly
    when to retry from ``buckets``: what ``decide`` would say given them, without deciding again."""
    used = [spent + reserved for spent, reserved in usage]
    tokens = call.input_tokens + decision.output_tokens * call.choices
    rate, denial = _refuse_rate(plan, used, len(plan.budget_terms), tokens, buckets, now)
    return Decision(requested=decision.requested, output_tokens=decision.output_tokens, denial=denial,
                    shadow=decision.shadow, rate=rate)


def _refuse_rate(plan: Plan, used: list[int], offset: int, tokens: int,
                 buckets: Sequence[Sequence[tuple[int, int]]] | None, now: datetime) -> tuple[RateInfo, Denial]:
    """The refusal of a call that an enforced rate limit has no room for, and the rate headers
    of the windows as they stand (the call is not counted). The call may be retried when every
    such window has room for it; without ``buckets`` all use is taken as the newest (never early)."""
    stamp = now.timestamp()
    width = RATE_PERIOD.bucket_seconds
    retry_at = 0
    first: tuple[LimitCheck, int, int] | None = None
    never = False
    for i, (limit, rpm, _) in enumerate(plan.limit_terms):
        check = plan.limits[i]
        need, now_used = (1 if rpm else tokens), used[offset + i]
        live = _live(check.window, now_used) if buckets is None else buckets[i]
        room = limit - now_used
        if need <= room or not check.enforce:
            continue
        first = first or (check, now_used, need)
        at = room_at(live, limit, need, check.window.span, width)
        if at is None:
            never = True
        else:
            retry_at = max(retry_at, at)
    assert first is not None
    # A refusal made on a snapshot that a window has since left behind still says 1 s, not 0.
    wait = None if never else max(1, seconds_until(retry_at, stamp))
    return _standing_rate(plan, used, offset, buckets, stamp), rate_denial(first[0], first[1], first[2], wait)


def _standing_rate(plan: Plan, used: list[int], offset: int, buckets: Sequence[Sequence[tuple[int, int]]] | None,
                   stamp: float) -> RateInfo:
    """The rate headers of a refused call: the tightest limit of each kind as it stands, the call
    not counted; without ``buckets`` all use is taken as the newest (a reset never early)."""
    width = RATE_PERIOD.bucket_seconds
    info = RateInfo()
    tightest: dict[bool, int] = {}
    for i, (limit, rpm, _) in enumerate(plan.limit_terms):
        best = tightest.get(rpm)
        if best is None or limit - used[offset + i] < limit - used[offset + best]:
            tightest[rpm] = i
    for rpm, i in tightest.items():
        limit = plan.limit_terms[i][0]
        window = plan.limits[i].window
        live = _live(window, used[offset + i]) if buckets is None else buckets[i]
        restored = restored_at(live, window.bucket, window.span, width)
        remaining, reset_s = max(limit - used[offset + i], 0), seconds_until(restored, stamp)
        if rpm:
            info.limit_requests, info.remaining_requests = limit, remaining
            info.reset_requests_s, info.reset_requests_at = reset_s, restored
        else:
            info.limit_tokens, info.remaining_tokens = limit, remaining
            info.reset_tokens_s, info.reset_tokens_at = reset_s, restored
    return info


def _live(window: Window, amount: int) -> list[tuple[int, int]]:
    """A window's use taken as all in its newest bucket: the latest it can leave."""
    return [(window.bucket, amount)] if amount > 0 else []


def _output_bound(model: ModelSpec, call: CallRequest) -> int:
    """The output bound a call's worst case assumes: the client's, capped at what the model can produce."""
    return model.max_output if call.output_tokens is None else min(call.output_tokens, model.max_output)


def _unknown_model(model: str) -> str:
    return (f"The model {model!r} does not exist in this gateway's catalog. "
            "GET /v1/models lists the models your department may use.")
