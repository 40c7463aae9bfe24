"""How long a ledger writer's batch waits for company: the calls in flight, as the writer sees
them, and the time between their events. No I/O; the writer (``writer.py``) asks before it commits.

A commit costs about the same for one row as for a hundred, so under concurrency a batch that
someone waits for may wait a little for the events of the other calls in flight, as PostgreSQL's
``commit_delay`` waits for other transactions' WAL: only while at least ``SIBLINGS`` calls are in
flight, until one in eight of them has ended, for at most four times the recent gap between two
events and never more than ``WINDOW_S``. A lone call never waits.

It also tells whether calls come one at a time (``lull``), for the direct lane of lone calls'
rows (``direct_lane.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from costwarden.ledger.queue_items import RowKind, Write

WINDOW_S = 0.025  # the longest an event waits for other calls' events
SIBLINGS = 4  # calls in flight beside a batch for it to wait at all
KEPT = 100_000  # ids of calls in flight remembered at most


class Company:
    """The calls a writer has seen begin (a write-ahead row) and not yet end (their event)."""

    def __init__(self, window_s: float = WINDOW_S, kept: int = KEPT) -> None:
        self._window_s = window_s
        self._kept = kept
        self._open: dict[str, None] = {}  # in arrival order, so the oldest are forgotten first
        self._gap = window_s  # moving average of the time between two events
        self._last_event: float | None = None
        self._alone: str | None = None  # a call begun with none other in flight, none begun since
        self._lull = False

    @property
    def in_flight(self) -> int:
        return len(self._open)

    @property
    def lull(self) -> bool:
        """Whether the last call to end was alone from its beginning to its end, and no call has
        begun beside another since. Under concurrency the first call of a short pause begins
        alone, but its write-ahead row would ride in the next batch's statement, so that alone
        does not make a lull."""
        return self._lull

    def is_open(self, ident: str) -> bool:
        """Whether call ``ident`` began here (its write-ahead row) and has not ended yet."""
        return ident in self._open

    def note(self, writes: Iterable[Write], now: float) -> int:
        """Note the calls ``writes`` begin and end at ``now``; returns how many events they hold."""
        events = 0
        for write in writes:
            if write.kind is RowKind.INFLIGHT:
                self._alone = None if self._open else write.row["id"]
                self._lull = self._lull and self._alone is not None
                self._open[write.row["id"]] = None
            elif write.kind is RowKind.EVENT:
                events += 1
                self._open.pop(write.row["id"], None)
                if write.row["id"] == self._alone:
                    self._alone, self._lull = None, True
                if self._last_event is not None:
                    self._gap += (min(now - self._last_event, self._window_s) - self._gap) / 8
                self._last_event = now
        while len(self._open) > self._kept:  # calls whose event never came here
            del self._open[next(iter(self._open))]
        return events

    def forget(self, ids: Iterable[str]) -> None:
        """Calls that ended elsewhere (their event went to the spool, not to this writer): no
        batch waits for them any more."""
        for ident in ids:
            self._open.pop(ident, None)

    def wait(self) -> tuple[float, int] | None:
        """How long a batch someone waits for may wait for company, and for how many events;
        None: not at all."""
        if len(self._open) < SIBLINGS:
            return None
        return min(self._window_s, 4 * self._gap), 1 + len(self._open) // 8
