"""The replay's counters: plain integers, one per counter window, kept as the memory store keeps them.

A replay admits and settles each call at once, so a counter holds spend only (nothing stays
reserved). A calendar window's ``used`` is exact. A rolling window keeps its spend per bucket, in
time order; ``used`` counts buckets that may have left the window since it was last advanced, so
it is an upper bound of the window's spend until ``exact`` drops them: enough to prove that a call
has room, and exactly what ``MemoryCounterStore.snapshot`` reads once advanced.
"""

from __future__ import annotations

from collections import deque

from costwarden.core.periods import Window


class Counter:
    """Spend on one counter window (see the module docstring)."""

    __slots__ = ("buckets", "key", "span", "used", "width")

    def __init__(self, key: str, width: int, span: int) -> None:
        self.key = key
        self.used = 0
        self.width = width  # seconds per bucket; 0 for a calendar window
        self.span = span
        self.buckets: deque[list[int]] = deque()  # [bucket, spend], oldest first

    @classmethod
    def of(cls, window: Window, width: int) -> Counter:
        """The counter of ``window``, whose buckets are ``width`` seconds wide (0: calendar)."""
        return cls(window.key, width, window.span)

    def add(self, amount: int, second: int) -> None:
        """Settle ``amount`` at ``second`` (epoch seconds, truncated as the store truncates them)."""
        self.used += amount
        width = self.width
        if not width:
            return
        bucket = second // width
        buckets = self.buckets
        if buckets and buckets[-1][0] == bucket:
            buckets[-1][1] += amount
            return
        buckets.append([bucket, amount])
        if len(buckets) > 2 * self.span:  # keep memory bounded when nobody asks for the exact value
            self._advance(bucket)

    def exact(self, second: int) -> int:
        """The spend in the window at ``second``, dropping the buckets that have left it."""
        if self.width:
            self._advance(second // self.width)
        return self.used

    def _advance(self, bucket: int) -> None:
        oldest = bucket - self.span + 1
        buckets = self.buckets
        while buckets and buckets[0][0] < oldest:
            self.used -= buckets.popleft()[1]


class Counters:
    """Every counter of a replay, by window key, and the restriction flags with their expiry."""

    def __init__(self) -> None:
        self._by_key: dict[str, Counter] = {}
        self.flags: dict[str, float] = {}

    def get(self, window: Window, width: int) -> Counter:
        """The counter of ``window``, made empty on first use."""
        counter = self._by_key.get(window.key)
        if counter is None:
            counter = self._by_key[window.key] = Counter.of(window, width)
        return counter

    def set_flag(self, key: str, expires_at: float) -> None:
        """Raise a flag until ``expires_at`` (epoch seconds), as ``CounterStore.set_flags`` does."""
        self.flags[key] = max(expires_at, self.flags.get(key, 0.0))

    def flag_up(self, key: str, stamp: float) -> bool:
        return self.flags.get(key, 0.0) > stamp


__all__ = ["Counter", "Counters"]
