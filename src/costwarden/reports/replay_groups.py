"""What the replay keeps per caller and per model asked for, made once instead of per call.

A ``Group`` is one caller's plan as the gateway's ``Planner`` makes it (callers whose plans are the
same share one), bound to the replay's counters; it holds until one of its calendar windows ends.
A ``Route`` is a group with the model a call asks for: that model's ``downgrade_to`` chain, and per
counter the spend up to which every model of the chain has room for its largest possible call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from costwarden.core.catalog import ModelSpec
from costwarden.core.kinds import ActionKind, Unit
from costwarden.core.policy import Policy
from costwarden.core.scopes import RATE_PERIOD, BudgetCheck, Caller, Plan
from costwarden.reports.replay_counters import Counter, Counters
from costwarden.reports.replay_result import Outcome

# A verdict of ``decide()`` remembered for a group structure, a model, the restriction flags up and
# which candidates fit which counters; see replay.py.
Memo = dict[int, "Verdict"]
ANY_INPUT = 2**62  # the context of a route without candidates: its calls are refused whatever their size


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``decide()`` made of a call: served on ``served`` (None: refused with ``code``)."""

    served: ModelSpec | None
    code: str = ""
    downgraded: bool = False
    exhausted: bool = False  # refused for its budget or its rights: the budgets it could not fit run out
    flagged: tuple[int, ...] = ()  # budgets whose restriction the decision raises


@dataclass(slots=True)
class Window:
    """One counter of a plan, as a route checks it."""

    index: int
    counter: Counter
    limit: int
    unit: Unit
    ample_below: int  # spend up to which every candidate has room for its largest call
    rejects: bool  # an enforced ``reject`` budget, which clamps a call's output to its room


@dataclass(slots=True)
class Route:
    """A group's calls for one model."""

    requested: ModelSpec | None  # as ``decide()`` finds it
    resolved: ModelSpec | None  # as the run-out dates price it (aliases too)
    candidates: tuple[ModelSpec, ...]
    windows: tuple[Window, ...]
    checks: tuple[tuple[Counter, int], ...]  # (counter, ample_below) of every window
    min_context: int  # a longer input may not fit a candidate's context window: always decided
    memo: Memo
    # calendar budgets that can run out, with the spend up to which the model asked for fits whole:
    # (counter, limit, check, counted in tokens, safe below)
    calendar: tuple[tuple[Counter, int, BudgetCheck, bool, int], ...] = ()
    blocker: tuple[Counter, int] | None = None  # the check that last failed to prove the route roomy
    proven: int = -1  # the replay's epoch in which every counter was shown to have room (replay.py)
    plain: Verdict | None = None  # the verdict of a call that every counter has room for, no flag up


@dataclass(slots=True)
class Group:
    """A caller's plan and counters; ``outcome`` is its department's tally."""

    caller: Caller
    plan: Plan
    counters: tuple[Counter, ...]
    limits: tuple[int, ...]  # per counter
    units: tuple[Unit, ...]  # what each counter counts
    valid_until: float  # epoch seconds: the end of its first calendar window to end
    structure: tuple[object, ...]  # what decide() reads of the plan: groups alike share verdicts
    flag_keys: tuple[str, ...]
    # the counters a settled call adds to, in plan order: calendar ones (counted in tokens or not),
    # then rolling ones with what they count
    cal: tuple[tuple[Counter, bool], ...]
    rolling: tuple[tuple[Counter, Unit], ...]
    # calendar budgets, which can run out: (counter, limit, check, counted in tokens)
    calendar: tuple[tuple[Counter, int, BudgetCheck, bool], ...]
    routes: dict[str, Route] = field(default_factory=dict)
    outcome: Outcome = field(default_factory=Outcome)


def make_group(caller: Caller, plan: Plan, counters: Counters) -> Group:
    """Bind ``plan``'s windows to the replay's counters."""
    bound: list[Counter] = []
    units: list[Unit] = []
    for check in plan.budgets:
        period = check.budget.period
        if period.is_calendar:
            bound.append(counters.get(check.window, 0, check))
        else:
            bound.append(counters.get(check.window, period.bucket_seconds, None))
        units.append(Unit.TOKENS if check.budget.unit == Unit.TOKENS else Unit.USD)
    for limit in plan.limits:
        bound.append(counters.get(limit.window, RATE_PERIOD.bucket_seconds, None))
        units.append(Unit.REQUESTS if limit.metric == "rpm" else Unit.TOKENS)
    calendar = tuple((bound[i], c.budget.limit, c, units[i] == Unit.TOKENS)
                     for i, c in enumerate(plan.budgets) if c.budget.period.is_calendar)
    ends = [c.window.end.timestamp() for c in plan.budgets if c.budget.period.is_calendar]

    structure = (caller.department, tuple(c.budget for c in plan.budgets), plan.limit_terms)
    cal = tuple((c, u == Unit.TOKENS) for c, u in zip(bound, units, strict=True) if not c.width)
    rolling = tuple((c, u) for c, u in zip(bound, units, strict=True) if c.width)
    limits = tuple(c.budget.limit for c in plan.budgets) + tuple(c.limit for c in plan.limits)
    return Group(caller, plan, tuple(bound), limits, tuple(units), min(ends, default=float("inf")), structure,
                 plan.flag_keys, cal, rolling, calendar)


def make_route(policy: Policy, group: Group, model: str, memo: Memo) -> Route:
    """The route of ``group``'s calls for ``model``."""
    requested = policy.catalog.get(model)
    candidates = policy.catalog.chain(model) if requested is not None else ()
    windows = []
    budgets = group.plan.budgets
    for index, (counter, limit, unit) in enumerate(zip(group.counters, group.limits, group.units, strict=True)):
        most = max((largest_need(spec, unit) for spec in candidates), default=0)
        budget = budgets[index].budget if index < len(budgets) else None
        rejects = budget is not None and budget.enforce and budget.action.kind == ActionKind.REJECT
        windows.append(Window(index, counter, limit, unit, limit - most, rejects))
    resolved = policy.catalog.resolve(model)
    calendar = tuple((counter, limit, check, in_tokens,
                      limit - largest_need(resolved, Unit.TOKENS if in_tokens else Unit.USD) if resolved else limit)
                     for counter, limit, check, in_tokens in group.calendar)
    return Route(requested, resolved, candidates, tuple(windows), tuple((w.counter, w.ample_below) for w in windows),
                 min((spec.context_window for spec in candidates), default=ANY_INPUT), memo, calendar)


def largest_need(spec: ModelSpec, unit: Unit) -> int:
    """The most one call that fits ``spec``'s context window can need in ``unit`` at its worst case."""
    if unit == Unit.REQUESTS:
        return 1
    if unit == Unit.TOKENS:
        return spec.context_window + spec.max_output
    # The whole input range is covered: below and above a long-context threshold, where another
    # rate table applies, the cost grows with the tokens.
    inputs = {spec.context_window}
    if spec.long_context_above is not None and spec.long_context_above < spec.context_window:
        inputs.add(spec.long_context_above)
    return max(spec.cost(tokens, spec.max_output) for tokens in inputs)


__all__ = ["Group", "Memo", "Route", "Verdict", "Window", "largest_need", "make_group", "make_route"]
