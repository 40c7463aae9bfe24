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
BUILT = "memory"  # the marker of a store made empty and consistent, as a fresh one is


class _Counter:
    """One counter: per-bucket [spent, reserved], with running totals over the live buckets."""

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
        oldest = bucket - self.span + 1
        for b in [b for b in self.buckets if b < oldest]:
            spent, reserved = self.buckets.pop(b)
            self.spent -= spent
            self.reserved -= reserved
        self.top = bucket

    def add(self, bucket: int, spent: int, reserved: int) -> None:
        cell = self.buckets.get(bucket)
        if cell is None:
            cell = self.buckets[bucket] = [0, 0]
        cell[0] += spent
        cell[1] += reserved
        self.spent += spent
        self.reserved += reserved


class MemoryCounterStore:
    """The embedded CounterStore. State is lost with the process; the ledger rebuilds it.

    A fresh store is empty and built (``marker`` is ``BUILT``); pass ``marker=None`` for one that
    must be rebuilt from the ledger first, as a gateway opens it.
    """

    def __init__(self, replica: str = "local", marker: str | None = BUILT) -> None:
        self._replica = replica
        self._marker = marker
        self._counters: dict[str, _Counter] = {}
        # each open reservation with the counters and bucket cells it holds on, so settling needs
        # no lookups
        self._reservations: dict[str, tuple[Reservation, list[_Counter], list[list[int]]]] = {}
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
        counter.advance(window.bucket)
        return counter

    # snapshot, reserve and settle run on every call: _counter() and _Counter.add() are inlined,
    # and advance() is only called when the window moved past the counter's newest bucket.

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
        counters = self._counters
        usage = []
        for window in windows:
            counter = counters.get(window.key)
            if counter is None or window.bucket > counter.top:
                counter = self._counter(window)
            usage.append((counter.spent, counter.reserved))
        if not flag_keys:
            return Snapshot(usage, _NO_FLAGS)
        return Snapshot(usage, frozenset(k for k in flag_keys if self._flags.get(k, 0.0) > now))

    async def buckets(self, windows: Sequence[Window]) -> list[list[tuple[int, int]]]:
        self._check()
        out: list[list[tuple[int, int]]] = []
        for window in windows:
            counter = self._counters.get(window.key)
            if counter is None:
                out.append([])
                continue
            if window.bucket > counter.top:
                counter.advance(window.bucket)
            out.append(sorted((b, spent + reserved) for b, (spent, reserved) in counter.buckets.items()
                              if spent + reserved))
        return out

    async def reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float) -> Reservation | Conflict:
        return (await self.try_reserve(reservation_id, holds, expires_at, (), 0.0)).outcome

    async def try_reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float,
                          flag_keys: Sequence[str], now: float) -> Attempt:
        if self._marker is None:
            self._check()
        flags = frozenset(k for k in flag_keys if self._flags.get(k, 0.0) > now) if flag_keys else _NO_FLAGS
        held = self._reservations.get(reservation_id)
        if held is not None:
            return Attempt(held[0], None, flags)  # a retried reserve of an id still held changes nothing
        all_counters = self._counters
        counters: list[_Counter] = []
        cells: list[list[int]] = []
        usage: list[tuple[int, int]] = []
        conflict: Conflict | None = None
        # One pass, holding as it goes (every hold of a call is on a counter of its own); a hold
        # that does not fit undoes those before it, and the rest are only read.
        for hold in holds:
            window = hold.window
            counter = all_counters.get(window.key)
            if counter is None or window.bucket > counter.top:
                counter = self._counter(window)
            spent, reserved = counter.spent, counter.reserved
            usage.append((spent, reserved))
            if conflict is not None:
                continue
            amount, limit = hold.amount, hold.limit
            if limit is not None and spent + reserved + amount > limit:
                conflict = Conflict(len(cells), spent + reserved)
                continue
            cell = counter.buckets.get(window.bucket)
            if cell is None:
                cell = counter.buckets[window.bucket] = [0, amount]
            else:
                cell[1] += amount
            counter.reserved = reserved + amount
            counters.append(counter)
            cells.append(cell)
        if conflict is not None:
            for hold, counter, cell in zip(holds, counters, cells, strict=False):
                cell[1] -= hold.amount
                counter.reserved -= hold.amount
            return Attempt(conflict, usage, flags)
        reservation = Reservation(reservation_id, tuple(holds), expires_at, self._replica)
        self._reservations[reservation_id] = (reservation, counters, cells)
        return Attempt(reservation, usage, flags)

    async def settle(self, reservation: Reservation, amounts: Sequence[int]) -> list[tuple[int, int]]:
        if len(amounts) != len(reservation.holds):
            raise ValueError(f"settle needs one amount per hold: {len(reservation.holds)}, got {len(amounts)}")
        if self._marker is None:
            self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is None:
            return [(0, 0)] * len(reservation.holds)  # already settled or expired: settle once
        return self._apply(*held, amounts)

    async def settle_claiming(self, reservation: Reservation, amounts: Sequence[int],
                              thresholds: Sequence[Threshold], now: float) -> Settlement:
        if len(amounts) != len(reservation.holds):
            raise ValueError(f"settle needs one amount per hold: {len(reservation.holds)}, got {len(amounts)}")
        if self._marker is None:
            self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is None:
            return Settlement([(0, 0)] * len(reservation.holds), ())
        moved = self._apply(*held, amounts)
        claimed: list[int] = []
        flags = self._flags
        for index, threshold in enumerate(thresholds):
            before, after = moved[threshold.hold]
            if before < threshold.level <= after and flags.get(threshold.key, 0.0) <= now:
                flags[threshold.key] = threshold.expires_at
                claimed.append(index)
        return Settlement(moved, tuple(claimed))

    @staticmethod
    def _apply(reservation: Reservation, counters: list[_Counter], cells: list[list[int]],
               amounts: Sequence[int]) -> list[tuple[int, int]]:
        moved = []
        for hold, counter, cell, amount in zip(reservation.holds, counters, cells, amounts, strict=True):
            bucket = hold.window.bucket
            if bucket > counter.top:
                counter.advance(bucket)
            before = counter.spent
            if bucket > counter.top - counter.span:  # else the bucket already left its rolling window
                cell[0] += amount
                cell[1] -= hold.amount
                counter.spent = before + amount
                counter.reserved -= hold.amount
            moved.append((before, counter.spent))
        return moved

    async def release(self, reservation: Reservation) -> None:
        self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is not None:
            self._apply(*held, [0] * len(reservation.holds))

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
        for reservation, counters, cells in stale:
            del self._reservations[reservation.id]
            self._apply(reservation, counters, cells, [h.amount for h in reservation.holds])
        for key in [k for k, c in self._counters.items() if _finished(c, now)]:
            del self._counters[key]
        for key in [k for k, until in self._flags.items() if until <= now]:
            del self._flags[key]
        return [held[0] for held in stale]

    async def load(self, spend: Iterable[tuple[Window, int]]) -> None:
        self._check()
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
        self._reservations.clear()
        self._flags.clear()


def _finished(counter: _Counter, now: float) -> bool:
    """A calendar counter past its period, or a rolling one whose buckets have all left."""
    if counter.reserved:
        return False
    return counter.end < now if counter.span == 1 else not counter.buckets
