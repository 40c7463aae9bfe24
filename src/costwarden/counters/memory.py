"""In-process counters: exact, atomic under one event loop (no await inside an operation)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from costwarden.core.decision import Hold
from costwarden.core.periods import Window
from costwarden.counters.base import (
    Attempt,
    Conflict,
    Reservation,
    Settlement,
    Snapshot,
    StoreEmptied,
    Threshold,
)

_NO_FLAGS: frozenset[str] = frozenset()
_new = object.__new__  # a bare instance, its slots filled in one by one (see core/decision.py's _admit)
BUILT = "memory"  # the marker of a store made empty and consistent, as a fresh one is
BOUND_WINDOWS = 10_000  # windows tuples whose counters are kept (forgotten wholesale when full)


class _Counter:
    """One counter: per-bucket [spent, reserved], with running totals over the live buckets.

    A counter of one bucket (a calendar period's, which never leaves its window) keeps its totals
    alone: they are its bucket's figures, and holding and settling on it moves nothing else (two
    big-integer additions fewer per dollar hold, the costliest operations on the hot path).
    """

    __slots__ = ("buckets", "end", "reserved", "span", "spent", "top")

    def __init__(self, span: int, end: float) -> None:
        self.buckets: dict[int, list[int]] = {}
        self.spent = 0
        self.reserved = 0
        self.span = span
        self.end = end
        # The newest bucket the window was advanced to: a window at a later bucket must call
        # advance() first (one comparison on the hot path; calendar windows stay at bucket 0).
        self.top = span - 1

    def advance(self, bucket: int) -> None:
        """Forget buckets that have left a rolling window ending at ``bucket``."""
        if bucket <= self.top:
            return
        if self.span == 1:  # all it held was in its one bucket, which left
            self.spent = self.reserved = 0
            self.top = bucket
            return
        oldest = bucket - self.span + 1
        for b in [b for b in self.buckets if b < oldest]:
            spent, reserved = self.buckets.pop(b)
            self.spent -= spent
            self.reserved -= reserved
        self.top = bucket

    def cell(self, bucket: int) -> list[int] | None:
        """The [spent, reserved] of ``bucket``, made if need be; None for a counter of one bucket."""
        if self.span == 1:
            return None
        cell = self.buckets.get(bucket)
        if cell is None:
            cell = self.buckets[bucket] = [0, 0]
        return cell

    def add(self, bucket: int, spent: int, reserved: int) -> None:
        cell = self.cell(bucket)
        if cell is not None:
            cell[0] += spent
            cell[1] += reserved
        self.spent += spent
        self.reserved += reserved

    def figures(self) -> list[tuple[int, int]]:
        """Its non-empty buckets, oldest first, as (bucket, spent + reserved)."""
        if self.span == 1:
            return [(self.top, self.spent + self.reserved)] if self.spent + self.reserved else []
        return sorted((b, spent + reserved) for b, (spent, reserved) in self.buckets.items() if spent + reserved)


class _Binding:
    """The counters of one tuple of windows (a plan's), found once and kept until a counter moves
    to a new bucket or is dropped: what reading and holding on them needs, by window."""

    __slots__ = ("buckets", "cells", "counters", "distinct", "holds", "windows")

    def __init__(self, windows: Sequence[Window], counters: list[_Counter], buckets: list[int]) -> None:
        self.windows = windows  # kept: the binding is found by the tuple's id, which stays its own
        self.counters = counters
        self.buckets = buckets
        # each window's bucket cell (None on a calendar counter), made at the first hold (a read makes none)
        self.cells: list[list[int] | None] = []
        self.distinct = len(set(counters)) == len(counters)  # held on in one pass (one counter per key)
        # The last holds found to be on these windows one to one, in order: an admission's holds
        # are made once per plan and call size, so the next ones are known by identity alone.
        self.holds: Sequence[Hold] = ()

    def takes(self, holds: Sequence[Hold]) -> bool:
        """Whether ``holds`` are on these windows, one per window in order (all distinct)."""
        windows = self.windows
        if not self.distinct or len(holds) != len(windows):
            return False
        for hold, window in zip(holds, windows):  # noqa: B905 (lengths checked)
            if hold.window is not window:
                return False
        if not self.cells:  # every hold is on all its windows: make their cells once
            for counter, bucket in zip(self.counters, self.buckets):  # noqa: B905 (made together)
                self.cells.append(counter.cell(bucket))
        self.holds = holds
        return True


# An open reservation: its counters, bucket cells and buckets, one per hold, so that settling it
# needs no lookups (shared with the binding it was held through); the amounts held are its holds'.
_Held = tuple[Reservation, Sequence[_Counter], Sequence[list[int] | None], Sequence[int]]


class MemoryCounterStore:
    """The embedded CounterStore. State is lost with the process; the ledger rebuilds it.

    A fresh store is empty and built (``marker`` is ``BUILT``); pass ``marker=None`` for one that
    must be rebuilt from the ledger first, as a gateway opens it.
    """

    def __init__(self, replica: str = "local", marker: str | None = BUILT) -> None:
        self._replica = replica
        self._marker = marker
        self._counters: dict[str, _Counter] = {}
        self._bound: dict[int, _Binding] = {}  # by the id of the windows tuple
        # The binding the last ``remembered`` read, while no counter has changed since, and the
        # usage it read: a reservation of holds on those windows (as an admission's are) is made
        # on them. Two fields, not a tuple: they are set on every admission.
        self._seen: _Binding | None = None
        self._seen_usage: list[tuple[int, int]] = []
        self._reservations: dict[str, _Held] = {}
        self._flags: dict[str, float] = {}
        self._leases: dict[str, float] = {}

    @property
    def replica(self) -> str:
        return self._replica

    def _check(self) -> None:
        if self._marker is None:
            raise StoreEmptied("the counter store has not been built from the ledger")

    def _counter(self, window: Window) -> _Counter:
        counter = self._counters.get(window.key)
        if counter is None:
            counter = self._counters[window.key] = _Counter(window.span, window.end.timestamp())
        if window.bucket > counter.top:
            self._advance(counter, window.bucket)
        return counter

    def _advance(self, counter: _Counter, bucket: int) -> None:
        """Move a rolling counter to ``bucket``, forgetting every binding (their cells may be gone)."""
        counter.advance(bucket)
        self._bound.clear()
        self._seen = None

    # snapshot, reserve and settle run on every call: through a binding, they touch each counter
    # once, and advance() is only called when a window moved past its counter's newest bucket.
    # Their zip() calls pass no strict=: a keyword argument costs CPython 3.11 as much again as
    # the call, and the lengths are equal by construction (or checked first).

    async def snapshot(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot:
        if self._marker is None:
            self._check()
        seen = self.remembered(windows, flag_keys, now)
        assert seen is not None
        return seen

    def remembered(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot | None:
        """The figures themselves: an in-process store is never stale (None until it is built)."""
        if self._marker is None:
            return None
        bound = self._bound.get(id(windows))
        if bound is None or bound.windows is not windows:
            bound = self._bind(windows)
        usage = []  # a loop rather than a comprehension: in CPython 3.11 that is a function made and called
        for counter in bound.counters:
            usage.append((counter.spent, counter.reserved))
        self._seen, self._seen_usage = bound, usage
        snapshot = _new(Snapshot)
        snapshot.usage, snapshot.flags = usage, self._set(flag_keys, now) if flag_keys else _NO_FLAGS
        return snapshot

    def _set(self, flag_keys: Sequence[str], now: float) -> frozenset[str]:
        """Which of ``flag_keys`` are set at ``now`` (apart: a generator in the hot methods would
        make each call of theirs build closure cells)."""
        return frozenset(k for k in flag_keys if self._flags.get(k, 0.0) > now)

    def _bind(self, windows: Sequence[Window]) -> _Binding:
        # Made for every plan (each caller's, each second its rate windows move): one loop, and
        # the counter found inline when it needs neither making nor moving on.
        found = self._counters
        counters = []
        buckets = []
        for window in windows:
            counter = found.get(window.key)
            bucket = window.bucket
            if counter is None or bucket > counter.top:
                counter = self._counter(window)  # may clear _bound: added to after
            counters.append(counter)
            buckets.append(bucket)
        if len(self._bound) >= BOUND_WINDOWS:
            self._bound.clear()
        bound = self._bound[id(windows)] = _Binding(windows, counters, buckets)
        return bound

    async def buckets(self, windows: Sequence[Window]) -> list[list[tuple[int, int]]]:
        self._check()
        out: list[list[tuple[int, int]]] = []
        for window in windows:
            counter = self._counters.get(window.key)
            if counter is None:
                out.append([])
                continue
            if window.bucket > counter.top:
                self._advance(counter, window.bucket)
            out.append(counter.figures())
        return out

    async def reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float) -> Reservation | Conflict:
        return (await self.try_reserve(reservation_id, holds, expires_at, (), 0.0)).outcome

    async def try_reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float,
                          flag_keys: Sequence[str], now: float) -> Attempt:
        if self._marker is None:
            self._check()
        flags = self._set(flag_keys, now) if flag_keys else _NO_FLAGS
        held = self._reservations.get(reservation_id)
        if held is not None:
            return Attempt(held[0], None, flags)  # a retried reserve of an id still held changes nothing
        bound, self._seen = self._seen, None
        # (the holds' identity tested here first: the usual admission's are those taken last)
        if bound is None or (holds is not bound.holds and not bound.takes(holds)):
            return self._reserve(reservation_id, holds, expires_at, flags)
        # The admission path: holds on the counters ``remembered`` just read, unchanged since (so
        # its usage is what they hold), one per window in order. A hold that does not fit undoes
        # those before it and leaves the answer to ``_reserve``.
        usage = self._seen_usage
        counters, cells = bound.counters, bound.cells
        for hold, counter, cell, (spent, reserved) in zip(holds, counters, cells, usage):  # noqa: B905 (taken)
            amount, limit = hold.amount, hold.limit
            holding = reserved + amount  # figures of nano-dollars take CPython's slow integers: added once
            if limit is not None and spent + holding > limit:
                self._undo(counters[:holds.index(hold)], cells, holds)
                return self._reserve(reservation_id, holds, expires_at, flags)
            if cell is not None:  # a calendar counter's totals are its figures
                cell[1] += amount
            counter.reserved = holding
        reservation = _new(Reservation)
        reservation.id, reservation.holds, reservation.expires_at, reservation.owner = \
            reservation_id, tuple(holds), expires_at, self._replica
        self._reservations[reservation_id] = (reservation, counters, cells, bound.buckets)
        attempt = _new(Attempt)
        attempt.outcome, attempt.usage, attempt.flags = reservation, usage, flags
        return attempt

    def _reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float,
                 flags: frozenset[str]) -> Attempt:
        """Hold on any counters, in one pass, holding as it goes; a hold that does not fit undoes
        those before it, and the rest are only read."""
        counters: list[_Counter] = []
        cells: list[list[int] | None] = []
        buckets: list[int] = []
        usage: list[tuple[int, int]] = []
        conflict: Conflict | None = None
        for hold in holds:
            counter = self._counter(hold.window)
            spent, reserved = counter.spent, counter.reserved
            usage.append((spent, reserved))
            if conflict is not None:
                continue
            amount, limit, bucket = hold.amount, hold.limit, hold.window.bucket
            if limit is not None and spent + reserved + amount > limit:
                conflict = Conflict(len(counters), spent + reserved)
                continue
            cell = counter.cell(bucket)
            if cell is not None:
                cell[1] += amount
            counter.reserved = reserved + amount
            counters.append(counter)
            cells.append(cell)
            buckets.append(bucket)
        if conflict is not None:
            self._undo(counters, cells, holds)
            return Attempt(conflict, usage, flags)
        reservation = Reservation(reservation_id, tuple(holds), expires_at, self._replica)
        self._reservations[reservation_id] = (reservation, counters, cells, buckets)
        return Attempt(reservation, usage, flags)

    async def settle(self, reservation: Reservation, amounts: Sequence[int]) -> list[tuple[int, int]]:
        return (await self.settle_claiming(reservation, amounts, (), 0.0)).moved

    async def settle_claiming(self, reservation: Reservation, amounts: Sequence[int],
                              thresholds: Sequence[Threshold], now: float) -> Settlement:
        # Every settlement, release and expiry comes here: the loop is in this coroutine itself,
        # which runs for each call, rather than in a function of its own (a frame fewer).
        if len(amounts) != len(reservation.holds):
            raise ValueError(f"settle needs one amount per hold: {len(reservation.holds)}, got {len(amounts)}")
        if self._marker is None:
            self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is None:
            return Settlement([(0, 0)] * len(reservation.holds), ())  # already settled or expired: settle once
        held_by, counters, cells, buckets = held
        self._seen = None
        # Replace the amount of each hold by the amount spent (one per hold, counted above).
        moved = []
        for counter, cell, bucket, hold, amount in zip(counters, cells, buckets, held_by.holds, amounts):  # noqa: B905
            before = counter.spent
            if bucket != counter.top:  # the window moved on since (or a newer one was seen first)
                if bucket > counter.top:
                    self._advance(counter, bucket)
                if bucket <= counter.top - counter.span:  # the bucket left its rolling window
                    moved.append((before, before))
                    continue
            held_amount = hold.amount
            if cell is not None:
                cell[0] += amount
                cell[1] -= held_amount
            counter.spent = after = before + amount
            counter.reserved -= held_amount
            moved.append((before, after))
        claimed: list[int] | None = None  # made when one is (the usual settlement claims none)
        flags = self._flags
        index = 0
        for threshold in thresholds:
            before, after = moved[threshold.hold]
            if before < threshold.level <= after and flags.get(threshold.key, 0.0) <= now:
                flags[threshold.key] = threshold.expires_at
                if claimed is None:
                    claimed = []
                claimed.append(index)
            index += 1  # noqa: SIM113 (enumerate() costs a call and a tuple per item)
        settlement = _new(Settlement)
        settlement.moved, settlement.claimed = moved, tuple(claimed) if claimed else ()
        return settlement

    @staticmethod
    def _undo(counters: Sequence[_Counter], cells: Sequence[list[int] | None], holds: Sequence[Hold]) -> None:
        """Take back holds made a moment ago, one per counter given (the first of ``holds``)."""
        for counter, cell, hold in zip(counters, cells, holds):  # noqa: B905 (the first holds)
            if cell is not None:
                cell[1] -= hold.amount
            counter.reserved -= hold.amount

    async def release(self, reservation: Reservation) -> None:
        self._check()
        await self.settle_claiming(reservation, [0] * len(reservation.holds), (), 0.0)

    async def set_flags(self, flags: Sequence[tuple[str, float]]) -> None:
        self._check()
        for key, expires_at in flags:
            self._flags[key] = max(expires_at, self._flags.get(key, 0.0))

    async def claim(self, key: str, expires_at: float, now: float) -> bool:
        if self._flags.get(key, 0.0) > now:
            return False
        self._flags[key] = expires_at
        return True

    async def expire(self, now: float) -> list[Reservation]:
        self._check()
        stale = [held for held in self._reservations.values() if held[0].expires_at <= now]
        for reservation, _, _, _ in stale:
            await self.settle_claiming(reservation, [hold.amount for hold in reservation.holds], (), 0.0)
        finished = [k for k, c in self._counters.items() if _finished(c, now)]
        for key in finished:
            del self._counters[key]
        if finished:
            self._bound.clear()
            self._seen = None
        for key in [k for k, until in self._flags.items() if until <= now]:
            del self._flags[key]
        return [held[0] for held in stale]

    async def load(self, spend: Iterable[tuple[Window, int]]) -> None:
        self._check()
        self._seen = None
        for window, amount in spend:
            self._counter(window).add(window.bucket, amount, 0)

    async def marker(self) -> str | None:
        return self._marker

    async def replace(self, spend: Iterable[tuple[Window, int]], marker: str,
                      expected: Mapping[str, int] | None = None) -> int:
        if expected is not None:
            self._check()
        by_key: dict[str, list[tuple[Window, int]]] = {}
        for window, amount in spend:
            by_key.setdefault(window.key, []).append((window, amount))
        keys = set(self._counters) | set(by_key) if expected is None else set(expected)
        self._seen = None
        skipped = 0
        for key in keys:
            counter = self._counters.get(key)
            if expected is not None and (0 if counter is None else counter.spent) != expected[key]:
                skipped += 1
                continue
            if counter is not None:
                for cell in counter.buckets.values():
                    cell[0] = 0
                counter.spent = 0
            for window, amount in by_key.get(key, ()):
                self._counter(window).add(window.bucket, amount, 0)
        if expected is None:
            self._marker = marker
        return skipped

    async def renew_lease(self, expires_at: float) -> None:
        self._leases[self._replica] = expires_at

    async def end_lease(self, replica: str) -> None:
        self._leases.pop(replica, None)

    async def expired_leases(self, now: float) -> list[str]:
        return sorted(replica for replica, until in self._leases.items() if until < now)

    async def owned_by(self, replica: str) -> list[Reservation]:
        return [held[0] for held in self._reservations.values() if held[0].owner == replica]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._leases.clear()
        self._counters.clear()
        self._bound.clear()
        self._seen = None
        self._reservations.clear()
        self._flags.clear()


def _finished(counter: _Counter, now: float) -> bool:
    """A calendar counter past its period, or a rolling one whose buckets have all left."""
    if counter.reserved:
        return False
    return counter.end < now if counter.span == 1 else not counter.buckets
