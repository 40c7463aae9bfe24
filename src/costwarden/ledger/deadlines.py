"""Commit deadlines of the hot path's rows: one timer per event loop, not one per row.

Every row a call waits for must commit within the ledger's deadline or go to the spool. A timer
armed and cancelled per row cost the loop a heap insertion and removal on every call; here a row
is a dict entry, and one timer, armed for the earliest deadline, serves them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class CommitDeadlines:
    """Futures of one event loop that must complete within ``seconds`` of being watched; one still
    pending when its deadline's timer fires is failed with ``overdue()``, as a timer of its own
    would have failed it.

    Every future gets the same delay, so deadlines fall in the order futures are watched, and a
    dict (which keeps insertion order) holds them earliest first: the timer is armed for the first
    one and, when it fires, fails the overdue ones at the front and is armed for the next.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float,
                 overdue: Callable[[], BaseException]) -> None:
        self.loop = loop
        self._seconds = seconds
        self._overdue = overdue
        self._due: dict[asyncio.Future[Any], float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = 0.0

    def watch(self, future: asyncio.Future[Any]) -> None:
        """Fail ``future`` unless it completes within the deadline; ``forget`` it once it has."""
        due = self.loop.time() + self._seconds
        self._due[future] = due
        if self._timer is None:
            self._arm(due)

    def forget(self, future: asyncio.Future[Any]) -> None:
        """Stop watching ``future`` (completed, or failed by its deadline)."""
        self._due.pop(future, None)

    def __len__(self) -> int:
        return len(self._due)

    def _arm(self, due: float) -> None:
        self._armed_for = due
        self._timer = self.loop.call_at(due, self._expire)

    def _expire(self) -> None:
        self._timer = None
        # A loop's timer may fire a fraction of a millisecond before its clock reaches the time it
        # was armed for (uvloop rounds to whole milliseconds); a timer per row failed its row then.
        now = max(self._armed_for, self.loop.time())
        overdue: list[asyncio.Future[Any]] = []
        following = None
        for future, due in self._due.items():
            if due > now:
                following = due
                break
            overdue.append(future)
        for future in overdue:
            del self._due[future]
            if not future.done():
                future.set_exception(self._overdue())
        if following is not None:
            self._arm(following)
