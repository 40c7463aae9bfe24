"""The hot path's shortcuts give the answers of the code they short-cut, on generated policies.

``decide()`` admits the usual call (the model asked for is allowed and its worst case fits every
budget) without the general loop over models and budgets; ``Planner`` reuses a caller's plan and
shares calendar windows instead of calling ``plan_for``. Both are checked here against the general
code on small generated policies: departments with teams, per-key and per-user templates, budgets
of every period, action and unit, enforced or not, rate limits, and a catalog with tiers and a
downgrade chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, event, find, given, settings
from hypothesis import strategies as st

from costwarden.core import decision as decision_module
from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.core.decision import CallRequest, Decision, Hold, decide
from costwarden.core.kinds import ActionKind, Unit
from costwarden.core.money import Price
from costwarden.core.periods import Period
from costwarden.core.policy import Action, Budget, Department, Policy, RateLimits, Rules, Team
from costwarden.core.scopes import RATE_PERIOD, Caller, Plan, Planner, plan_for
from costwarden.core.sliding import leaves_at

PERIODS = ("monthly", "weekly", "daily", "1h", "90m", "7d", "5m")
ZONES = ("UTC", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu")
TIER_SETS = st.frozensets(st.sampled_from((1, 2, 3)), min_size=1)
# id, tier, downgrade_to, kind: a three-step chain, a model outside it, and an embedding model
MODELS = (("big", 3, "mid", "chat"), ("mid", 2, "small", "chat"), ("small", 1, None, "chat"),
          ("solo", 2, None, "chat"), ("embed", 1, None, "embedding"))
MODEL_IDS = tuple(m[0] for m in MODELS)
# instants around DST changes in the zones above, and plain ones
EDGES = (datetime(2026, 3, 8, 7, 0, tzinfo=UTC), datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
         datetime(2026, 4, 4, 15, 0, tzinfo=UTC), datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
         datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 11, 10, 15, 0, tzinfo=UTC))
EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# free, cheap, dear, and one whose cost per token is not a whole nano-dollar
PRICES = st.sampled_from(tuple(Price(usd) for usd in ("0", "0.075", "0.6", "2.5", "15", "0.0015")))
CONTEXT_WINDOWS, MAX_OUTPUTS = st.sampled_from((1_000, 8_000, 128_000)), st.sampled_from((16, 100, 4_096))


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    specs = {}
    for model_id, tier, downgrade_to, kind in MODELS:
        specs[model_id] = ModelSpec(
            id=model_id, provider="openai", tier=tier, input=draw(PRICES), output=draw(PRICES),
            context_window=draw(CONTEXT_WINDOWS), max_output=draw(MAX_OUTPUTS), downgrade_to=downgrade_to, kind=kind)
    return Catalog(specs)


# Strategies are built once: building them per draw (and re-validating them) was most of the cost.
UNITS = st.sampled_from((Unit.USD, Unit.TOKENS))
# a call costs up to ~1e8 nano-dollars or ~20,000 tokens: limits around that are hit often
USD_LIMITS, TOKEN_LIMITS = st.integers(1, 3 * 10**7), st.integers(1, 30_000)
ACTION_KINDS = st.sampled_from(tuple(ActionKind))
ALERT_AT = st.sets(st.sampled_from((Decimal("0.5"), Decimal("0.8"), Decimal(1))), max_size=2).map(sorted).map(tuple)
PERIOD_VALUES = st.sampled_from(tuple(Period.parse(text) for text in PERIODS))


@st.composite
def _budget(draw: st.DrawFn) -> Budget:
    unit = draw(UNITS)
    kind = draw(ACTION_KINDS)
    return Budget(limit=draw(USD_LIMITS if unit == Unit.USD else TOKEN_LIMITS), period=draw(PERIOD_VALUES),
                  action=Action(kind, draw(TIER_SETS) if kind == ActionKind.RESTRICT_TIERS else frozenset()),
                  unit=unit, alert_at=draw(ALERT_AT), enforce=draw(st.booleans()))


BUDGET_LISTS = st.lists(_budget(), max_size=3).map(tuple)
TPM, RPM = st.integers(1, 20_000), st.integers(1, 5)
RATE_LIMITS = (st.builds(RateLimits, tpm=TPM, enforce=st.booleans())
               | st.builds(RateLimits, rpm=RPM, enforce=st.booleans())
               | st.builds(RateLimits, tpm=TPM, rpm=RPM, enforce=st.booleans()))
RULES = st.builds(Rules, budgets=BUDGET_LISTS, limits=st.none() | RATE_LIMITS)
SOME_RULES = st.just(Rules()) | RULES
# most departments may use every model of their tiers; some have allow-lists
ALLOW_LISTS = st.sampled_from((None, None, None, frozenset({"big", "mid", "small"}), frozenset({"solo", "embed"}),
                               frozenset({"small"})))
DEPT_TIERS = st.sampled_from(tuple(frozenset(t) for t in ((1, 2, 3), (1, 2, 3), (1,), (1, 2), (2, 3))))
TEAMS: st.SearchStrategy[dict[str, Team]] = st.just({}) | RULES.map(lambda r: {"T": Team("T", "T", r)})


def _department(dept_id: str) -> st.SearchStrategy[Department]:
    return st.builds(Department, id=st.just(dept_id), name=st.just(dept_id), rules=RULES, tiers=DEPT_TIERS,
                     models=ALLOW_LISTS, teams=TEAMS, per_key=SOME_RULES, per_user=SOME_RULES)


# B is a plain department beside A: it checks that a call of one never sees the other's rules
PLAIN_B = st.builds(Department, id=st.just("B"), name=st.just("B"), rules=SOME_RULES, tiers=DEPT_TIERS)
POLICIES = st.builds(
    Policy, catalog=catalogs(), departments=st.fixed_dictionaries({"A": _department("A"), "B": PLAIN_B}),
    timezone=st.sampled_from(tuple(ZoneInfo(zone) for zone in ZONES)), organization=SOME_RULES)


CALLERS = st.builds(Caller, st.sampled_from(("A", "B")), st.sampled_from((None, "T", "unknown-team")),
                    st.sampled_from((None, "k1", "k2")), st.sampled_from((None, "u1")))
INSTANTS = st.one_of(
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)),
    st.builds(lambda edge, s: edge + timedelta(seconds=s), st.sampled_from(EDGES), st.integers(-120, 120)))
# model ids with an unknown one now and then; input up to past the smallest context window
CALLS = st.builds(CallRequest, CALLERS, st.sampled_from((*MODEL_IDS, *MODEL_IDS, "unknown-model")),
                  st.integers(0, 5_000), st.none() | st.integers(0, 5_000), st.integers(1, 3))


def usages(policy: Policy, call: CallRequest, plan: Plan) -> st.SearchStrategy[list[tuple[int, int]]]:
    """(spent, reserved) per window: anywhere from empty to past the limit, and often just around
    the room the call's worst case needs on the model it asks for, where the outcomes change."""
    model = policy.catalog.get(call.model)
    bound = 0 if model is None else model.max_output if call.output_tokens is None \
        else min(call.output_tokens, model.max_output)
    worst_tokens = call.input_tokens + bound * call.choices
    worst_cost = 0 if model is None else model.cost(call.input_tokens, bound * call.choices)
    needs = [(c.budget.limit, worst_tokens if c.budget.unit == Unit.TOKENS else worst_cost) for c in plan.budgets]
    needs += [(c.limit, 1 if c.metric == "rpm" else worst_tokens) for c in plan.limits]
    return st.tuples(*(st.tuples(_spent(limit, need), st.integers(0, limit // 4 + 1)) for limit, need in needs)).map(list)


def _spent(limit: int, need: int) -> st.SearchStrategy[int]:
    anywhere = st.integers(0, limit + limit // 4 + 1)
    # room of need * eighths / 8 (+/- a little): none, some, just enough, just short, plenty
    near = st.builds(lambda eighths, nudge: max(0, limit - need * eighths // 8 + nudge),
                     st.integers(0, 16), st.integers(-2, 2))
    return anywhere | near


@contextmanager
def general_path_only() -> Iterator[None]:
    """Make ``decide`` skip its fast path: the check that admits the usual call outright never fits."""
    with mock.patch.object(decision_module, "_worst_cost_if_fits", return_value=None):
        yield


class Scenario(NamedTuple):
    """One call to decide: the policy, the call, its plan at ``now`` and the counters' state."""

    policy: Policy
    call: CallRequest
    now: datetime
    plan: Plan
    usage: list[tuple[int, int]]
    flags: frozenset[str]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    policy, call, now = draw(POLICIES), draw(CALLS), draw(INSTANTS)
    plan = plan_for(policy, call.caller, now)
    usage = draw(usages(policy, call, plan))
    flags = draw(st.frozensets(st.sampled_from(plan.flag_keys)) if plan.flag_keys else st.just(frozenset[str]()))
    return Scenario(policy, call, now, plan, usage, flags)


def decide_both(s: Scenario) -> tuple[Decision, Decision, bool]:
    """``decide`` as run, ``decide`` on its general path, and whether the fast path answered."""
    fast_answers: list[bool] = []
    fits = decision_module._worst_cost_if_fits

    def spy(*args: object) -> int | None:
        cost = fits(*args)  # type: ignore[arg-type]
        fast_answers.append(cost is not None)
        return cost

    with mock.patch.object(decision_module, "_worst_cost_if_fits", spy):
        fast = decide(s.policy, s.call, s.plan, s.usage, s.flags, s.now)
    with general_path_only():
        general = decide(s.policy, s.call, s.plan, s.usage, s.flags, s.now)
    return fast, general, any(fast_answers)


@EXAMPLES
@given(scenarios())
def test_fast_path_decides_as_the_general_path(scenario: Scenario) -> None:
    """Whatever the policy, call and counters, ``decide`` answers the same with its fast path as without."""
    fast, general, took_fast_path = decide_both(scenario)
    outcome = general.label if general.denial is None else general.denial.error.__name__
    event("fast path" if took_fast_path else f"general path: {outcome}")
    assert fast == general


def outcomes(scenario: Scenario) -> set[str]:
    decision, _, took_fast_path = decide_both(scenario)
    if took_fast_path:
        return {"fast"}
    return {name for name, on in (("clamped", decision.clamped), ("downgraded", decision.downgraded_from),
                                  ("shadow", decision.shadow), ("refused", decision.denial)) if on}


@pytest.mark.parametrize("outcome", ["fast", "clamped", "downgraded", "shadow", "refused"])
def test_generated_scenarios_reach_each_outcome(outcome: str) -> None:
    """The generators are not vacuous: they make fast-path calls, and general-path calls that are
    clamped, downgraded, shadowed and refused (found from a fixed seed, so the same each run)."""
    search = settings(max_examples=2_000, database=None, derandomize=True, phases=[Phase.generate],
                      suppress_health_check=[HealthCheck.too_slow])
    find(scenarios(), lambda scenario: outcome in outcomes(scenario), settings=search)


# (caller, seconds since the previous call): bucket and day edges, a few minutes, up to 40 days
ADVANCES = (st.sampled_from((0, 1, 59, 60, 61, 3_599, 3_600, 86_399, 86_400)) | st.integers(0, 300)
            | st.integers(0, 40 * 86_400))
STEPS = st.lists(st.tuples(CALLERS, ADVANCES), min_size=1, max_size=30)


@EXAMPLES
@given(POLICIES, INSTANTS, STEPS, st.sampled_from((1, 2, 100)))
def test_planner_plans_as_plan_for(policy: Policy, start: datetime, schedule: list[tuple[Caller, int]],
                                   max_callers: int) -> None:
    """Over a run of calls with time moving forward, every plan the Planner gives (kept, shared
    or rebuilt, with its cache cleared when full) reads and writes the counters ``plan_for``'s
    would, with the same checks; a kept plan's rolling windows are bounded at the instant it was
    made, which is at most one bucket earlier."""
    planner = Planner(policy, max_callers=max_callers)
    now = start
    for caller, seconds in schedule:
        now += timedelta(seconds=seconds)
        stamp = now.timestamp()
        kept = planner.plan(caller, now, stamp)
        fresh = plan_for(policy, caller, now)
        assert [(c.scope, c.index, c.budget) for c in kept.budgets] == [(c.scope, c.index, c.budget) for c in fresh.budgets]
        assert [(c.scope, c.metric, c.limit, c.enforce) for c in kept.limits] \
            == [(c.scope, c.metric, c.limit, c.enforce) for c in fresh.limits]
        assert [(w.key, w.bucket, w.span) for w in kept.windows] == [(w.key, w.bucket, w.span) for w in fresh.windows]
        assert kept.flag_keys == fresh.flag_keys
        periods = [c.budget.period for c in fresh.budgets] + [RATE_PERIOD] * len(fresh.limits)
        for period, old, new in zip(periods, kept.windows, fresh.windows, strict=True):
            if period.is_calendar:
                assert (old.start, old.end) == (new.start, new.end)
            else:
                lag = new.end - old.end
                assert new.start - old.start == lag and timedelta(0) <= lag < timedelta(seconds=period.bucket_seconds)
        # a kept plan was made earlier, so its own horizon may end sooner, never later
        assert stamp < kept.valid_until <= fresh.valid_until


def reference_admission(s: Scenario, decision: Decision) -> tuple[tuple[Hold, ...], int | None, tuple[int, ...]]:
    """The holds, the dollar room left (below zero when a budget that does not block is overrun)
    and the rate-header instants of an admitted call, worked out from the plan's checks one by one (as ``decide`` did before it kept per-plan terms)."""
    call, plan = s.call, s.plan
    used = [spent + reserved for spent, reserved in s.usage]
    tokens = call.input_tokens + decision.output_tokens * call.choices
    holds: list[Hold] = []
    remaining: int | None = None
    for i, check in enumerate(plan.budgets):
        hard = check.budget.limit if check.budget.is_hard else None
        if check.budget.unit == Unit.TOKENS:
            holds.append(Hold(check.window, tokens, hard, Unit.TOKENS))
            continue
        holds.append(Hold(check.window, decision.estimate_nanos, hard, Unit.USD))
        room = check.budget.limit - used[i] - decision.estimate_nanos
        remaining = room if remaining is None else min(remaining, room)
    for limit in plan.limits:
        enforced = limit.limit if limit.enforce else None
        holds.append(Hold(limit.window, 1, enforced, Unit.REQUESTS) if limit.metric == "rpm"
                     else Hold(limit.window, tokens, enforced, Unit.TOKENS))
    width = RATE_PERIOD.bucket_seconds
    resets = tuple(sorted({leaves_at(c.window.bucket, c.window.span, width) for c in plan.limits}
                          | {c.window.bucket * width for c in plan.limits}))
    return tuple(holds), remaining, resets


@EXAMPLES
@given(scenarios())
def test_an_admitted_call_holds_what_its_plan_checks(scenario: Scenario) -> None:
    """The holds, the dollar room left and the rate-header instants that ``decide`` builds from
    the plan's precomputed terms are those the plan's checks give one by one."""
    decision = decide(scenario.policy, scenario.call, scenario.plan, scenario.usage, scenario.flags, scenario.now)
    if decision.denial is not None:
        return
    holds, remaining, resets = reference_admission(scenario, decision)
    assert decision.holds == holds
    assert decision.remaining_nanos == remaining
    if decision.rate is not None:
        said = {decision.rate.reset_requests_at, decision.rate.reset_tokens_at} - {0}
        assert said <= set(resets)
    else:
        assert not scenario.plan.limits


SIZES = st.lists(st.tuples(st.sampled_from((0, 100, 2_000)), st.sampled_from((None, 0, 50, 5_000))),
                 min_size=1, max_size=6)


@EXAMPLES
@given(scenarios(), SIZES)
def test_calls_of_one_size_share_their_plans_holds_and_hold_what_a_plan_of_their_own_gives(
        scenario: Scenario, sizes: list[tuple[int, int | None]]) -> None:
    """A plan keeps the holds of the last call admitted on it and gives them to the next of the
    same worst case (dollars and tokens): whatever ran on the plan before, each call is decided
    as on a plan of its own, and a settlement's amounts, picked by unit, follow its holds."""
    s = scenario
    last: tuple[int, int, tuple[Hold, ...]] | None = None  # the last call admitted: dollars, tokens, holds
    for input_tokens, output_tokens in sizes:
        call = replace(s.call, input_tokens=input_tokens, output_tokens=output_tokens)
        shared = decide(s.policy, call, s.plan, s.usage, s.flags, s.now)
        own = decide(s.policy, call, plan_for(s.policy, call.caller, s.now), s.usage, s.flags, s.now)
        assert shared == own
        if shared.denial is not None:
            continue
        tokens = call.input_tokens + shared.output_tokens * call.choices
        assert s.plan.hold_amounts((shared.estimate_nanos, tokens, 1)) == tuple(h.amount for h in shared.holds)
        if last is not None and last[:2] == (shared.estimate_nanos, tokens):
            assert shared.holds is last[2]  # made once, shared
        last = shared.estimate_nanos, tokens, shared.holds


@pytest.mark.parametrize("windows", [0, 1, 2, 5])
def test_a_plan_picks_one_amount_per_hold_by_its_unit(windows: int) -> None:
    """``Plan.hold_amounts`` answers a tuple of one amount per window, whatever the count (one
    item and none are built apart from the rest)."""
    now = datetime(2026, 11, 10, tzinfo=UTC)
    rules = Rules(budgets=tuple(Budget(limit=10**9, period=Period.parse("monthly"), action=Action(ActionKind.REJECT),
                                       unit=Unit.USD if i % 2 else Unit.TOKENS) for i in range(min(windows, 3))),
                  limits=RateLimits(tpm=100, rpm=5) if windows == 5 else None)
    policy = Policy(catalog=Catalog({}), departments={"A": Department(id="A", name="A", rules=rules)})
    plan = plan_for(policy, Caller("A"), now)
    assert len(plan.hold_terms) == windows
    picked = plan.hold_amounts((7, 8, 1))
    assert picked == tuple(7 if unit == Unit.USD else 8 if unit == Unit.TOKENS else 1 for _, _, unit in plan.hold_terms)


@EXAMPLES
@given(scenarios())
def test_a_plan_keeps_the_models_its_caller_may_use_under_the_policy_that_said_so(scenario: Scenario) -> None:
    """A plan keeps the models its caller may use (``Plan.usable``) with the policy that allowed
    them: after another policy's decisions on the same plan let the caller use every model, each
    call is still decided as on a fresh plan of its own policy."""
    s = scenario
    everything = replace(s.policy, departments={dept_id: replace(dept, tiers=frozenset({1, 2, 3}), models=None)
                                                for dept_id, dept in s.policy.departments.items()})
    decide(everything, s.call, s.plan, s.usage, s.flags, s.now)  # the caller may use any model there
    kept = decide(s.policy, s.call, s.plan, s.usage, s.flags, s.now)
    assert kept == decide(s.policy, s.call, plan_for(s.policy, s.call.caller, s.now), s.usage, s.flags, s.now)
    assert decide(s.policy, s.call, s.plan, s.usage, s.flags, s.now) == kept  # and again, from what it kept


@pytest.mark.parametrize(("clamped", "downgraded_from", "label"), [
    (False, None, "allow"), (True, None, "clamp"), (False, "gpt-4o", "downgrade"), (True, "gpt-4o", "clamp,downgrade")])
def test_a_decisions_label_names_what_was_changed(clamped: bool, downgraded_from: str | None, label: str) -> None:
    assert Decision(requested="gpt-4o", clamped=clamped, downgraded_from=downgraded_from).label == label
