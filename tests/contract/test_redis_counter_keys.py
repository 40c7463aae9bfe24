"""What the Redis counter scripts keep in a counter beyond its figures: the key's expiry, which
only ever moves later, and limit checks and settlements' answers that stay exact on both sides of
where a double stops holding every sum."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from costwarden.core.decision import Hold
from costwarden.core.kinds import Unit
from costwarden.core.periods import Window
from costwarden.counters import Conflict, MemoryCounterStore, Reservation, Threshold
from costwarden.counters.redis import RedisCounterStore

pytestmark = pytest.mark.service

MARGIN_MS = 3_600_000  # a counter outlives its data by an hour
DAY = 86_400


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisCounterStore]:
    client = Redis.from_url(redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
    opened = RedisCounterStore.from_url(redis_url, replica="one")
    await opened.replace([], "build-1")
    try:
        yield opened
    finally:
        await opened.close()


def calendar(base: str) -> Window:
    """A calendar window long past: its counter is kept for the reservations' deadlines."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return Window(f"{base}@2026-01-01", 0, 1, start, start + timedelta(days=31))


def rolling(base: str) -> Window:
    bucket = 100
    end = datetime.fromtimestamp(bucket * 60, UTC)
    return Window(base, bucket, 3, end - timedelta(minutes=3), end)


async def reserve(store: RedisCounterStore, window: Window, deadline: float, amount: int = 1,
                  limit: int | None = None) -> Reservation | Conflict:
    return await store.reserve(uuid.uuid4().hex, [Hold(window, amount, limit, Unit.USD)], deadline)


async def expiry(store: RedisCounterStore, window: Window) -> tuple[int, int | None]:
    """The key's expiry (epoch ms) and the expiry the counter remembers ('x'; None when absent)."""
    key = f"cw:c:{window.key}"
    at = int(await store.client.pexpiretime(key))
    remembered = await store.client.hget(key, "x")
    return at, None if remembered is None else int(remembered)


@pytest.mark.parametrize("make", [calendar, rolling])
async def test_a_counter_remembers_its_expiry_which_only_moves_later(store: RedisCounterStore,
                                                                     make: Callable[[str], Window]) -> None:
    window = make("org")
    later = time.time() + 30 * DAY
    await reserve(store, window, later)
    at, remembered = await expiry(store, window)
    assert at == remembered, "the counter's 'x' is the key's expiry"
    assert at >= later * 1000 + MARGIN_MS
    await reserve(store, window, later - 10 * DAY)  # an earlier deadline never shortens it
    assert await expiry(store, window) == (at, at)
    await reserve(store, window, later + 10 * DAY)
    moved, remembered = await expiry(store, window)
    assert moved == remembered and moved >= (later + 10 * DAY) * 1000 + MARGIN_MS


async def test_a_counter_without_a_remembered_expiry_gets_one_and_a_longer_one_stays(
        store: RedisCounterStore) -> None:
    window, key = calendar("dept"), "cw:c:dept@2026-01-01"
    deadline = time.time() + 5 * DAY
    await store.load([(window, 7)])
    await store.client.hdel(key, "x")  # a counter written before it remembered its expiry
    await store.client.persist(key)
    await reserve(store, window, deadline)
    at, remembered = await expiry(store, window)
    assert at == remembered and at >= deadline * 1000 + MARGIN_MS
    farther = int((deadline + 100 * DAY) * 1000)
    await store.client.hdel(key, "x")
    await store.client.pexpireat(key, farther)
    await reserve(store, window, deadline)
    assert await expiry(store, window) == (farther, None), "a later expiry is not shortened"
    assert (await store.snapshot([window], [], 0.0)).usage == [(7, 2)]



async def test_a_rebuild_gives_its_counters_an_expiry_and_creates_no_empty_one(store: RedisCounterStore) -> None:
    spent, empty = calendar("spent"), calendar("empty")
    await store.replace([(spent, 5), (empty, 0)], "build-2")
    at, remembered = await expiry(store, spent)
    assert at == remembered and at > time.time() * 1000 + MARGIN_MS - 60_000
    assert not await store.client.exists(f"cw:c:{empty.key}")
    assert (await store.snapshot([spent, empty], [], 0.0)).usage == [(5, 0), (0, 0)]


async def test_a_counter_held_twice_in_one_call_takes_both_holds(store: RedisCounterStore) -> None:
    month, minute = calendar("twice"), rolling("twice-rate")
    later = rolling("twice-rate")
    later = Window(later.key, later.bucket + 1, later.span, later.start, later.end)  # the same key, a newer bucket
    holds = [Hold(w, amount, None, Unit.USD) for w, amount in [(month, 3), (minute, 5), (month, 4), (later, 6)]]
    reservation = await store.reserve("both", holds, time.time() + DAY)
    assert isinstance(reservation, Reservation)
    assert (await store.snapshot([month, later], [], 0.0)).usage == [(0, 7), (0, 11)]
    assert await store.settle(reservation, [1, 2, 3, 10**16]) == [(0, 1), (0, 2), (1, 4), (2, 10**16 + 2)]
    assert (await store.snapshot([month, later], [], 0.0)).usage == [(4, 0), (10**16 + 2, 0)]

# Sums crossing a digit, figures of 15 and 16 digits, sums of three on both sides of 2**53, and
# figures far past it.
SIZES = [(0, 999), (10**15 - 10, 10**15 + 10), (3 * 10**15, 34 * 10**14), (0, 2**61)]


@st.composite
def figures(draw: st.DrawFn) -> tuple[int, int, int]:
    low, high = draw(st.sampled_from(SIZES))
    return draw(st.integers(low, high)), draw(st.integers(low, high)), draw(st.integers(low, high))


@settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(figures=figures(), slack=st.integers(-2, 2))
async def test_a_limit_is_checked_exactly_at_any_size(store: RedisCounterStore, figures: tuple[int, int, int],
                                                      slack: int) -> None:
    spent, reserved, amount = figures
    window = calendar(uuid.uuid4().hex)
    far = time.time() + DAY
    await store.load([(window, spent)])
    await reserve(store, window, far, reserved)
    limit = max(0, spent + reserved + amount + slack)
    result = await reserve(store, window, far, amount, limit)
    if spent + reserved + amount > limit:
        assert result == Conflict(0, spent + reserved)
    else:
        assert isinstance(result, Reservation)


# Totals below 2**53, where HINCRBY's answer reaches Lua exactly, about it, past it (10**16: a
# double holds only every other integer there) and just under 2**63, where a double rounds up out
# of a long long.
AROUND = [0, 2**53 - 1000, 10**16, 2**63 - 4000]


@st.composite
def settlements(draw: st.DrawFn) -> tuple[int, int, int, int]:
    """Settled spend, another call's open hold, this call's hold and its actual amount."""
    spent = draw(st.sampled_from(AROUND)) + draw(st.integers(0, 1999))
    other = draw(st.sampled_from(AROUND[:3])) + draw(st.integers(0, 1999))
    held = draw(st.integers(0, 999))
    assume(spent + other + held < 2**63)
    return spent, other, held, draw(st.integers(0, held))


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(figures=settlements())
async def test_a_settlement_answers_exact_figures_at_any_size(store: RedisCounterStore,
                                                              figures: tuple[int, int, int, int]) -> None:
    """The settled spend before and after and the reservations after, which alerts and the
    remembered figures go by, are exact past 2**53 too."""
    spent, other, held, actual = figures
    tag, far = uuid.uuid4().hex, time.time() + DAY
    window = calendar(tag)
    await store.load([(window, spent)])
    await reserve(store, window, far, other)  # another call's hold, still open
    call = await reserve(store, window, far, held)
    assert isinstance(call, Reservation)
    after = spent + actual
    levels = [spent, spent + 1, after - 1, after, after + 1]
    thresholds = tuple(Threshold(0, level, f"alert|{tag}|{i}", far) for i, level in enumerate(levels))
    settled = await store.settle_claiming(call, [actual], thresholds, time.time())
    assert settled.moved == [(spent, after)]
    assert settled.claimed == tuple(i for i, level in enumerate(levels) if spent < level <= after)
    remembered = store.remembered([window], [], 0.0)  # the settlement's spent and reserved after
    assert remembered is not None and remembered.usage == [(after + other, 0)]
    assert (await store.snapshot([window], [], 0.0)).usage == [(after, other)]


# -- a counter's head: its newest bucket, whose figures are the totals less the other buckets' ----

SIZES_PAST_2_53 = [(0, 999), (2**53 - 500, 2**53 + 500), (2**58, 2**59)]
Step = tuple[str, int, int]  # what, buckets the clock moves on first (or which open call), amount


@st.composite
def steps(draw: st.DrawFn) -> list[Step]:
    """Holds, loads and settlements on one rolling counter while its buckets move on by 0, 1, 2
    or more than a window (span 4) at a time, with figures on both sides of 2**53."""
    low, high = draw(st.sampled_from(SIZES_PAST_2_53))
    amount = st.integers(low, high)
    one = st.one_of(
        st.tuples(st.just("hold"), st.sampled_from([0, 0, 1, 2, 5]), amount),
        st.tuples(st.just("load"), st.sampled_from([0, 1, 3]), amount),
        st.tuples(st.just("settle"), st.integers(0, 9), amount),
    )
    return draw(st.lists(one, min_size=1, max_size=12))


@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps())
async def test_a_rolling_counter_keeps_every_bucket_exact_as_its_head_moves(store: RedisCounterStore,
                                                                           script: list[Step]) -> None:
    """Against the in-process store: totals, each bucket's figures and settlements' answers, as
    the head moves on (writing out the old head's figures) and buckets leave the window."""
    model = MemoryCounterStore(replica="one")
    tag, bucket, far = uuid.uuid4().hex, 1000, time.time() + DAY
    open_calls: list[tuple[Reservation, Reservation]] = []

    def window(at: int) -> Window:
        return Window(tag, at, 4, datetime.fromtimestamp((at - 4) * 60, UTC), datetime.fromtimestamp(at * 60, UTC))

    for i, (what, moved, amount) in enumerate(script):
        if what == "settle":
            if open_calls:
                shared, local = open_calls.pop(moved % len(open_calls))
                assert await store.settle(shared, [amount]) == await model.settle(local, [amount])
        else:
            bucket += moved
            if what == "load":
                await store.load([(window(bucket), amount)])
                await model.load([(window(bucket), amount)])
            else:
                holds = [Hold(window(bucket), amount, None, Unit.USD)]
                shared, local = await store.reserve(f"{tag}-{i}", holds, far), await model.reserve(f"{tag}-{i}", holds, far)
                assert isinstance(shared, Reservation) and isinstance(local, Reservation)
                open_calls.append((shared, local))
        now = window(bucket)
        assert (await store.snapshot([now], [], 0.0)).usage == (await model.snapshot([now], [], 0.0)).usage
        assert await store.buckets([now]) == await model.buckets([now])


async def test_a_counter_written_before_heads_is_read_and_written_as_it_was(store: RedisCounterStore) -> None:
    """A counter whose every bucket has figures of its own and no head ('lo' naming its oldest
    bucket instead), as counters were written before heads."""
    key = "cw:c:legacy"
    big = 2**60 + 3
    await store.client.hset(key, mapping={"s:98": "5", "r:98": "0", "s:99": str(big), "r:99": "7", "s:100": "2",
                                          "r:100": "11", "S": str(big + 7), "R": "18", "lo": "98", "x": "1"})
    await store.client.pexpireat(key, int((time.time() + DAY) * 1000))

    def window(bucket: int) -> Window:
        end = datetime.fromtimestamp(bucket * 60, UTC)
        return Window("legacy", bucket, 3, end - timedelta(minutes=3), end)

    assert (await store.snapshot([window(100)], [], 0.0)).usage == [(big + 7, 18)]
    assert await store.buckets([window(100)]) == [[(98, 5), (99, big + 7), (100, 13)]]
    legacy = Reservation("legacy-call", (Hold(window(99), 7, None, Unit.USD),), time.time() + DAY, "one")
    await store.client.hset("cw:reservations", legacy.id, store._record(legacy))
    await store.client.zadd("cw:deadlines", {legacy.id: legacy.expires_at})
    assert await store.settle(legacy, [3]) == [(big + 7, big + 10)]
    fresh = await reserve(store, window(101), time.time() + DAY, 20)
    assert isinstance(fresh, Reservation)
    assert await store.buckets([window(101)]) == [[(99, big + 3), (100, 13), (101, 20)]]  # bucket 98 left
    assert (await store.snapshot([window(101)], [], 0.0)).usage == [(big + 5, 31)]
    assert await store.settle(fresh, [4]) == [(big + 5, big + 9)]
    assert await store.buckets([window(102)]) == [[(100, 13), (101, 4)]]


async def test_a_retried_reservation_that_still_fits_changes_no_counter(store: RedisCounterStore) -> None:
    """A retry whose first attempt held the call is known only once its holds are added (the
    id is not looked up first): they are taken off again, in the head and in an older bucket."""
    month, minute = calendar("retried"), rolling("retried-rate")
    older = Window(minute.key, minute.bucket - 1, minute.span, minute.start, minute.end)
    holds = [Hold(month, 5, 100, Unit.USD), Hold(minute, 2, None, Unit.REQUESTS)]
    deadline = time.time() + DAY
    first = await store.try_reserve("retried", holds, deadline, [], 0.0)
    assert isinstance(first.outcome, Reservation)
    again = await store.try_reserve("retried", holds, deadline, [], 0.0)
    assert again.outcome == first.outcome and again.usage is None
    late = await store.try_reserve("retried", [Hold(older, 3, None, Unit.REQUESTS)], deadline, [], 0.0)
    assert late.usage is None
    assert (await store.snapshot([month, minute], [], 0.0)).usage == [(0, 5), (0, 2)]
    assert await store.buckets([minute]) == [[(minute.bucket, 2)]]
    assert await store.settle(first.outcome, [4, 1]) == [(0, 4), (0, 1)]
    assert (await store.snapshot([month, minute], [], 0.0)).usage == [(4, 0), (1, 0)]


@pytest.mark.parametrize("recreated", [False, True])
async def test_a_settlement_on_a_calendar_counter_that_lost_its_hold_keeps_the_spend(
        store: RedisCounterStore, recreated: bool) -> None:
    """The key of a calendar counter gone (expired or evicted) while a call was open, and made
    anew by a later call or not: the settlement adds its spend and takes no one else's hold off."""
    window, key = calendar("lost"), "cw:c:lost@2026-01-01"
    call = await reserve(store, window, time.time() + DAY, 40)
    assert isinstance(call, Reservation)
    await store.client.delete(key)
    if recreated:
        assert isinstance(await reserve(store, window, time.time() + DAY, 7), Reservation)
    assert await store.settle(call, [30]) == [(0, 30)]
    assert (await store.snapshot([window], [], 0.0)).usage == [(30, 7 if recreated else 0)]
    at, remembered = await expiry(store, window)
    assert at == remembered and at > time.time() * 1000, "the counter made anew expires"


# -- a replica remembers until when it had its counters kept, and says nothing while that covers ---

@pytest.mark.parametrize("make", [calendar, rolling])
async def test_a_counter_lost_while_known_kept_is_kept_again_when_made_anew(
        store: RedisCounterStore, make: Callable[[str], Window]) -> None:
    """The replica had the counter kept (so its next reservation says nothing of expiries); the
    key is lost (evicted, deleted): the reservation that makes it anew gives it an expiry."""
    window = make("lost-kept")
    deadline = time.time() + DAY
    first = await reserve(store, window, deadline)
    assert isinstance(first, Reservation)
    await store.client.delete(f"cw:c:{window.key}")
    again = await reserve(store, window, deadline + 1, 4)
    assert isinstance(again, Reservation)
    at, remembered = await expiry(store, window)
    assert at == remembered and at >= (deadline + 1) * 1000 + MARGIN_MS
    assert (await store.snapshot([window], [], 0.0)).usage == [(0, 4)]


async def test_a_new_build_forgets_until_when_counters_were_kept(redis_url: str, store: RedisCounterStore) -> None:
    """Emptied and rebuilt, a counter is kept for its window alone: the next reservation keeps it
    for its own deadline again, though the replica had it kept for that before."""
    window = calendar("rebuilt")
    deadline = time.time() + DAY
    first = await reserve(store, window, deadline)
    assert isinstance(first, Reservation)
    await store.settle(first, [9])
    await store.client.flushdb()  # a restart without persistence
    await store.replace([(window, 9)], "build-2")
    later = deadline + 300  # within what the replica had it kept for
    assert isinstance(await reserve(store, window, later), Reservation)
    at, remembered = await expiry(store, window)
    assert at == remembered and at >= later * 1000 + MARGIN_MS
