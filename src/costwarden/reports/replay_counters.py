"""The replay's counters: plain integers, one per counter window, kept as the memory store keeps them.

A replay admits and settles each call at once, so a counter holds spend only (nothing stays
reserved). A calendar window's ``used`` is exact. A rolling window logs its spend with the second
it was settled in, oldest first; ``used`` counts entries that may have left the window since it was
last advanced, so it is an upper bound of the window's spend until ``exact`` drops them: enough to
prove that a call has room, and exactly what ``MemoryCounterStore.snapshot`` reads once advanced.

Settling adds to ``used`` in the replay's loop itself; a counter whose ``used`` passes ``alarm``
is handed to ``Replay._alarm`` (replay.py), which moves the alarm on.
"""

from __future__ import annotations

from collections import deque

from costwarden.core.periods import Window
from costwarden.core.scopes import BudgetCheck

NEVER = float("inf")


class Counter:
    """Spend on one counter window (see the module docstring)."""

    __slots__ = ("alarm", "check", "floor", "key", "log", "span", "used", "watch", "width")

    def __init__(self, key: str, width: int, span: int, check: BudgetCheck | None) -> None:
        self.key = key
        self.used = 0
        self.width = width  # seconds per bucket; 0 for a calendar window
        self.span = span
        self.log: deque[tuple[int, int]] = deque()  # (second, spend) of a rolling window, oldest first
        self.check = check  # the calendar budget counted here, which may run out
        # the lowest spend at which a route that has proven the counter roomy stops being sure of it
        self.floor: float = NEVER
        # the spend at which the calendar budget runs out, less one
        self.watch: float = check.budget.limit - 1 if check is not None else NEVER
        self.alarm: float = self.watch  # min(floor, watch)

    def exact(self, second: int) -> int:
        """The spend in the window at ``second``, dropping the entries that have left it."""
        width = self.width
        if width:
            oldest = (second // width - self.span + 1) * width  # the first second of the oldest live bucket
            log = self.log
            while log and log[0][0] < oldest:
                self.used -= log.popleft()[1]
        return self.used


class Counters:
    """Every counter of a replay, by window key, and the restriction flags with their expiry."""

    def __init__(self) -> None:
        self._by_key: dict[str, Counter] = {}
        self.rolling: list[Counter] = []
        self.flags: dict[str, float] = {}

    def get(self, window: Window, width: int, check: BudgetCheck | None) -> Counter:
        """The counter of ``window`` (``width`` seconds per bucket, 0 for calendar ones), made empty
        on first use; ``check`` is its calendar budget."""
        counter = self._by_key.get(window.key)
        if counter is None:
            counter = self._by_key[window.key] = Counter(window.key, width, window.span, check)
            if width:
                self.rolling.append(counter)
        return counter

    def trim(self, second: int) -> None:
        """Drop what has left every rolling window by ``second`` (it keeps memory bounded)."""
        for counter in self.rolling:
            counter.exact(second)

    def set_flag(self, key: str, expires_at: float) -> None:
        """Raise a flag until ``expires_at`` (epoch seconds), as ``CounterStore.set_flags`` does."""
        self.flags[key] = max(expires_at, self.flags.get(key, 0.0))

    def flag_up(self, key: str, stamp: float) -> bool:
        return self.flags.get(key, 0.0) > stamp


__all__ = ["NEVER", "Counter", "Counters"]
