"""Counter store failures below the HTTP edge, on real Redis and a real SQLite ledger: refusing
hard-checked calls while the store is down, retrying settlements it could not take, rebuilding
an emptied store once and by replacement, settling a dead replica's calls, and the reconciler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from clock import FakeClock
from costwarden.app.leases import settle_orphans
from costwarden.app.metrics import Metrics
from costwarden.app.reconciler import Drift, Reconciler
from costwarden.app.upkeep import ensure_built
from costwarden.core.decision import CallRequest
from costwarden.core.events import InflightCall, UsageEvent
from costwarden.core.periods import Window
from costwarden.core.scopes import Caller, Planner
from costwarden.counters import MemoryCounterStore
from costwarden.counters.base import CounterStore
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.errors import StorageError
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from service_fixtures import RedisServer

POLICY = parse_policy("""
version: 1
departments:
  HR:
    budgets: [{limit: 0.0018, period: monthly, action: reject}]
  SALES:
    budgets: [{limit: 0.0018, period: monthly, alert_at: [0.8], action: alert}]
""")
PLANNER = Planner(POLICY)
NOW = datetime.now(UTC).replace(microsecond=0)


def request(department: str) -> CallRequest:
    return CallRequest(Caller(department), "gpt-4o-mini", 1000, 50)


def window(department: str) -> Window:
    return PLANNER.plan(Caller(department), NOW, NOW.timestamp()).windows[0]


async def spent(store: CounterStore, department: str) -> tuple[int, int]:
    return (await store.snapshot([window(department)], [], NOW.timestamp())).usage[0]


def event(ident: str, cost: int, department: str = "HR", **fields: Any) -> UsageEvent:
    values: dict[str, Any] = {
        "id": ident, "admitted_at": NOW, "finished_at": NOW + timedelta(seconds=1), "department": department,
        "model_requested": "gpt-4o-mini", "model_served": "gpt-4o-mini", "provider": "openai",
        "endpoint": "/v1/chat/completions", "input_tokens": 100, "output_tokens": 50, "cost_nanos": cost,
        "estimate_nanos": cost,
    }
    values.update(fields)
    return UsageEvent(**values)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisCounterStore]:
    store = RedisCounterStore.from_url(redis_server.url, replica="one")
    await store.replace([], "build-1")
    try:
        yield store
    finally:
        await store.close()


@pytest.mark.service
async def test_while_redis_is_down_hard_checked_calls_are_refused_and_soft_ones_pass(
        redis_server: RedisServer, redis_store: RedisCounterStore) -> None:
    admission = Admission(redis_store, FakeClock(NOW))
    redis_server.kill()
    with pytest.raises(StorageError):
        await admission.admit("hard", request("HR"), PLANNER)
    soft = await admission.admit("soft", request("SALES"), PLANNER)  # on_store_failure: open, the default
    assert isinstance(soft, Admitted) and soft.reservation.holds == ()
    settled = await admission.settle(soft, 1000, 50)
    assert settled.cost_nanos == 180_000 and len(admission.pending) == 1
    redis_server.start()  # back, and empty
    assert await admission.pending.retry() == 0  # not onto an emptied store
    await redis_store.replace([], "build-2")  # rebuilt from a ledger that lacks the call yet
    assert await admission.pending.retry() == 1
    assert await spent(redis_store, "SALES") == (180_000, 0)


@pytest.mark.service
async def test_a_settlement_redis_could_not_take_is_retried_onto_the_rebuilt_store(
        redis_server: RedisServer, redis_store: RedisCounterStore) -> None:
    admission = Admission(redis_store, FakeClock(NOW))
    call = await admission.admit("c1", request("HR"), PLANNER)
    assert isinstance(call, Admitted)
    redis_server.kill()
    assert (await admission.settle(call, 1000, 50)).cost_nanos == 180_000  # never raises
    assert len(admission.pending) == 1
    redis_server.start()
    await redis_store.replace([], "build-2")  # the call's event was not in the ledger yet
    assert await spent(redis_store, "HR") == (0, 180_000)  # its reservation held again
    assert await admission.pending.retry() == 1
    assert await spent(redis_store, "HR") == (180_000, 0)


@pytest.mark.service
async def test_settlements_held_through_an_outage_are_not_added_again_to_the_rebuilt_store(
        redis_server: RedisServer, redis_store: RedisCounterStore, ledger: Ledger) -> None:
    admission = Admission(redis_store, FakeClock(NOW))
    hard = await admission.admit("hard", request("HR"), PLANNER)
    late = await admission.admit("late", request("HR"), PLANNER)
    redis_server.kill()
    soft = await admission.admit("soft", request("SALES"), PLANNER)  # let through, nothing reserved
    assert isinstance(hard, Admitted) and isinstance(late, Admitted) and isinstance(soft, Admitted)
    for call in (hard, late, soft):
        await admission.settle(call, 1000, 50)
    assert len(admission.pending) == 3
    await ledger.record(event("hard", 180_000))
    await ledger.record(event("soft", 180_000, "SALES"))  # "late" is not committed yet
    redis_server.start()  # back, and empty
    assert await ensure_built(POLICY, redis_store, ledger, NOW, admission.pending)
    assert await admission.pending.retry() == 2  # "hard" only released, "soft" dropped, "late" settled
    assert await spent(redis_store, "SALES") == (180_000, 0)  # the ledger's figure, not twice it
    assert await spent(redis_store, "HR") == (360_000, 0)  # "hard" from the ledger, "late" retried


@pytest.mark.service
async def test_soft_spend_held_through_an_outage_is_not_added_again_when_another_replica_rebuilt(
        redis_server: RedisServer, redis_store: RedisCounterStore, ledger: Ledger) -> None:
    admission = Admission(redis_store, FakeClock(NOW))
    hard = await admission.admit("hard", request("HR"), PLANNER)
    assert isinstance(hard, Admitted)
    assert await ensure_built(POLICY, redis_store, ledger, NOW, admission.pending)  # the build it knows
    redis_server.kill()
    soft = await admission.admit("soft", request("SALES"), PLANNER)
    assert isinstance(soft, Admitted)
    for call in (hard, soft):
        await admission.settle(call, 1000, 50)
    await ledger.record(event("hard", 180_000))
    await ledger.record(event("soft", 180_000, "SALES"))
    redis_server.start()  # back, and empty
    other = RedisCounterStore.from_url(redis_server.url, replica="two")
    try:
        assert await ensure_built(POLICY, other, ledger, NOW)  # the other replica rebuilds
    finally:
        await other.close()
    assert await ensure_built(POLICY, redis_store, ledger, NOW, admission.pending)  # found built
    assert await admission.pending.retry() == 1
    assert await spent(redis_store, "SALES") == (180_000, 0)  # not twice: no early alert
    assert await spent(redis_store, "HR") == (360_000, 0)  # a reservation's settlement: counted high, safe


@pytest.mark.service
async def test_an_emptied_store_is_rebuilt_once_by_replacement(
        redis_server: RedisServer, redis_store: RedisCounterStore, ledger: Ledger) -> None:
    await ledger.record(event("e1", 1_000))
    await ledger.record(event("e2", 2_000))
    await redis_store.load([(window("HR"), 9_999)])  # counters that survived, beside the ledger's figures
    client = Redis.from_url(redis_server.url)
    try:
        await client.delete("cw:generation")  # as a server that lost its marker with part of its data
    finally:
        await client.aclose()
    other = RedisCounterStore.from_url(redis_server.url, replica="two")
    try:
        built = await asyncio.gather(ensure_built(POLICY, redis_store, ledger, NOW),
                                     ensure_built(POLICY, other, ledger, NOW))
        assert True in built
        assert await spent(redis_store, "HR") == await spent(other, "HR") == (3_000, 0)
        assert await ensure_built(POLICY, other, ledger, NOW)  # built: nothing more is done
        assert await spent(other, "HR") == (3_000, 0)
    finally:
        await other.close()


@pytest.mark.service
async def test_a_dead_replicas_calls_are_settled_interrupted_by_a_live_one(
        redis_server: RedisServer, redis_store: RedisCounterStore, ledger: Ledger) -> None:
    live = RedisCounterStore.from_url(redis_server.url, replica="live")
    try:
        dead = Admission(redis_store, FakeClock(NOW))
        await redis_store.renew_lease(NOW.timestamp() + 10)
        await live.renew_lease(NOW.timestamp() + 60)
        forwarded = await dead.admit("forwarded", request("HR"), PLANNER)
        unsent = await dead.admit("unsent", request("HR"), PLANNER)
        assert isinstance(forwarded, Admitted) and isinstance(unsent, Admitted)
        ledger.begin(InflightCall(
            id="forwarded", admitted_at=NOW, department="HR", model_requested="gpt-4o-mini",
            model_served="gpt-4o-mini", provider="openai", endpoint="/v1/chat/completions",
            estimate_input_tokens=1000, estimate_output_tokens=50,
            estimate_nanos=forwarded.decision.estimate_nanos, price_version="p1"))
        await ledger.record(event("other", 1_000))  # the write-ahead row is committed before this
        assert await settle_orphans(live, ledger, NOW + timedelta(seconds=5)) == []  # lease still live
        (orphans,) = await settle_orphans(live, ledger, NOW + timedelta(seconds=11))
        assert (orphans.replica, orphans.interrupted, orphans.released) == ("one", 1, 1)
        assert await ledger.count_inflight() == 0
        assert await live.expired_leases(NOW.timestamp() + 11) == []
        assert await spent(live, "HR") == (forwarded.decision.estimate_nanos, 0)
        assert await settle_orphans(live, ledger, NOW + timedelta(seconds=12)) == []
    finally:
        await live.close()


async def test_the_reconciler_confirms_drift_then_replaces_it(ledger: Ledger) -> None:
    store = MemoryCounterStore()
    await ledger.record(event("e1", 1_000))
    await ledger.record(event("e2", 2_000))
    await store.load([(window("HR"), 3_500)])  # 500 more than the ledger: a lost correction
    reconciler = Reconciler(store, ledger, lambda: POLICY, FakeClock(NOW))
    key = window("HR").key
    assert await reconciler.round() == []  # a counter first seen is judged from the next round
    assert reconciler.drift == {key: 0}
    assert await reconciler.round() == []  # a suspect, not yet confirmed
    assert await reconciler.round() == [Drift(key, 3_500, 3_000)]
    assert reconciler.drift == {key: 500}
    assert await spent(store, "HR") == (3_000, 0)  # corrected to the ledger's figure
    assert await reconciler.round() == []
    assert reconciler.drift == {key: 0}


async def test_drift_is_confirmed_while_traffic_moves_the_counter_and_the_ledger_alike(ledger: Ledger) -> None:
    store = MemoryCounterStore()
    await ledger.record(event("e1", 1_000))
    await store.load([(window("HR"), 1_500)])  # 500 more than the ledger
    reconciler = Reconciler(store, ledger, lambda: POLICY, FakeClock(NOW))
    key = window("HR").key
    assert await reconciler.round() == []  # a counter first seen is judged from the next round
    assert await reconciler.round() == []  # a suspect
    await ledger.record(event("e2", 2_000))  # a call between rounds: on the ledger and the counter
    await store.load([(window("HR"), 2_000)])
    assert await reconciler.round() == [Drift(key, 3_500, 3_000)]
    assert await spent(store, "HR") == (3_000, 0)


async def test_a_difference_that_changes_between_rounds_is_not_confirmed(ledger: Ledger) -> None:
    """A call settled on the counter whose event is not committed yet shows as a passing difference."""
    store = MemoryCounterStore()
    await ledger.record(event("e1", 1_000))
    await store.load([(window("HR"), 1_000)])
    reconciler = Reconciler(store, ledger, lambda: POLICY, FakeClock(NOW))
    assert await reconciler.round() == []
    await store.load([(window("HR"), 700)])  # settled; its event still in the writer's queue
    assert await reconciler.round() == []
    await ledger.record(event("e2", 700))
    await store.load([(window("HR"), 400)])  # the next one, likewise
    assert await reconciler.round() == []
    await ledger.record(event("e3", 400))
    assert await reconciler.round() == []
    assert set(reconciler.drift.values()) == {0}
    assert await spent(store, "HR") == (2_100, 0)


async def test_reservations_are_not_drift(ledger: Ledger) -> None:
    store = MemoryCounterStore()
    admission = Admission(store, FakeClock(NOW))
    await ledger.record(event("e1", 1_000))
    await store.load([(window("HR"), 1_000)])
    assert isinstance(await admission.admit("flying", request("HR"), PLANNER), Admitted)
    reconciler = Reconciler(store, ledger, lambda: POLICY, FakeClock(NOW))
    for _ in range(4):
        assert await reconciler.round() == []
    assert set(reconciler.drift.values()) == {0}


def test_drift_is_published_per_budget_counter() -> None:
    metrics = Metrics()
    metrics.set_drift({"b|dept:HR|0|monthly|usd@2026-11-01": 500, "b|org|0|monthly|usd@2026-11-01": 0})
    text = metrics.render().decode()
    assert 'costwarden_counter_drift_nanodollars{budget="b|dept:HR|0|monthly|usd@2026-11-01"} 500.0' in text
    assert 'costwarden_counter_drift_nanodollars{budget="b|org|0|monthly|usd@2026-11-01"} 0.0' in text
    metrics.set_drift({})  # counters of a past period leave with it
    assert "dept:HR" not in metrics.render().decode()
