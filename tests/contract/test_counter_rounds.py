"""The one-round-trip operations of the CounterStore contract, run against every backend:
``try_reserve`` answers with the figures it reserved on, ``settle_claiming`` claims the alert
thresholds a settlement crossed, once, and ``remembered`` never invents figures it has not seen."""

from __future__ import annotations

import asyncio

import test_counter_store as contract
from test_counter_store import NOW, T, hold, monthly, rolling

from costwarden.counters import Attempt, Conflict, CounterStore, Reservation, Threshold

# the contract's fixtures: an empty, built store of each backend
store_url, unbuilt, store = contract.store_url, contract.unbuilt, contract.store


async def test_try_reserve_answers_with_the_figures_before_it(store: CounterStore) -> None:
    org, rate = monthly(), rolling("rpm", 100)
    await store.load([(org, 30)])
    await store.set_flags([("restrict|x", T + 60), ("restrict|old", T - 1)])
    flags = ["restrict|x", "restrict|old", "restrict|never"]
    first = await store.try_reserve("a", [hold(org, 50, 100), hold(rate, 1)], T + 600, flags, T)
    assert isinstance(first.outcome, Reservation)
    assert first.usage == [(30, 0), (0, 0)]
    assert first.flags == frozenset({"restrict|x"})
    second = await store.try_reserve("b", [hold(org, 21, 100), hold(rate, 1)], T + 600, [], T)
    assert second == Attempt(Conflict(0, 80), [(30, 50), (0, 1)], frozenset())  # nothing held
    assert (await store.snapshot([org, rate], [], T)).usage == [(30, 50), (0, 1)]
    again = await store.try_reserve("a", [hold(org, 50, 100), hold(rate, 1)], T + 600, flags, T)
    assert again.outcome == first.outcome and again.usage is None  # a retried call changes nothing
    assert (await store.snapshot([org, rate], [], T)).usage == [(30, 50), (0, 1)]


async def test_settle_claiming_claims_each_crossed_threshold_once(store: CounterStore) -> None:
    org = monthly()
    at_half = Threshold(0, 50, "alert|org|0.5", T + 86400)
    at_most = Threshold(0, 90, "alert|org|0.9", T + 86400)
    reservations = []
    for rid in ("a", "b", "c"):
        attempt = await store.try_reserve(rid, [hold(org, 40, 150)], T + 600, [], T)
        assert isinstance(attempt.outcome, Reservation)
        reservations.append(attempt.outcome)
    first = await store.settle_claiming(reservations[0], [49], [at_half, at_most], T)
    assert (first.moved, first.claimed) == ([(0, 49)], ())
    assert (await store.snapshot([org], [], T)).usage == [(49, 80)]
    second = await store.settle_claiming(reservations[1], [1], [at_half, at_most], T)
    assert (second.moved, second.claimed) == ([(49, 50)], (0,))  # exactly at the level crosses it
    third = await store.settle_claiming(reservations[2], [45], [at_half, at_most], T)
    assert (third.moved, third.claimed) == ([(50, 95)], (1,))
    assert (await store.snapshot([org], [], T)).usage == [(95, 0)]
    repeated = await store.settle_claiming(reservations[2], [45], [at_half, at_most], T)
    assert (repeated.moved, repeated.claimed) == ([(0, 0)], ())  # settled once only
    assert not await store.claim("alert|org|0.5", T + 86400, T)  # the claim is the one `claim` sees


async def test_remembered_figures_are_exact_or_absent(store: CounterStore) -> None:
    org, dept = monthly("org"), monthly("dept", NOW)
    seen = store.remembered([org, dept], [], T)
    assert seen is None or seen.usage == [(0, 0), (0, 0)]  # a shared store has seen nothing yet
    attempt = await store.try_reserve("a", [hold(org, 5, 10), hold(dept, 7)], T + 600, ["restrict|d"], T)
    assert isinstance(attempt.outcome, Reservation)
    seen = store.remembered([org, dept], ["restrict|d"], T)
    assert seen is not None
    assert [spent + reserved for spent, reserved in seen.usage] == [5, 7]
    assert seen.flags == frozenset()


async def test_remembered_figures_count_what_is_in_flight(store: CounterStore) -> None:
    """Calls in flight together decide on the figures the store will hold when each of their
    reservations runs: what was last seen, and what this process has sent since."""
    org = monthly("org")
    await store.snapshot([org], [], T)  # seen: nothing spent
    first = await store.try_reserve("first", [hold(org, 100)], T + 600, [], T)
    assert isinstance(first.outcome, Reservation)
    calls = [asyncio.create_task(store.try_reserve(f"r{i}", [hold(org, 10 + i)], T + 600, [], T)) for i in range(5)]
    settling = asyncio.create_task(store.settle(first.outcome, [70]))
    await asyncio.sleep(0)  # each call has sent its command; none is answered yet
    seen = store.remembered([org], [], T)
    assert seen is not None and [s + r for s, r in seen.usage] == [70 + sum(10 + i for i in range(5))]
    attempts = await asyncio.gather(*calls)
    await settling
    assert all(isinstance(a.outcome, Reservation) for a in attempts)
    seen = store.remembered([org], [], T)
    assert seen is not None and [s + r for s, r in seen.usage] == [s + r for s, r in await contract.usage(store, org)]
