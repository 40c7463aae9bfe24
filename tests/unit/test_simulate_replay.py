"""The fast replay of ``simulate`` gives exactly what replaying every event through the gateway's
``Admission`` gives (tests/simulate_reference.py): per department the calls allowed, downgraded,
clamped and rejected (by error code), the cost before and after, and the date and instant each
budget ran out. Checked on generated policies with small hard and soft budgets of every action,
unit and period, rate limits, restrictions and an allow-list, and on generated event streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwarden import errors
from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.core.events import UsageEvent
from costwarden.core.kinds import ActionKind, Unit
from costwarden.core.money import Price
from costwarden.core.periods import Period
from costwarden.core.policy import Action, Budget, Department, Policy, RateLimits, Rules, Team
from costwarden.reports.replay import Replay
from costwarden.reports.replay_result import Simulation
from costwarden.reports.simulate import event_row, replay_rows, simulate
from simulate_reference import replay_reference

# id, tier, downgrade_to: a three-step chain and a model outside it
MODELS = (("big", 3, "mid"), ("mid", 2, "small"), ("small", 1, None), ("solo", 2, None))
PRICES = st.sampled_from(tuple(Price(usd) for usd in ("0", "0.075", "0.6", "2.5", "15", "0.0015")))
START = datetime(2026, 10, 31, 22, tzinfo=UTC)  # a month, a week and a day end in the first hours


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    return Catalog({model_id: ModelSpec(
        id=model_id, provider="openai", tier=tier, input=draw(PRICES), output=draw(PRICES),
        context_window=draw(st.sampled_from((2_000, 8_000, 128_000))),
        max_output=draw(st.sampled_from((16, 100, 4_096))), downgrade_to=downgrade_to)
        for model_id, tier, downgrade_to in MODELS})


UNITS = st.sampled_from((Unit.USD, Unit.TOKENS))
# a call costs up to ~1e8 nano-dollars or ~10,000 tokens: limits of a few calls run out in a stream
USD_LIMITS = st.integers(1, 10**8) | st.sampled_from((2 * 10**6, 10**7, 3 * 10**7, 10**8))
TOKEN_LIMITS = st.integers(1, 40_000) | st.sampled_from((5_000, 20_000, 40_000))
PERIODS = st.sampled_from(tuple(Period.parse(text) for text in ("monthly", "weekly", "daily", "1h", "5m")))
TIER_SETS = st.frozensets(st.sampled_from((1, 2, 3)), min_size=1)


@st.composite
def budgets(draw: st.DrawFn) -> Budget:
    unit, kind = draw(UNITS), draw(st.sampled_from(tuple(ActionKind)))
    return Budget(limit=draw(USD_LIMITS if unit == Unit.USD else TOKEN_LIMITS), period=draw(PERIODS),
                  action=Action(kind, draw(TIER_SETS) if kind == ActionKind.RESTRICT_TIERS else frozenset()),
                  unit=unit, enforce=draw(st.booleans() | st.just(True)))


RATE_LIMITS = st.builds(RateLimits, tpm=st.none() | st.integers(1, 30_000), rpm=st.none() | st.integers(1, 4),
                        enforce=st.booleans())
RULES = st.builds(Rules, budgets=st.lists(budgets(), max_size=2).map(tuple), limits=st.none() | RATE_LIMITS)
SOME_RULES = st.just(Rules()) | RULES
DEPARTMENTS = st.fixed_dictionaries({
    "A": st.builds(Department, id=st.just("A"), name=st.just("A"), rules=RULES,
                   tiers=st.sampled_from((frozenset({1, 2, 3}), frozenset({1, 2}))),
                   models=st.sampled_from((None, None, frozenset({"big", "mid", "small"}))),
                   teams=st.just({}) | RULES.map(lambda r: {"T": Team("T", "T", r)}), per_key=SOME_RULES),
    "B": st.builds(Department, id=st.just("B"), name=st.just("B"), rules=SOME_RULES, per_user=SOME_RULES),
})
POLICIES = st.builds(Policy, catalog=catalogs(), departments=DEPARTMENTS, organization=SOME_RULES,
                     timezone=st.sampled_from((ZoneInfo("UTC"), ZoneInfo("America/New_York"))))


@st.composite
def streams(draw: st.DrawFn) -> list[UsageEvent]:
    """Calls in time order, often in the same second (rate limits) and sometimes hours apart."""
    gaps = st.sampled_from((0, 0, 1, 7, 59, 61, 600, 3_600, 5 * 3_600)) | st.integers(0, 100_000)
    at = START + timedelta(seconds=draw(st.integers(0, 3 * 3_600)))
    events = []
    for n in range(draw(st.integers(1, 60))):
        at += timedelta(seconds=draw(gaps), microseconds=draw(st.integers(0, 999_999)))
        inp = draw(st.integers(0, 3_000) | st.integers(0, 10_000))
        events.append(UsageEvent(
            id=f"e{n}", admitted_at=at, finished_at=at, department=draw(st.sampled_from(("A", "A", "B", "Z"))),
            model_requested=draw(st.sampled_from(("big", "big", "mid", "small", "solo", "gone"))),
            model_served="big", provider="openai", endpoint="/v1/chat/completions",
            team=draw(st.sampled_from((None, "T", "U"))), key_id=draw(st.sampled_from((None, "k1", "k2"))),
            user=draw(st.sampled_from((None, "u1"))), input_tokens=inp,
            cached_input_tokens=draw(st.integers(0, inp)), output_tokens=draw(st.integers(0, 400) | st.integers(0, 5_000) | st.just(0)),
            cost_nanos=draw(st.integers(0, 10**7))))
    return events


def reference(policy: Policy, events: list[UsageEvent]) -> Simulation:
    return asyncio.run(replay_reference(policy, events))


def assert_same(fast: Simulation, slow: Simulation) -> None:
    assert fast.departments == slow.departments
    assert fast.ran_out == slow.ran_out
    assert list(fast.ran_out) == list(slow.ran_out)  # the report lists ties in this order
    assert (fast.events, fast.first, fast.last) == (slow.events, slow.first, slow.last)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(POLICIES, streams())
def test_the_fast_replay_gives_what_replaying_every_event_gives(policy: Policy, events: list[UsageEvent]) -> None:
    assert_same(replay_rows(policy, map(event_row, events)), reference(policy, events))


def long_stream(count: int, step: timedelta) -> list[UsageEvent]:
    """Calls of A's two keys on big and small, ``step`` apart, of varied sizes."""
    return [UsageEvent(id=f"e{n}", admitted_at=START + step * n, finished_at=START + step * n, department="A",
                       model_requested="big" if n % 3 else "small", model_served="big", provider="openai",
                       endpoint="/v1/chat/completions", key_id=f"k{n % 2}", input_tokens=200 + n * 37 % 900,
                       output_tokens=50 + n * 11 % 300, cost_nanos=1_000)
            for n in range(count)]


CHAIN = Catalog({"big": ModelSpec("big", "openai", 3, Price("2.5"), Price("10"), downgrade_to="small"),
                 "small": ModelSpec("small", "openai", 1, Price("0.15"), Price("0.6"))})
MONTHLY = Period.parse("monthly")


NO_RULES = Rules()


def dept_policy(budget: Budget, rules: Rules = NO_RULES) -> Policy:
    department = Department("A", "A", Rules((budget,), RateLimits(tpm=3_000_000, rpm=600)), per_key=rules)
    return Policy(catalog=CHAIN, departments={"A": department},
                  organization=Rules((Budget(10**12, MONTHLY, Action(ActionKind.REJECT)),)))


@pytest.mark.parametrize("action", [Action(ActionKind.DOWNGRADE), Action(ActionKind.REJECT),
                                    Action(ActionKind.RESTRICT_TIERS, frozenset({1})), Action(ActionKind.ALERT)])
def test_a_budget_running_out_is_replayed_exactly_with_few_decisions(action: Action) -> None:
    """Through a month where A's budget runs out a third of the way in, every action replays as
    the reference does, and the calls alike are not decided again."""
    policy = dept_policy(Budget(2 * 10**9, MONTHLY, action),
                         Rules((Budget(5 * 10**8, Period.parse("1h"), Action(ActionKind.REJECT)),)))
    events = long_stream(3_000, timedelta(minutes=14))
    replay = Replay(policy)
    replay.run(map(event_row, events))
    assert_same(replay.result, reference(policy, events))
    outcome = replay.result.departments["A"]
    assert outcome.allowed and (outcome.rejected or outcome.downgraded or action.kind == ActionKind.ALERT)
    assert replay.decided < len(events) // 4


def test_calls_out_of_time_order_are_refused() -> None:
    events = long_stream(3, timedelta(minutes=1))
    with pytest.raises(errors.InvalidRequest, match="e0 was admitted at"):
        replay_rows(dept_policy(Budget(10**9, MONTHLY, Action(ActionKind.REJECT))), map(event_row, events[1::-1]))


def test_an_async_listing_replays_as_a_list_and_reports_progress() -> None:
    policy = dept_policy(Budget(10**9, MONTHLY, Action(ActionKind.DOWNGRADE)))
    events = long_stream(25_000, timedelta(seconds=90))
    seen: list[int] = []

    async def listing() -> AsyncIterator[UsageEvent]:
        for event in events:
            yield event

    from_list = replay_rows(policy, map(event_row, events))
    assert_same(asyncio.run(simulate(policy, listing(), seen.append)), from_list)
    assert seen == [10_000, 20_000, 25_000]


def test_a_call_that_cannot_be_clamped_does_not_decide_one_that_can() -> None:
    """Where a reject budget has room for the input but not the worst case, the output is clamped
    to the room when 64 tokens or more fit, and the call refused otherwise: two such calls look
    alike (neither worst case fits) and are still decided one by one."""
    policy = dept_policy(Budget(10**9, MONTHLY, Action(ActionKind.REJECT)))  # $1.00
    sizes = [(100_000, 4_096)] * 3 + [(50_800, 4_096), (40_000, 4_096)]  # $0.29096 each, then $0.12712 left
    events = [UsageEvent(id=f"e{n}", admitted_at=START + timedelta(minutes=n), finished_at=START, department="A",
                         model_requested="big", model_served="big", provider="openai", endpoint="/v1/chat/completions",
                         input_tokens=inp, output_tokens=out) for n, (inp, out) in enumerate(sizes)]
    fast = replay_rows(policy, map(event_row, events))
    assert_same(fast, reference(policy, events))
    outcome = fast.departments["A"]
    # $0.127 of input leaves room for 12 output tokens: refused; $0.10 leaves room for 2,712: clamped
    assert (outcome.allowed, outcome.rejected, outcome.clamped) == (3, 1, 1)


def test_a_restriction_raised_holds_for_the_calls_that_would_fit() -> None:
    """Once a restrict_tiers budget trips, a tier-3 call is downgraded even when its worst case fits
    the room left: the flag up is part of what a verdict is remembered by."""
    policy = dept_policy(Budget(10**9, MONTHLY, Action(ActionKind.RESTRICT_TIERS, frozenset({1}))))  # $1.00
    # three calls of $0.29 on big, then $0.15 of input that does not fit the $0.13 left, then $0.05 that does
    sizes = [(100_000, 4_000)] * 3 + [(60_000, 0), (20_000, 0)]
    events = [UsageEvent(id=f"e{n}", admitted_at=START + timedelta(minutes=n), finished_at=START, department="A",
                         model_requested="big", model_served="big", provider="openai", endpoint="/v1/chat/completions",
                         input_tokens=inp, output_tokens=out) for n, (inp, out) in enumerate(sizes)]
    fast = replay_rows(policy, map(event_row, events))
    assert_same(fast, reference(policy, events))
    assert (fast.departments["A"].allowed, fast.departments["A"].downgraded) == (3, 2)
