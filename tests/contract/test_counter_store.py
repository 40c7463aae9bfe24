"""The CounterStore contract, run against every backend: in-process memory and shared Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from answer_gate import AnswerGate
from costwarden.core.decision import Hold
from costwarden.core.kinds import Unit
from costwarden.core.periods import Period, Window
from costwarden.counters import Conflict, CounterStore, Reservation, StoreEmptied, open_store
from costwarden.counters.redis import RedisCounterStore
from costwarden.counters.scripts import NAMES, source
from costwarden.errors import StorageError
from service_fixtures import free_port

NOW = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
T = NOW.timestamp()
NEW_YORK = ZoneInfo("America/New_York")
EXAMPLES = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])


async def flushed(redis_url: str) -> str:
    """``redis_url`` after emptying its database, so that every test starts from nothing."""
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    return redis_url


async def without_functions(redis_url: str) -> str:
    """``redis_url`` as a user who may run scripts and not functions, as on Redis 6.2: the store
    calls its operations as scripts there."""
    client = Redis.from_url(redis_url)
    try:
        await client.execute_command("ACL", "SETUSER", "cw-scripts", "on", ">scripts", "~*", "&*", "+@all",
                                     "-fcall", "-fcall_ro", "-function")
    finally:
        await client.aclose()
    return redis_url.replace("redis://", "redis://cw-scripts:scripts@", 1)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.service),
                        pytest.param("redis-scripts", marks=pytest.mark.service)])
async def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store of each backend (Redis with functions, and with scripts alone)."""
    if request.param == "memory":
        return "memory://"
    url = await flushed(request.getfixturevalue("redis_url"))
    return await without_functions(url) if request.param == "redis-scripts" else url


@pytest.fixture
async def unbuilt(store_url: str) -> AsyncIterator[CounterStore]:
    """A store of each backend as a gateway opens it: empty, with no generation marker."""
    opened = open_store(store_url, replica="one")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def store(unbuilt: CounterStore) -> CounterStore:
    """An empty store of each backend, built (from an empty ledger)."""
    await unbuilt.replace([], "build-1")
    return unbuilt


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[list[RedisCounterStore]]:
    """Two Redis stores on one empty server, as two gateway replicas."""
    url = await flushed(redis_url)
    pair = [RedisCounterStore.from_url(url, replica="a"), RedisCounterStore.from_url(url, replica="b")]
    await pair[0].replace([], "build-1")
    try:
        yield pair
    finally:
        for replica in pair:
            await replica.close()


def monthly(base: str = "org", at: datetime = NOW) -> Window:
    return Period.parse("monthly").window(base, at, NEW_YORK)


def rolling(base: str, bucket: int, span: int = 3) -> Window:
    end = datetime.fromtimestamp(bucket * 60, UTC)
    return Window(base, bucket, span, end - timedelta(minutes=span), end)


def hold(window: Window, amount: int, limit: int | None = None) -> Hold:
    return Hold(window, amount, limit, Unit.USD)


async def reserved(store: CounterStore, rid: str, holds: list[Hold], expires_at: float = T + 600) -> Reservation:
    result = await store.reserve(rid, holds, expires_at)
    assert isinstance(result, Reservation), result
    return result


async def usage(store: CounterStore, *windows: Window) -> list[tuple[int, int]]:
    return (await store.snapshot(windows, [], T)).usage


async def test_snapshot_of_empty_counters(store: CounterStore) -> None:
    snap = await store.snapshot([monthly(), rolling("key", 100)], ["restrict:ENG", "alert:1"], T)
    assert snap.usage == [(0, 0), (0, 0)]
    assert snap.flags == frozenset()
    assert (await store.snapshot([], [], T)).usage == []


async def test_reserve_settle_release_arithmetic(store: CounterStore) -> None:
    org, rate = monthly(), rolling("rpm", 100)
    holds = [hold(org, 300, 1000), hold(rate, 40)]
    first = await reserved(store, "a", holds, T + 30)
    assert first == Reservation("a", tuple(holds), T + 30, "one")
    assert await usage(store, org, rate) == [(0, 300), (0, 40)]
    second = await reserved(store, "b", [hold(org, 200, 1000), hold(rate, 10)])
    assert await usage(store, org, rate) == [(0, 500), (0, 50)]
    assert await store.settle(first, [120, 25]) == [(0, 120), (0, 25)]
    assert await usage(store, org, rate) == [(120, 200), (25, 10)]
    await store.release(second)
    assert await usage(store, org, rate) == [(120, 0), (25, 0)]
    over = await reserved(store, "c", [hold(org, 10, 1000)])
    assert await store.settle(over, [15]) == [(120, 135)]  # an upstream may report more than held
    assert await usage(store, org) == [(135, 0)]


async def test_refusal_is_all_or_nothing_and_names_the_conflicting_hold(store: CounterStore) -> None:
    org, dept, key = monthly("org"), monthly("dept"), monthly("key")
    await store.load([(dept, 30)])
    await reserved(store, "a", [hold(dept, 20, 100)])
    refused = await store.reserve("b", [hold(org, 50, 1000), hold(dept, 51, 100), hold(key, 5, 1)], T + 60)
    assert refused == Conflict(index=1, used=50)  # spent and reserved both count; the first misfit is named
    assert await usage(store, org, dept, key) == [(0, 0), (30, 20), (0, 0)]
    assert await store.reserve("b", [hold(org, 50, 1000), hold(key, 5, 1)], T + 60) == Conflict(1, 0)
    assert await usage(store, org, key) == [(0, 0), (0, 0)]
    await reserved(store, "c", [hold(org, 50, 1000), hold(dept, 50, 100), hold(key, 1, 1)])  # exactly full fits
    await reserved(store, "d", [hold(dept, 10_000)])  # a hold without a limit is never refused
    assert await usage(store, org, dept, key) == [(0, 50), (30, 10_070), (0, 1)]


async def test_settle_counts_only_once(store: CounterStore) -> None:
    org = monthly()
    first = await reserved(store, "a", [hold(org, 100, 1000)])
    assert await store.settle(first, [60]) == [(0, 60)]
    assert await store.settle(first, [60]) == [(0, 0)]
    await store.release(first)
    assert await usage(store, org) == [(60, 0)]
    second = await reserved(store, "b", [hold(org, 100, 1000)])
    await store.release(second)
    await store.release(second)
    assert await store.settle(second, [100]) == [(0, 0)]
    assert await usage(store, org) == [(60, 0)]
    with pytest.raises(ValueError):
        await store.settle(await reserved(store, "c", [hold(org, 1)]), [1, 2])


async def test_rolling_window_forgets_buckets_as_the_index_advances(store: CounterStore) -> None:
    await store.load([(rolling("k", 100), 5)])
    open_call = await reserved(store, "a", [hold(rolling("k", 101), 7, 100)])
    assert await usage(store, rolling("k", 101)) == [(5, 7)]
    assert await usage(store, rolling("k", 102)) == [(5, 7)]
    assert await usage(store, rolling("k", 103)) == [(0, 7)]  # bucket 100 left the window
    assert await store.settle(open_call, [4]) == [(0, 4)]  # settles into its own bucket, 101
    assert await usage(store, rolling("k", 103)) == [(4, 0)]
    assert await usage(store, rolling("k", 104)) == [(0, 0)]
    late = await reserved(store, "b", [hold(rolling("k", 104), 9, 100)])
    await store.load([(rolling("k", 106), 3)])
    assert await usage(store, rolling("k", 107)) == [(3, 0)]  # the hold's bucket is gone, and its hold
    assert await store.settle(late, [9]) == [(3, 3)]  # spend in a forgotten bucket is outside the window
    assert await usage(store, rolling("k", 107)) == [(3, 0)]
    assert (await store.reserve("c", [hold(rolling("k", 107), 98, 100)], T)) == Conflict(0, 3)


async def test_a_window_of_one_bucket_holds_its_bucket_alone(store: CounterStore) -> None:
    """A counter of one bucket (a calendar period's, or a rolling window as wide as its bucket)
    holds, settles and reports that bucket's figures, and forgets them when it moves on."""
    month = monthly("one")
    await store.load([(month, 5)])
    settled = await reserved(store, "a", [hold(month, 8, 100), hold(rolling("minute", 100, 1), 8)])
    open_call = await reserved(store, "b", [hold(rolling("minute", 100, 1), 4, 20)])
    assert await store.settle(settled, [6, 6]) == [(5, 11), (0, 6)]
    assert await usage(store, month, rolling("minute", 100, 1)) == [(11, 0), (6, 4)]
    assert await store.buckets([rolling("minute", 100, 1)]) == [[(100, 10)]]
    assert await usage(store, rolling("minute", 101, 1)) == [(0, 0)]  # its one bucket left, holds and all
    assert await store.buckets([rolling("minute", 101, 1)]) == [[]]
    assert await store.settle(open_call, [3]) == [(0, 0)]  # spend in a bucket outside the window
    await reserved(store, "c", [hold(rolling("minute", 101, 1), 20, 20)])  # the whole limit is free again
    assert await usage(store, month, rolling("minute", 101, 1)) == [(11, 0), (0, 20)]


async def test_buckets_name_when_each_part_of_a_window_leaves(store: CounterStore) -> None:
    assert await store.buckets([rolling("never", 100), monthly("never")]) == [[], []]
    await store.load([(rolling("k", 100), 5), (rolling("k", 102), 2)])
    held = await reserved(store, "a", [hold(rolling("k", 101), 7, 100), hold(rolling("other", 101), 4)])
    # spent and reserved together, oldest first; another counter's buckets stay apart
    assert await store.buckets([rolling("k", 102), rolling("other", 102)]) == [[(100, 5), (101, 7), (102, 2)],
                                                                                [(101, 4)]]
    assert await store.buckets([rolling("k", 103)]) == [[(101, 7), (102, 2)]]  # bucket 100 left
    await store.settle(held, [3, 0])
    assert await store.buckets([rolling("k", 103), rolling("other", 103)]) == [[(101, 3), (102, 2)], []]
    big = 2**62 + 1  # exact past a double's precision
    await store.load([(rolling("k", 104), big)])
    assert await store.buckets([rolling("k", 104)]) == [[(102, 2), (104, big)]]
    assert await store.buckets([rolling("k", 200)]) == [[]]
    assert await usage(store, rolling("k", 200)) == [(0, 0)]


async def test_a_refused_reservation_takes_no_room_in_any_window(store: CounterStore) -> None:
    rpm, tpm = rolling("rpm", 100, 60), rolling("tpm", 100, 60)
    for i in range(3):
        await reserved(store, f"a{i}", [hold(rpm, 1, 3), hold(tpm, 10, 100)])
    for attempt in range(5):  # a client retrying against a full window
        assert await store.reserve(f"b{attempt}", [hold(tpm, 10, 100), hold(rpm, 1, 3)], T) == Conflict(1, 3)
    assert await usage(store, rpm, tpm) == [(0, 3), (0, 30)]
    assert await store.buckets([rpm, tpm]) == [[(100, 3)], [(100, 30)]]


async def test_calendar_windows_are_counted_apart(store: CounterStore) -> None:
    november, december = monthly("ENG", NOW), monthly("ENG", NOW + timedelta(days=30))
    assert november.key != december.key
    call = await reserved(store, "a", [hold(november, 100, 150)])
    await reserved(store, "b", [hold(december, 100, 150)])  # a new month starts empty
    assert await store.settle(call, [80]) == [(0, 80)]  # after the month turned: still November's
    assert await usage(store, november, december) == [(80, 0), (0, 100)]


async def test_flags_are_set_until_they_expire(store: CounterStore) -> None:
    await store.set_flags([("restrict:ENG", T + 60), ("restrict:HR", T + 10)])
    names = ["restrict:ENG", "restrict:HR", "restrict:OPS"]
    assert (await store.snapshot([], names, T)).flags == {"restrict:ENG", "restrict:HR"}
    assert (await store.snapshot([], names, T + 10)).flags == {"restrict:ENG"}
    await store.set_flags([("restrict:ENG", T + 30)])  # an earlier expiry never shortens a flag
    assert (await store.snapshot([], names, T + 59)).flags == {"restrict:ENG"}
    assert (await store.snapshot([], names, T + 60)).flags == frozenset()
    await store.set_flags([("restrict:HR", T + 120)])
    assert (await store.snapshot([], names, T + 60)).flags == {"restrict:HR"}


async def test_claim_is_granted_once_until_it_expires(store: CounterStore) -> None:
    assert await store.claim("alert:ENG:0.8", T + 100, T)
    assert not await store.claim("alert:ENG:0.8", T + 200, T + 50)
    assert await store.claim("alert:ENG:0.5", T + 100, T)
    assert await store.claim("alert:ENG:0.8", T + 300, T + 100)  # the first claim ended at T + 100
    winners = await asyncio.gather(*(store.claim("alert:HR:1", T + 100, T) for _ in range(50)))
    assert winners.count(True) == 1


async def test_expire_settles_stale_reservations_at_their_amount(store: CounterStore) -> None:
    org, rate = monthly(), rolling("tpm", 100)
    soon = await reserved(store, "soon", [hold(org, 100, 1000), hold(rate, 7)], T + 30)
    later = await reserved(store, "later", [hold(org, 50, 1000)], T + 60)
    assert await store.expire(T) == []
    assert await store.expire(T + 30) == [soon]
    assert await usage(store, org, rate) == [(100, 50), (7, 0)]
    assert await store.settle(soon, [1, 1]) == [(0, 0), (0, 0)]  # expiry was its one settlement
    assert await store.expire(T + 30) == []
    assert await store.expire(T + 1000) == [later]
    assert await usage(store, org, rate) == [(150, 0), (7, 0)]


async def test_load_adds_settled_spend(store: CounterStore) -> None:
    org, rate = monthly(), rolling("tpm", 100)
    await store.load([(org, 5), (rate, 7), (org, 3)])
    await store.load([])
    assert await usage(store, org, rate) == [(8, 0), (7, 0)]
    assert await store.reserve("a", [hold(org, 3, 10)], T) == Conflict(0, 8)


async def test_an_unbuilt_store_refuses_to_count_until_replaced(unbuilt: CounterStore) -> None:
    org = monthly()
    assert await unbuilt.marker() is None
    for operation in (lambda: unbuilt.snapshot([org], [], T), lambda: unbuilt.reserve("a", [hold(org, 1, 10)], T),
                      lambda: unbuilt.load([(org, 1)]), lambda: unbuilt.expire(T),
                      lambda: unbuilt.buckets([rolling("k", 100)])):
        with pytest.raises(StoreEmptied):
            await operation()
    assert await unbuilt.replace([(org, 7)], "build-2") == 0
    assert await unbuilt.marker() == "build-2"
    assert await usage(unbuilt, org) == [(7, 0)]


async def test_replace_sets_the_ledger_figures_never_adds(store: CounterStore) -> None:
    org, team, rate = monthly(), monthly("team"), rolling("tpm", 100)
    await store.load([(org, 500), (team, 40), (rolling("tpm", 99), 3), (rate, 9)])
    held = await reserved(store, "a", [hold(org, 30, 1000), hold(rate, 2)])
    await store.replace([(org, 120), (rolling("tpm", 99), 4)], "build-2")
    assert await usage(store, org, team, rate) == [(120, 30), (0, 0), (4, 2)]
    assert await store.settle(held, [10, 1]) == [(120, 130), (4, 5)]  # reservations survive a rebuild
    assert await usage(store, org, rate) == [(130, 0), (5, 0)]
    await store.replace([(org, 130), (rolling("tpm", 99), 4), (rate, 1)], "build-3")
    assert await usage(store, org, rate) == [(130, 0), (5, 0)]


async def test_a_correction_replaces_only_counters_that_did_not_move(store: CounterStore) -> None:
    org, team = monthly(), monthly("team")
    await store.load([(org, 500), (team, 40)])
    skipped = await store.replace([(org, 450), (team, 45)], "ignored", expected={org.key: 500, team.key: 39})
    assert skipped == 1
    assert await usage(store, org, team) == [(450, 0), (40, 0)]
    assert await store.marker() == "build-1"


async def test_leases_name_the_replicas_whose_reservations_are_orphaned(store: CounterStore) -> None:
    org = monthly()
    assert store.replica == "one"
    await store.renew_lease(T + 10)
    first = await reserved(store, "a", [hold(org, 30, 1000)])
    assert first.owner == "one"
    assert await store.expired_leases(T + 5) == []
    assert await store.expired_leases(T + 11) == ["one"]
    assert await store.owned_by("one") == [first]
    assert await store.owned_by("other") == []
    await store.settle(first, [30])
    assert await store.owned_by("one") == []
    await store.end_lease("one")
    assert await store.expired_leases(T + 11) == []


async def test_money_stays_exact_past_float_precision(store: CounterStore) -> None:
    org, big = monthly(), 2**60
    await store.load([(org, big)])
    call = await reserved(store, "a", [hold(org, 1, big + 1)])
    assert await store.reserve("b", [hold(org, 1, big + 1)], T) == Conflict(0, big + 1)
    assert await usage(store, org) == [(big, 1)]
    assert await store.settle(call, [1]) == [(big, big + 1)]


# -- properties ---------------------------------------------------------------------------------

LIMITS = (500, 800, None)  # two hard limits and a soft counter
Call = tuple[list[int], str, list[int]]
CALL = st.tuples(
    st.lists(st.integers(0, 300), min_size=3, max_size=3),  # amount held per counter
    st.sampled_from(["settle", "release", "open"]),
    st.lists(st.integers(0, 100), min_size=3, max_size=3),  # settled percentage of each hold
)


def counters() -> tuple[str, list[Window]]:
    """A fresh tag and counters for one example, so that examples sharing a store never meet."""
    tag = uuid.uuid4().hex
    return tag, [monthly(f"org-{tag}"), rolling(f"key-{tag}", 100, 60), monthly(f"soft-{tag}")]


@st.composite
def schedules(draw: st.DrawFn) -> tuple[list[Call], list[int]]:
    """Calls and an interleaving of their steps: a call's first turn reserves, its second finishes."""
    calls = draw(st.lists(CALL, min_size=1, max_size=14))
    order = draw(st.permutations([i for i in range(len(calls)) for _ in range(2)]))
    return calls, order


def actual(amounts: list[int], percents: list[int]) -> list[int]:
    return [a * p // 100 for a, p in zip(amounts, percents, strict=True)]


@EXAMPLES
@given(scenario=schedules())
async def test_any_interleaving_keeps_the_books(store: CounterStore, scenario: tuple[list[Call], list[int]]) -> None:
    calls, order = scenario
    tag, windows = counters()
    spent, held = [0, 0, 0], [0, 0, 0]
    open_calls: dict[int, Reservation] = {}
    started: set[int] = set()
    for step, i in enumerate(order):
        amounts, outcome, percents = calls[i]
        if i not in started:
            started.add(i)
            holds = [hold(w, a, lim) for w, a, lim in zip(windows, amounts, LIMITS, strict=True)]
            result = await store.reserve(f"{tag}-{i}", holds, T)
            misfit = next((j for j, lim in enumerate(LIMITS)
                           if lim is not None and spent[j] + held[j] + amounts[j] > lim), None)
            if misfit is None:
                assert isinstance(result, Reservation)
                open_calls[i] = result
                held = [h + a for h, a in zip(held, amounts, strict=True)]
            else:
                assert result == Conflict(misfit, spent[misfit] + held[misfit])
        elif i in open_calls and outcome != "open":
            reservation = open_calls.pop(i)
            held = [h - a for h, a in zip(held, amounts, strict=True)]
            if outcome == "release":
                await store.release(reservation)
            else:
                paid = actual(amounts, percents)
                moved = await store.settle(reservation, paid)
                assert moved == [(s, s + p) for s, p in zip(spent, paid, strict=True)]
                spent = [s + p for s, p in zip(spent, paid, strict=True)]
        assert await usage(store, *windows) == list(zip(spent, held, strict=True)), f"after step {step}"
        assert all(s + h <= lim for s, h, lim in zip(spent, held, LIMITS, strict=True) if lim is not None)


@EXAMPLES
@given(calls=st.lists(CALL, min_size=1, max_size=30))
async def test_concurrent_calls_never_pass_a_hard_limit(store: CounterStore, calls: list[Call]) -> None:
    tag, windows = counters()

    async def run(i: int, amounts: list[int], outcome: str, percents: list[int]) -> tuple[list[int], list[int]]:
        """One call; returns what it settled and what it still holds."""
        holds = [hold(w, a, lim) for w, a, lim in zip(windows, amounts, LIMITS, strict=True)]
        result = await store.reserve(f"{tag}-{i}", holds, T)
        if isinstance(result, Conflict):
            return [0, 0, 0], [0, 0, 0]
        if outcome == "open":
            return [0, 0, 0], amounts
        if outcome == "release":
            await store.release(result)
            return [0, 0, 0], [0, 0, 0]
        await store.settle(result, actual(amounts, percents))
        return actual(amounts, percents), [0, 0, 0]

    results = await asyncio.gather(*(run(i, *call) for i, call in enumerate(calls)))
    spent = [sum(r[0][j] for r in results) for j in range(3)]
    held = [sum(r[1][j] for r in results) for j in range(3)]
    assert await usage(store, *windows) == list(zip(spent, held, strict=True))
    assert all(s + h <= lim for s, h, lim in zip(spent, held, LIMITS, strict=True) if lim is not None)


# -- concurrency --------------------------------------------------------------------------------


async def admitted(stores: list[CounterStore], window: Window, calls: int, tag: str) -> list[Reservation]:
    """Reserve 100 against a limit of 1000 ``calls`` times at once, spread over ``stores``."""
    results = await asyncio.gather(*(
        stores[i % len(stores)].reserve(f"{tag}{i}", [hold(window, 100, 1000)], T + 60) for i in range(calls)
    ))
    granted = [r for r in results if isinstance(r, Reservation)]
    assert all(r == Conflict(0, 1000) for r in results if isinstance(r, Conflict))
    return granted


async def test_a_thousand_concurrent_reserves_admit_exactly_what_fits(store: CounterStore) -> None:
    org = monthly()
    first = await admitted([store], org, 1000, "a")
    assert len(first) == 10
    assert await usage(store, org) == [(0, 1000)]
    await asyncio.gather(*(store.settle(r, [50]) for r in first))
    assert await usage(store, org) == [(500, 0)]
    assert len(await admitted([store], org, 1000, "b")) == 5
    assert await usage(store, org) == [(500, 500)]


@pytest.mark.service
async def test_two_replicas_share_the_hard_limit(replicas: list[RedisCounterStore]) -> None:
    org = monthly()
    granted = await admitted(list(replicas), org, 600, "a")
    assert len(granted) == 10
    await asyncio.gather(*(replicas[i % 2].settle(r, [100]) for i, r in enumerate(granted)))
    assert await usage(replicas[0], org) == await usage(replicas[1], org) == [(1000, 0)]
    assert await admitted(list(replicas), org, 100, "b") == []


@pytest.mark.service
async def test_redis_keys_expire_and_reads_create_none(redis_url: str, replicas: list[RedisCounterStore]) -> None:
    store = replicas[0]
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        await store.snapshot([monthly("never"), rolling("never", 100)], ["never"], T)
        await store.buckets([monthly("never"), rolling("never", 100)])
        assert await client.keys("*") == ["cw:generation"]  # the marker alone: it never expires
        await reserved(store, "a", [hold(monthly(), 1), hold(rolling("tpm", 100), 1)])
        await store.set_flags([("restrict:ENG", T + 60)])
        await store.claim("alert:ENG", T + 60, T)
        for key in ["cw:c:" + monthly().key, "cw:c:tpm", "cw:f:restrict:ENG", "cw:f:alert:ENG"]:
            assert await client.pttl(key) > 0, key
    finally:
        await client.aclose()


@pytest.mark.service
async def test_an_emptied_server_is_detected_and_a_rebuild_keeps_calls_in_flight(
        redis_url: str, replicas: list[RedisCounterStore]) -> None:
    one, two = replicas
    org = monthly()
    await one.load([(org, 100)])
    flying = await reserved(one, "flying", [hold(org, 50, 1000)])
    assert await usage(two, org) == [(100, 50)]
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()  # a restart without persistence
    finally:
        await client.aclose()
    for replica in replicas:
        with pytest.raises(StoreEmptied):
            await usage(replica, org)
        with pytest.raises(StoreEmptied):
            await replica.settle(flying, [40])
    await two.replace([(org, 100)], "build-2")  # the other replica rebuilds from the ledger
    assert await usage(two, org) == [(100, 0)]
    assert await usage(one, org) == [(100, 50)]  # replica one held its call again on seeing the build
    assert await one.settle(flying, [40]) == [(100, 140)]
    assert await usage(two, org) == [(140, 0)]


@pytest.mark.service
async def test_a_settlement_still_unanswered_is_not_held_again_by_a_new_build(redis_url: str) -> None:
    """A replica moving to a new build holds its calls in flight again; one whose settlement the
    server has carried out but not yet answered must not be among them, or it stays held for good."""
    url = await flushed(redis_url)
    gate = await AnswerGate(int(url.rsplit(":", 1)[1].split("/")[0])).start()
    one = RedisCounterStore.from_url(f"redis://127.0.0.1:{gate.port}/0", replica="one")
    two = RedisCounterStore.from_url(url, replica="two")
    try:
        for name in NAMES:  # loaded, so that every script runs at its first request
            await two.client.script_load(source(name))
        org = monthly()
        await two.replace([], "build-1")
        flying = await reserved(one, "flying", [hold(org, 50, 1000)])
        gate.hold_next()
        settling = asyncio.create_task(one.settle(flying, [40]))
        await gate.held.wait()  # settled on the server; the answer is on its way
        await two.replace([(org, 40)], "build-2")  # another replica rebuilds from the ledger
        reading = asyncio.create_task(one.snapshot([org], [], T))  # refused under build-1: one adopts build-2
        restored_early = await gate.sent(b'"id": "flying"', timeout_s=0.5)  # well within the answer timeout
        gate.release()
        assert await settling == [(0, 40)]
        assert (await reading).usage == [(40, 0)]
        assert not restored_early, "the call was held again while its settlement was unanswered"
        assert await usage(two, org) == [(40, 0)]
        assert await two.client.hlen("cw:reservations") == 0
    finally:
        for store in (one, two):
            await store.close()
        await gate.close()


async def test_redis_errors_become_storage_errors() -> None:
    store = RedisCounterStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StorageError):
            await store.ping()
        with pytest.raises(StorageError):
            await store.reserve("a", [hold(monthly(), 1, 10)], T)
    finally:
        await store.close()
