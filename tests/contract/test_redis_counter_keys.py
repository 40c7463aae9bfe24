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
from costwarden.counters import Conflict, Reservation, Threshold
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
