"""Upstream capacity (SPEC §12, ``priority``): under a saturated ``tpm``, high waits less than
standard, nobody waits longer than ``queue_s``, and a refusal's retry-after is true; in one
process and across replicas sharing Redis.

The window is shortened to one second (the protocol is the same for a minute) so the test runs
in a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from costwarden.app.capacity import (
    CapacityQueue,
    CapacityWindow,
    MemoryCapacityWindow,
    RedisCapacityWindow,
    window_for,
)
from costwarden.core.kinds import Priority
from costwarden.counters import MemoryCounterStore
from costwarden.counters.redis import RedisCounterStore
from costwarden.errors import CapacityExceeded

WINDOW_S = 1.0
LIMIT = 1000  # tokens per window
TOKENS = 100  # per call: ten calls fill the window
QUEUE_S = 2.5
SLACK_S = 0.15  # event-loop scheduling, on a shared 2-core machine


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.service)])
async def windows(request: pytest.FixtureRequest) -> AsyncIterator[tuple[CapacityWindow, CapacityWindow]]:
    """Two views of one window, as two replicas see it (the same object in memory)."""
    if request.param == "memory":
        window = MemoryCapacityWindow(window_s=WINDOW_S)
        yield window, window
        return
    url = request.getfixturevalue("redis_url")
    clients = [Redis.from_url(url), Redis.from_url(url)]
    await clients[0].flushdb()
    try:
        yield (RedisCapacityWindow(clients[0], window_s=WINDOW_S), RedisCapacityWindow(clients[1], window_s=WINDOW_S))
    finally:
        for client in clients:
            await client.aclose()


async def timed(queue: CapacityQueue, priority: Priority) -> tuple[float, int | None]:
    """(seconds waited, retry-after when refused)."""
    started = time.monotonic()
    try:
        await queue.acquire("anthropic", TOKENS, LIMIT, priority, QUEUE_S)
    except CapacityExceeded as refused:
        assert refused.status == 429 and refused.code == "capacity_exceeded"
        return time.monotonic() - started, refused.retry_after
    return time.monotonic() - started, None


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


async def test_high_waits_less_than_standard_and_nobody_longer_than_queue_s(
        windows: tuple[CapacityWindow, CapacityWindow]) -> None:
    # Gold on one replica, Silver on the other: only the shared window orders them.
    gold_queue, silver_queue = CapacityQueue(windows[0]), CapacityQueue(windows[1])
    calls = []
    for _ in range(20):  # arriving interleaved: 40 calls, about 30 served in 2.5 windows
        calls.append(timed(silver_queue, Priority.STANDARD))
        calls.append(timed(gold_queue, Priority.HIGH))
    results = await asyncio.gather(*calls)
    silver, gold = results[0::2], results[1::2]
    waits = [wait for wait, _ in results]
    assert max(waits) <= QUEUE_S + SLACK_S
    assert p95([w for w, _ in gold]) < p95([w for w, _ in silver])
    assert all(retry is None for _, retry in gold)  # gold goes first
    refused = [retry for _, retry in silver if retry is not None]
    assert refused, "the upstream was not saturated"
    assert all(1 <= retry <= WINDOW_S + 1 for retry in refused)


async def test_retry_after_is_when_the_window_has_room(windows: tuple[CapacityWindow, CapacityWindow]) -> None:
    queue = CapacityQueue(windows[0])
    await queue.acquire("anthropic", LIMIT, LIMIT, Priority.HIGH, 0.2)  # the window is full
    with pytest.raises(CapacityExceeded) as refused:
        await queue.acquire("anthropic", TOKENS, LIMIT, Priority.STANDARD, 0.2)
    retry_after = refused.value.retry_after
    assert retry_after is not None and retry_after >= 1
    now = time.time()
    assert await windows[1].take("anthropic", TOKENS, LIMIT, now, priority=Priority.STANDARD, dry=True) > 0
    assert await windows[1].take("anthropic", TOKENS, LIMIT, now + retry_after, priority=Priority.STANDARD,
                                 dry=True) == 0


async def test_a_standard_call_yields_while_a_high_call_waits_elsewhere(
        windows: tuple[CapacityWindow, CapacityWindow]) -> None:
    window, other = windows
    now = time.time()
    await other.announce("anthropic", "gold-waiter", now + 5)
    assert await window.take("anthropic", TOKENS, LIMIT, now, priority=Priority.STANDARD) < 0
    assert await window.take("anthropic", TOKENS, LIMIT, now, priority=Priority.HIGH) == 0
    await other.withdraw("anthropic", "gold-waiter")
    assert await window.take("anthropic", TOKENS, LIMIT, now, priority=Priority.STANDARD) == 0
    # an announcement past its time (a replica that died while waiting) no longer holds anyone back
    await other.announce("anthropic", "lost", now - 1)
    assert await window.take("anthropic", TOKENS, LIMIT, now, priority=Priority.STANDARD) == 0


async def test_a_call_larger_than_the_window_goes_when_it_is_empty(
        windows: tuple[CapacityWindow, CapacityWindow]) -> None:
    queue = CapacityQueue(windows[0])
    assert await queue.acquire("openai", 10 * LIMIT, LIMIT, Priority.STANDARD, 0.5) == 0.0


@pytest.mark.service
async def test_the_window_is_shared_in_redis_when_the_counters_are(redis_url: str) -> None:
    store = RedisCounterStore.from_url(redis_url)
    try:
        assert isinstance(window_for(store), RedisCapacityWindow)
    finally:
        await store.close()
    assert isinstance(window_for(MemoryCounterStore("local", marker=None)), MemoryCapacityWindow)
