"""Admission over the memory store: the hard cap under 1,000 concurrent admissions, and exact pricing."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from clock import FakeClock
from costwarden.core.catalog import ModelSpec
from costwarden.core.decision import CallRequest
from costwarden.core.money import Price, cost_nanos
from costwarden.core.scopes import Caller, Planner
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.policy import parse_policy

# gpt-4o-mini, 1,000 input + 50 output tokens: 150,000 + 30,000 nano-dollars = $0.00018 a call
POLICY = """
version: 1
departments:
  HR:
    budgets: [{limit: 0.0018, period: monthly, action: reject}]
"""


async def test_1000_concurrent_admissions_admit_exactly_what_fits() -> None:
    admission = Admission(MemoryCounterStore(), FakeClock())
    planner = Planner(parse_policy(POLICY))
    request = CallRequest(Caller("HR"), "gpt-4o-mini", 1000, 50)  # 50 < 64: nothing can be clamped in
    outcomes = await asyncio.gather(*(admission.admit(f"c{i}", request, planner) for i in range(1000)))
    admitted = [o for o in outcomes if isinstance(o, Admitted)]
    assert len(admitted) == 10
    # settle each below its worst case ($0.00015 of $0.00018): the unused room opens up again
    await asyncio.gather(*(admission.settle(a, 1000, 0) for a in admitted))
    later = await asyncio.gather(*(admission.admit(f"d{i}", request, planner) for i in range(100)))
    assert sum(isinstance(o, Admitted) for o in later) == 1  # 10 x $0.00015 settled leaves $0.0003: one more


async def test_released_calls_free_their_room() -> None:
    admission = Admission(MemoryCounterStore(), FakeClock())
    planner = Planner(parse_policy(POLICY))
    request = CallRequest(Caller("HR"), "gpt-4o-mini", 1000, 50)
    first = [await admission.admit(f"c{i}", request, planner) for i in range(10)]
    assert all(isinstance(o, Admitted) for o in first)
    assert not isinstance(await admission.admit("x", request, planner), Admitted)
    for outcome in first:
        assert isinstance(outcome, Admitted)
        await admission.release(outcome)
    assert isinstance(await admission.admit("y", request, planner), Admitted)


prices = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=10**8)


@given(prices, prices, prices, counts, counts, counts)
def test_model_cost_equals_the_reference_pricing(p_in: Decimal, p_cached: Decimal, p_out: Decimal, n_in: int,
                                                 n_cached: int, n_out: int) -> None:
    n_in += n_cached  # input_tokens includes the cached ones
    model = ModelSpec("m", "openai", 1, Price(p_in), Price(p_out), Price(p_cached))
    expected = cost_nanos((n_in - n_cached, Price(p_in)), (n_cached, Price(p_cached)), (n_out, Price(p_out)))
    assert model.cost(n_in, n_out, n_cached) == expected
    exact = (Decimal(n_in - n_cached) * p_in + Decimal(n_cached) * p_cached + Decimal(n_out) * p_out) / 10**6
    assert Decimal(expected) / 10**9 - exact < Decimal("1e-9")


def test_a_clock_that_steps_back_gets_the_plan_of_its_own_instant() -> None:
    from datetime import timedelta

    from costwarden.core.scopes import plan_for

    policy = parse_policy("""
version: 1
departments:
  HR:
    budgets: [{limit: 10, period: 1h, action: reject}]
""")
    planner, caller = Planner(policy), Caller("HR")
    later = FakeClock()()
    earlier = later - timedelta(minutes=2)
    planner.plan(caller, later, later.timestamp())
    stepped_back = planner.plan(caller, earlier, earlier.timestamp())
    assert [w.key for w in stepped_back.windows] == [w.key for w in plan_for(policy, caller, earlier).windows]
    assert [w.bucket for w in stepped_back.windows] == [w.bucket for w in plan_for(policy, caller, earlier).windows]


async def test_an_admitted_call_carries_its_instant_in_epoch_seconds_and_settles_once_awaited() -> None:
    clock = FakeClock()
    admission = Admission(MemoryCounterStore(), clock)
    planner = Planner(parse_policy(POLICY))
    admitted = await admission.admit("c", CallRequest(Caller("HR"), "gpt-4o-mini", 1000, 50), planner)
    assert isinstance(admitted, Admitted)
    assert admitted.stamp == admitted.at.timestamp()
    pending = admission.settle(admitted, 1000, 50)  # priced now, charged when awaited
    assert admitted.reservation.id in {r.id for r in await admission.store.owned_by("local")}
    settled = await pending
    assert settled.cost_nanos == 180_000
    assert not await admission.store.owned_by("local")
