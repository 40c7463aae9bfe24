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

from costwarden import errors
from costwarden.core.catalog import ModelSpec
from costwarden.core.denials import Denial, budget_denial, rate_denial, rights_denial
from costwarden.core.money import ceil_div
from costwarden.core.periods import Window
from costwarden.core.policy import ALERT, DOWNGRADE, REJECT, RESTRICT, Policy
from costwarden.core.scopes import BudgetCheck, Caller, Plan

MIN_CLAMPED_OUTPUT = 64  # a clamped call must still be able to say something useful
USD, TOKENS, REQUESTS = "usd", "tokens", "requests"


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


@dataclass(slots=True)
class Hold:
    """An amount to reserve on one counter; ``limit`` is re-checked atomically when set."""

    window: Window
    amount: int
    limit: int | None
    unit: str  # usd | tokens | requests


@dataclass(slots=True)
class RateInfo:
    """The tightest rate limits for ``x-ratelimit-*`` headers."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: int = 0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: int = 0


@dataclass(slots=True)
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

    @property
    def allowed(self) -> bool:
        return self.denial is None

    @property
    def label(self) -> str:
        """allow | clamp | downgrade | clamp,downgrade"""
        parts = [name for name, on in (("clamp", self.clamped), ("downgrade", self.downgraded_from)) if on]
        return ",".join(parts) or "allow"


@dataclass(slots=True)
class _Fit:
    """The outcome of checking one candidate model against every budget."""

    output_tokens: int
    move_on: BudgetCheck | None = None
    denial: Denial | None = None
    shadow: list[str] = field(default_factory=list)
    new_flags: list[BudgetCheck] = field(default_factory=list)


def decide(policy: Policy, call: CallRequest, plan: Plan, usage: Sequence[tuple[int, int]],
           flags: Set[str], now: datetime) -> Decision:
    """Decide a call. ``usage`` holds (spent, reserved) per window of ``plan.windows``."""
    requested = policy.catalog.get(call.model)
    if requested is None:
        return Decision(call.model, denial=Denial(errors.ModelNotFound, _unknown_model(call.model)))
    dept = policy.departments[call.caller.department]
    used = [spent + reserved for spent, reserved in usage]
    allowed_tiers = _active_restriction(plan, flags) if plan.restricting else None
    if allowed_tiers is None and dept.may_use(requested.id, requested.tier) \
            and call.input_tokens <= requested.context_window:
        # The usual call: the model asked for is allowed and its worst case fits every budget.
        # This is what the general loop below concludes for it, without its bookkeeping.
        bound = _output_bound(requested, call)
        worst_cost = _worst_cost_if_fits(plan, used, requested, call, bound)
        if worst_cost is not None:
            return _admit(policy, call, plan, used, requested, bound, [], [], requested.id, now, worst_cost)
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
        if call.input_tokens > model.context_window:
            return Decision(call.model, denial=Denial(errors.ContextLengthExceeded, (
                f"This call has about {call.input_tokens:,} input tokens; {model.id} accepts at most "
                f"{model.context_window:,}. Shorten the messages or choose a model with a larger context window.")))
        fit = _fit_budgets(plan, used, model, call, policy)
        shadow.extend(fit.shadow)
        if fit.denial is not None:
            return Decision(call.model, denial=fit.denial, shadow=tuple(shadow))
        for check in fit.new_flags:
            if check not in new_flags:
                new_flags.append(check)
                tiers = check.budget.action.tiers
                allowed_tiers = tiers if allowed_tiers is None else allowed_tiers & tiers
        if fit.move_on is not None:
            last_move = fit.move_on
            continue
        return _admit(policy, call, plan, used, model, fit.output_tokens, shadow, new_flags, requested.id, now)
    if last_move is not None and last_move.budget.action.kind == DOWNGRADE:
        denial = budget_denial(last_move, used[plan.budgets.index(last_move)], policy.timezone,
                               " and no cheaper model in its downgrade chain fits")
    else:
        denial = rights_denial(dept, requested, allowed_tiers if rights_ok else None, plan, flags, new_flags,
                               policy.timezone)
    flags_out = tuple((c.flag_key, c.window.end) for c in new_flags)
    return Decision(call.model, denial=denial, shadow=tuple(shadow), new_flags=flags_out)


def _active_restriction(plan: Plan, flags: Set[str]) -> frozenset[int] | None:
    tiers: frozenset[int] | None = None
    for check in plan.restricting:
        if check.flag_key in flags:
            action = check.budget.action
            tiers = action.tiers if tiers is None else tiers & action.tiers
    return tiers


def _worst_cost_if_fits(plan: Plan, used: list[int], model: ModelSpec, call: CallRequest, bound: int) -> int | None:
    """The worst-case cost of ``call`` on ``model``, if it fits in the room of every budget."""
    worst_tokens = call.input_tokens + bound * call.choices
    worst_cost = model.cost(call.input_tokens, bound * call.choices)
    for (limit, in_tokens, _), now_used in zip(plan.budget_terms, used, strict=False):
        if (worst_tokens if in_tokens else worst_cost) > limit - now_used:
            return None
    return worst_cost


def _fit_budgets(plan: Plan, used: list[int], model: ModelSpec, call: CallRequest, policy: Policy) -> _Fit:
    bound = _output_bound(model, call)
    fit = _Fit(output_tokens=bound)
    worst_tokens = call.input_tokens + bound * call.choices
    worst_cost = model.cost(call.input_tokens, bound * call.choices)
    for i, check in enumerate(plan.budgets):
        budget = check.budget
        room = budget.limit - used[i]
        if (worst_tokens if budget.unit == TOKENS else worst_cost) <= room:
            continue
        kind = budget.action.kind
        if kind == ALERT:
            continue
        if not budget.enforce:
            fit.shadow.append(f"would {budget.action.describe()}: {check.scope.id} budget {check.index}")
            continue
        if kind == RESTRICT:
            fit.new_flags.append(check)
            if model.tier not in budget.action.tiers:
                fit.move_on = check
                return fit
        elif kind == DOWNGRADE:
            fit.move_on = check
            return fit
        elif kind == REJECT:
            most = _output_that_fits(budget.unit, room, model, call.input_tokens) // call.choices
            if most < 0 or (bound > 0 and most < MIN_CLAMPED_OUTPUT):
                fit.denial = budget_denial(check, used[i], policy.timezone, "")
                return fit
            fit.output_tokens = min(fit.output_tokens, most)
    return fit


def _output_that_fits(unit: str, room: int, model: ModelSpec, input_tokens: int) -> int:
    """The largest output bound whose worst case fits in ``room`` (negative when input alone does not)."""
    if unit == TOKENS:
        return room - input_tokens
    input_cost = model.cost(input_tokens, 0)
    if input_cost > room:
        return -1
    per_token = model.output.picos_per_token
    if per_token == 0:
        return model.max_output
    # cost() rounds the whole call up to a nano-dollar, so search down from the linear bound.
    most = ((room - input_cost) * 1000) // per_token
    while most > 0 and model.cost(input_tokens, most) > room:
        most -= 1
    return most


def _admit(policy: Policy, call: CallRequest, plan: Plan, used: list[int], model: ModelSpec,
           output_tokens: int, shadow: list[str], new_flags: list[BudgetCheck], requested: str,
           now: datetime, estimate: int | None = None) -> Decision:
    """Admit ``call`` on ``model`` with ``output_tokens`` if its rate limits allow; ``estimate``
    is its worst-case cost when already known."""
    tokens = call.input_tokens + output_tokens * call.choices
    count = len(plan.budget_terms)
    rate, rate_denied = _check_limits(plan, used, count, tokens, shadow)
    if rate_denied is not None:
        return Decision(call.model, denial=rate_denied, shadow=tuple(shadow), rate=rate)
    if estimate is None:
        estimate = model.cost(call.input_tokens, output_tokens * call.choices)
    windows = plan.windows
    holds: list[Hold] = []
    remaining: int | None = None
    for i, (limit, in_tokens, hard) in enumerate(plan.budget_terms):
        if in_tokens:
            holds.append(Hold(windows[i], tokens, hard, TOKENS))
            continue
        holds.append(Hold(windows[i], estimate, hard, USD))
        room = limit - used[i] - estimate
        if remaining is None or room < remaining:
            remaining = room
    for i, (_, rpm, enforced) in enumerate(plan.limit_terms, count):
        holds.append(Hold(windows[i], 1, enforced, REQUESTS) if rpm else Hold(windows[i], tokens, enforced, TOKENS))
    requested_bound = _output_bound(model, call)
    return Decision(
        requested,
        model,
        output_tokens,
        estimate,
        output_tokens < requested_bound,
        requested if model.id != requested else None,
        tuple(holds),
        tuple((c.flag_key, c.window.end) for c in new_flags) if new_flags else (),
        tuple(shadow) if shadow else (),
        None,
        None if remaining is None else max(remaining, 0),
        rate,
    )


def _check_limits(plan: Plan, used: list[int], offset: int, tokens: int,
                  shadow: list[str]) -> tuple[RateInfo | None, Denial | None]:
    """The rate headers (the tightest limit of each kind, remaining after this call) and the
    denial of the first enforced limit the call does not fit in, if any."""
    if not plan.limit_terms:
        return None, None
    # the tightest limit of each kind: its limit and what remains after this call
    rpm_limit = tpm_limit = None
    rpm_left = tpm_left = 0
    denial: Denial | None = None
    for i, (limit, rpm, _) in enumerate(plan.limit_terms):
        need = 1 if rpm else tokens
        room = limit - used[offset + i]
        if rpm:
            if rpm_limit is None or room - need < rpm_left:
                rpm_limit, rpm_left = limit, room - need
        elif tpm_limit is None or room - need < tpm_left:
            tpm_limit, tpm_left = limit, room - need
        if need > room and denial is None:
            check = plan.limits[i]
            if not check.enforce:
                shadow.append(f"would rate-limit: {check.scope.id} {check.metric}")
                continue
            wait = max(1, min(60, ceil_div(60 * (need - room), check.limit)))
            denial = rate_denial(check, used[offset + i], need, wait)
    # reset: when a steady refill would restore the limit
    info = RateInfo()
    if rpm_limit is not None:
        rpm_left = max(rpm_left, 0)
        info.limit_requests, info.remaining_requests = rpm_limit, rpm_left
        info.reset_requests_s = min(60, -((rpm_left - rpm_limit) * 60 // rpm_limit))
    if tpm_limit is not None:
        tpm_left = max(tpm_left, 0)
        info.limit_tokens, info.remaining_tokens = tpm_limit, tpm_left
        info.reset_tokens_s = min(60, -((tpm_left - tpm_limit) * 60 // tpm_limit))
    return info, denial


def _output_bound(model: ModelSpec, call: CallRequest) -> int:
    """The output bound a call's worst case assumes: the client's, capped at what the model can produce."""
    return model.max_output if call.output_tokens is None else min(call.output_tokens, model.max_output)


def _unknown_model(model: str) -> str:
    return (f"The model {model!r} does not exist in this gateway's catalog. "
            "GET /v1/models lists the models your department may use.")
