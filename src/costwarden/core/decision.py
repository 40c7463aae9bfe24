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
from decimal import Decimal

from costwarden import errors
from costwarden.core.catalog import ModelSpec
from costwarden.core.denials import Denial, budget_denial, rate_denial, rights_denial
from costwarden.core.money import ceil_div
from costwarden.core.periods import Window
from costwarden.core.policy import ALERT, DOWNGRADE, REJECT, RESTRICT, Budget, Policy
from costwarden.core.scopes import BudgetCheck, Caller, LimitCheck, Plan

MIN_CLAMPED_OUTPUT = 64  # a clamped call must still be able to say something useful
USD, TOKENS, REQUESTS = "usd", "tokens", "requests"


@dataclass(frozen=True, slots=True)
class CallRequest:
    """What is known of a call before it is sent."""

    caller: Caller
    model: str
    input_tokens: int
    output_tokens: int | None  # the client's bound (max_tokens...), None when it gave none
    choices: int = 1  # completions asked for at once (OpenAI ``n``): each may use the whole bound


@dataclass(frozen=True, slots=True)
class Hold:
    """An amount to reserve on one counter; ``limit`` is re-checked atomically when set."""

    window: Window
    amount: int
    limit: int | None
    unit: str  # usd | tokens | requests


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The tightest rate limits for ``x-ratelimit-*`` headers."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: int = 0
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: int = 0


@dataclass(frozen=True, slots=True)
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
        return Decision(call.model, denial=Denial(errors.ModelNotFound, _unknown_model(policy, call.model)))
    dept = policy.departments[call.caller.department]
    used = [spent + reserved for spent, reserved in usage]
    allowed_tiers = _active_restriction(plan, flags)
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
    for check in plan.budgets:
        action = check.budget.action
        if action.kind == RESTRICT and check.budget.enforce and check.flag_key in flags:
            tiers = action.tiers if tiers is None else tiers & action.tiers
    return tiers


def _fit_budgets(plan: Plan, used: list[int], model: ModelSpec, call: CallRequest, policy: Policy) -> _Fit:
    bound = model.max_output if call.output_tokens is None else min(call.output_tokens, model.max_output)
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
           now: datetime) -> Decision:
    tokens = call.input_tokens + output_tokens * call.choices
    rate, rate_denied = _check_limits(plan.limits, used[len(plan.budgets):], tokens, shadow)
    if rate_denied is not None:
        return Decision(call.model, denial=rate_denied, shadow=tuple(shadow), rate=rate)
    estimate = model.cost(call.input_tokens, output_tokens * call.choices)
    holds: list[Hold] = []
    remaining: int | None = None
    for i, check in enumerate(plan.budgets):
        budget = check.budget
        amount = tokens if budget.unit == TOKENS else estimate
        holds.append(Hold(check.window, amount, budget.limit if budget.is_hard else None, budget.unit))
        if budget.unit == USD:
            room = budget.limit - used[i] - amount
            remaining = room if remaining is None else min(remaining, room)
    for limit in plan.limits:
        amount = 1 if limit.metric == "rpm" else tokens
        unit = REQUESTS if limit.metric == "rpm" else TOKENS
        holds.append(Hold(limit.window, amount, limit.limit if limit.enforce else None, unit))
    requested_bound = model.max_output if call.output_tokens is None else min(call.output_tokens, model.max_output)
    return Decision(
        requested=requested,
        model=model,
        output_tokens=output_tokens,
        estimate_nanos=estimate,
        clamped=output_tokens < requested_bound,
        downgraded_from=requested if model.id != requested else None,
        holds=tuple(holds),
        new_flags=tuple((c.flag_key, c.window.end) for c in new_flags),
        shadow=tuple(shadow),
        remaining_nanos=None if remaining is None else max(remaining, 0),
        rate=rate,
    )


def _check_limits(limits: tuple[LimitCheck, ...], used: list[int], tokens: int,
                  shadow: list[str]) -> tuple[RateInfo | None, Denial | None]:
    if not limits:
        return None, None
    tightest: dict[str, tuple[LimitCheck, int]] = {}  # metric -> (check, remaining after this call)
    denial: Denial | None = None
    for check, now_used in zip(limits, used, strict=True):
        need = 1 if check.metric == "rpm" else tokens
        room = check.limit - now_used
        best = tightest.get(check.metric)
        if best is None or room - need < best[1]:
            tightest[check.metric] = (check, room - need)
        if need <= room or denial is not None:
            continue
        if not check.enforce:
            shadow.append(f"would rate-limit: {check.scope.id} {check.metric}")
            continue
        wait = max(1, min(60, ceil_div(60 * (need - room), check.limit)))
        denial = rate_denial(check, now_used, need, wait)
    return _rate_info(tightest), denial


def _rate_info(tightest: dict[str, tuple[LimitCheck, int]]) -> RateInfo:
    """Headers for the tightest limit of each kind; reset is when a steady refill would restore it."""
    fields: dict[str, int | None] = {}
    for metric, kind in (("rpm", "requests"), ("tpm", "tokens")):
        if metric in tightest:
            check, remaining = tightest[metric]
            fields[f"limit_{kind}"] = check.limit
            fields[f"remaining_{kind}"] = max(remaining, 0)
            fields[f"reset_{kind}_s"] = min(60, ceil_div(60 * (check.limit - max(remaining, 0)), check.limit))
    return RateInfo(**fields)  # type: ignore[arg-type]


def crossed_thresholds(budget: Budget, before: int, after: int) -> list[Decimal]:
    """The alert fractions whose level settled spend crossed going from ``before`` to ``after``."""
    return [f for f in budget.alert_at if before < budget.limit * f <= after]


def _unknown_model(policy: Policy, model: str) -> str:
    return (f"The model {model!r} does not exist in this gateway's catalog. "
            "GET /v1/models lists the models your department may use.")
