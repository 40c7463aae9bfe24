"""Upstream capacity (SPEC §12, ``priority``): a priority queue in front of each upstream's ``tpm``.

An upstream that declares ``tpm`` takes at most that many tokens in any sliding minute. A call
that would exceed it waits, at most ``queue_s``, in a queue in which ``high`` goes before
``standard`` (first come, first served within a priority); a call that cannot be served in time
is refused with ``CapacityExceeded`` (429) whose ``retry_after`` is when the window will have
room for it and for the calls queued ahead of it.

Two parts, so that the queue works across workers and replicas:

- a ``CapacityWindow`` holds the usage per upstream and takes tokens atomically:
  ``MemoryCapacityWindow`` in one process, ``RedisCapacityWindow`` shared by every replica (one
  hash of per-second buckets per upstream, read and written by one Lua script). It also holds
  the ``high`` calls waiting anywhere: while one waits, a ``standard`` call does not take, so a
  replica with only standard calls queued yields to a replica with a high one.
- a ``CapacityQueue`` orders this process's waiters. Only the head of an upstream's queue tries
  to take; it polls the window (every ``poll_s``, or sooner when the window says room frees
  sooner) because other replicas consume capacity too, and it wakes the next waiter when it
  leaves. Polling bounds the cost to one script call per upstream per ``poll_s`` per process.

Tokens are taken when a call is admitted (its reserved input and output) and are not given back
when it uses less: the window errs on the side of the provider's limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from costwarden.core.kinds import Priority
from costwarden.counters.redis import RedisCounterStore
from costwarden.errors import CapacityExceeded, StorageError

DEFAULT_QUEUE_S = 10.0
WINDOW_S = 60.0
YIELD = -1.0  # a window's answer to a standard call while a high call waits somewhere


_RANK = {Priority.HIGH: 0, Priority.STANDARD: 1}


class CapacityWindow(Protocol):
    """The tokens each upstream took in the last window, shared by whoever shares the window."""

    async def take(self, upstream: str, tokens: int, limit: int, now: float, *, priority: Priority,
                   dry: bool = False) -> float:
        """Take ``tokens`` of ``upstream``'s ``limit`` at ``now`` (epoch seconds): 0.0 when taken,
        else the seconds until the window has room (``YIELD`` for a standard call while a high
        call waits). ``dry``: only say, take nothing."""
        ...

    async def announce(self, upstream: str, waiter: str, until: float) -> None:
        """A high call waits for ``upstream`` until ``until`` at the latest."""
        ...

    async def withdraw(self, upstream: str, waiter: str) -> None:
        """The high call no longer waits."""
        ...


class MemoryCapacityWindow:
    """The window of one process: an exact log of takes per upstream."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._log: dict[str, deque[tuple[float, int]]] = {}
        self._used: dict[str, int] = {}
        self._high: dict[str, dict[str, float]] = {}

    async def take(self, upstream: str, tokens: int, limit: int, now: float, *, priority: Priority,
                   dry: bool = False) -> float:
        log = self._log.setdefault(upstream, deque())
        used = self._used.get(upstream, 0)
        while log and log[0][0] <= now - self.window_s:
            used -= log.popleft()[1]
        self._used[upstream] = used
        if priority is Priority.STANDARD and not dry and self._high_waiting(upstream, now):
            return YIELD
        if used + tokens <= limit:
            if not dry:
                log.append((now, tokens))
                self._used[upstream] = used + tokens
            return 0.0
        need = used + tokens - limit
        for at, taken in log:
            need -= taken
            if need <= 0:
                return max(at + self.window_s - now, 1e-3)
        return self.window_s

    def _high_waiting(self, upstream: str, now: float) -> bool:
        waiting = self._high.get(upstream, {})
        for waiter in [w for w, until in waiting.items() if until <= now]:
            del waiting[waiter]
        return bool(waiting)

    async def announce(self, upstream: str, waiter: str, until: float) -> None:
        self._high.setdefault(upstream, {})[waiter] = until

    async def withdraw(self, upstream: str, waiter: str) -> None:
        self._high.get(upstream, {}).pop(waiter, None)


# KEYS: usage hash (bucket start ms -> tokens), high waiters (zset: waiter -> until ms).
# ARGV: now ms, tokens, limit, 1 if the call yields to high waiters, window ms, bucket ms, 1 if dry.
# Returns 0 (taken), -1 (yield) or the milliseconds until the window has room.
_TAKE = """
local now, tokens, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, bucket, dry = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local fields = redis.call('HGETALL', KEYS[1])
local used, live = 0, {}
for i = 1, #fields, 2 do
  local start, taken = tonumber(fields[i]), tonumber(fields[i + 1])
  if start + bucket <= now - window then
    redis.call('HDEL', KEYS[1], fields[i])
  else
    used = used + taken
    live[#live + 1] = {start, taken}
  end
end
if ARGV[4] == '1' and not dry then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) > 0 then return -1 end
end
if used + tokens <= limit then
  if not dry then
    redis.call('HINCRBY', KEYS[1], tostring(now - now % bucket), tokens)
    redis.call('PEXPIRE', KEYS[1], window + 2 * bucket)
  end
  return 0
end
table.sort(live, function(a, b) return a[1] < b[1] end)
local need = used + tokens - limit
for _, entry in ipairs(live) do
  need = need - entry[2]
  if need <= 0 then return math.max(entry[1] + bucket + window - now, 1) end
end
return window
"""


class RedisCapacityWindow:
    """The window shared by every replica: per-upstream buckets of ``window_s / 60`` in Redis.

    A bucket counts until all of it has left the window, so the window never lets more than
    ``limit`` through in any window; the decision uses the caller's clock (replicas' clocks are
    assumed synchronised to well under a bucket)."""

    def __init__(self, client: Redis, *, key_prefix: str = "cw:", window_s: float = WINDOW_S) -> None:
        self._client = client
        self._prefix = key_prefix
        self._window_ms = max(int(window_s * 1000), 60)
        self._bucket_ms = max(self._window_ms // 60, 1)
        self._take = client.register_script(_TAKE)

    async def take(self, upstream: str, tokens: int, limit: int, now: float, *, priority: Priority,
                   dry: bool = False) -> float:
        args = [int(now * 1000), tokens, limit, 1 if priority is Priority.STANDARD else 0, self._window_ms,
                self._bucket_ms, 1 if dry else 0]
        try:
            answer = await self._take(keys=[self._usage(upstream), self._high(upstream)], args=args)
        except RedisError as exc:
            raise StorageError(f"The capacity window of upstream {upstream!r} is unavailable: {exc}") from exc
        waited = int(answer)
        return YIELD if waited < 0 else waited / 1000

    async def announce(self, upstream: str, waiter: str, until: float) -> None:
        try:
            await self._client.zadd(self._high(upstream), {waiter: int(until * 1000)})
            await self._client.pexpire(self._high(upstream), self._window_ms + int(DEFAULT_QUEUE_S * 1000))
        except RedisError as exc:
            raise StorageError(f"The capacity queue of upstream {upstream!r} is unavailable: {exc}") from exc

    async def withdraw(self, upstream: str, waiter: str) -> None:
        try:
            await self._client.zrem(self._high(upstream), waiter)
        except RedisError as exc:
            raise StorageError(f"The capacity queue of upstream {upstream!r} is unavailable: {exc}") from exc

    def _usage(self, upstream: str) -> str:
        return f"{self._prefix}capacity:{{{upstream}}}:used"

    def _high(self, upstream: str) -> str:
        return f"{self._prefix}capacity:{{{upstream}}}:high"


@dataclass(order=True, slots=True)
class _Waiter:
    rank: int
    seq: int
    tokens: int = field(compare=False)
    wake: asyncio.Event = field(compare=False, default_factory=asyncio.Event)
    id: str = field(compare=False, default_factory=lambda: uuid.uuid4().hex)


class CapacityQueue:
    """This process's waiters per upstream, in priority order, in front of a shared window."""

    def __init__(self, window: CapacityWindow, *, clock: Callable[[], float] = time.time,
                 poll_s: float = 0.05) -> None:
        self.window = window
        self._clock = clock
        self._poll_s = poll_s
        self._queues: dict[str, list[_Waiter]] = {}
        self._seq = itertools.count()

    async def acquire(self, upstream: str, tokens: int, tpm: int, priority: Priority,
                      queue_s: float = DEFAULT_QUEUE_S) -> float:
        """Wait until ``upstream`` has room for ``tokens`` (capped at ``tpm``: a call larger than
        the whole window goes when the window is empty); the seconds waited. Raises
        ``CapacityExceeded`` when it cannot be served within ``queue_s``."""
        tokens = min(tokens, tpm)
        queue = self._queues.setdefault(upstream, [])
        started = time.monotonic()
        if not queue and await self.window.take(upstream, tokens, tpm, self._clock(), priority=priority) == 0:
            return 0.0
        waiter = _Waiter(_RANK[priority], next(self._seq), tokens)
        heapq.heappush(queue, waiter)
        deadline = started + queue_s
        announced = False
        try:
            if priority is Priority.HIGH:
                await self.window.announce(upstream, waiter.id, self._clock() + queue_s)
                announced = True
            while True:
                pause = deadline - time.monotonic()
                if queue[0] is waiter:
                    wait = await self.window.take(upstream, tokens, tpm, self._clock(), priority=priority)
                    if wait == 0:
                        return time.monotonic() - started
                    if wait > pause:
                        raise await self._refusal(upstream, waiter, tpm, queue_s, priority)
                    pause = min(pause, self._poll_s if wait == YIELD else min(wait, self._poll_s))
                if pause <= 0:
                    raise await self._refusal(upstream, waiter, tpm, queue_s, priority)
                waiter.wake.clear()
                with contextlib.suppress(TimeoutError):  # woken early, or the pause is over
                    await asyncio.wait_for(waiter.wake.wait(), pause)
        finally:
            self._leave(queue, waiter)
            if announced:
                await self.window.withdraw(upstream, waiter.id)

    def _leave(self, queue: list[_Waiter], waiter: _Waiter) -> None:
        head = queue[0] is waiter
        queue.remove(waiter)
        heapq.heapify(queue)
        if head and queue:
            queue[0].wake.set()

    async def _refusal(self, upstream: str, waiter: _Waiter, tpm: int, queue_s: float,
                       priority: Priority) -> CapacityExceeded:
        """The refusal of a call that cannot be served in time: retry when the window has room
        for it and for the calls queued ahead of it."""
        ahead = sum(w.tokens for w in self._queues.get(upstream, []) if w < waiter)
        wait = await self.window.take(upstream, min(ahead + waiter.tokens, tpm), tpm, self._clock(),
                                      priority=priority, dry=True)
        retry_after = max(1, math.ceil(wait))
        return CapacityExceeded(
            f"Upstream {upstream!r} is at its capacity ({tpm} tokens per minute) and this call could not be "
            f"served within {queue_s:g} s in the {priority} queue. Retry after {retry_after} s.",
            retry_after=retry_after)


def window_for(store: object) -> CapacityWindow:
    """The capacity window beside a counter store: in Redis when the counters are (so every
    replica shares it), else in this process."""
    if isinstance(store, RedisCounterStore):
        return RedisCapacityWindow(store.client, key_prefix=store.key_prefix)
    return MemoryCapacityWindow()
