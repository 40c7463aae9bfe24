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
BOUND_WINDOWS = 10_000  # windows tuples whose counters are kept (forgotten wholesale when full)


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


# one hold of an open reservation: its counter, its bucket's [spent, reserved] cell, the amount
# held and the bucket
_Entry = tuple[_Counter, list[int], int, int]


class MemoryCounterStore:
    """The embedded CounterStore. State is lost with the process; the ledger rebuilds it.

    A fresh store is empty and built (``marker`` is ``BUILT``); pass ``marker=None`` for one that
    must be rebuilt from the ledger first, as a gateway opens it.
    """

    def __init__(self, replica: str = "local", marker: str | None = BUILT) -> None:
        self._replica = replica
        self._marker = marker
        self._counters: dict[str, _Counter] = {}
        # the counters of each windows tuple read lately, by its id (see ``remembered``)
        self._bound: dict[int, tuple[Sequence[Window], list[_Counter]]] = {}
        # each open reservation with, per hold, its counter, bucket cell, amount and bucket, so
        # settling needs no lookups
        self._reservations: dict[str, tuple[Reservation, list[_Entry]]] = {}
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
        """Move a rolling counter to ``bucket``, forgetting the counters bound to plans' windows."""
        counter.advance(bucket)
        self._bound.clear()

    # snapshot, reserve and settle run on every call: they touch each counter once, and advance()
    # is only called when a window moved past its counter's newest bucket.

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
        # A plan's windows are one tuple, read on every call of its caller: its counters are found
        # once, and kept until a counter moves to a new bucket or is dropped (``_bound.clear``).
        bound = self._bound.get(id(windows))
        if bound is None or bound[0] is not windows:
            bound = self._bind(windows)
        usage = [(counter.spent, counter.reserved) for counter in bound[1]]
        if not flag_keys:
            return Snapshot(usage, _NO_FLAGS)
        return Snapshot(usage, frozenset(k for k in flag_keys if self._flags.get(k, 0.0) > now))

    def _bind(self, windows: Sequence[Window]) -> tuple[Sequence[Window], list[_Counter]]:
        counters = [self._counter(window) for window in windows]  # may clear _bound: add after
        if len(self._bound) >= BOUND_WINDOWS:
            self._bound.clear()
        bound = self._bound[id(windows)] = (windows, counters)  # the tuple kept: its id stays its own
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
        get = self._counters.get
        usage: list[tuple[int, int]] = []
        entries: list[_Entry] = []
        # One pass, holding as it goes (every hold of a call is on a counter of its own); a hold
        # that does not fit undoes those before it (``_refuse``).
        for hold in holds:
            window = hold.window
            bucket = window.bucket
            counter = get(window.key)
            if counter is None or bucket > counter.top:
                counter = self._counter(window)
            spent, reserved = counter.spent, counter.reserved
            usage.append((spent, reserved))
            amount, limit = hold.amount, hold.limit
            if limit is not None and spent + reserved + amount > limit:
                return self._refuse(holds, entries, usage, spent + reserved, flags)
            cell = counter.buckets.get(bucket)
            if cell is None:
                cell = counter.buckets[bucket] = [0, amount]
            else:
                cell[1] += amount
            counter.reserved = reserved + amount
            entries.append((counter, cell, amount, bucket))
        reservation = Reservation(reservation_id, tuple(holds), expires_at, self._replica)
        self._reservations[reservation_id] = (reservation, entries)
        return Attempt(reservation, usage, flags)

    def _refuse(self, holds: Sequence[Hold], entries: list[_Entry], usage: list[tuple[int, int]], used: int,
                flags: frozenset[str]) -> Attempt:
        """Undo the holds made before hold ``len(entries)``, which did not fit, and read the rest."""
        for counter, cell, amount, _ in entries:
            cell[1] -= amount
            counter.reserved -= amount
        conflict = Conflict(len(entries), used)
        for hold in holds[len(usage):]:
            counter = self._counter(hold.window)
            usage.append((counter.spent, counter.reserved))
        return Attempt(conflict, usage, flags)

    async def settle(self, reservation: Reservation, amounts: Sequence[int]) -> list[tuple[int, int]]:
        if len(amounts) != len(reservation.holds):
            raise ValueError(f"settle needs one amount per hold: {len(reservation.holds)}, got {len(amounts)}")
        if self._marker is None:
            self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is None:
            return [(0, 0)] * len(reservation.holds)  # already settled or expired: settle once
        return self._apply(held[1], amounts)

    async def settle_claiming(self, reservation: Reservation, amounts: Sequence[int],
                              thresholds: Sequence[Threshold], now: float) -> Settlement:
        if len(amounts) != len(reservation.holds):
            raise ValueError(f"settle needs one amount per hold: {len(reservation.holds)}, got {len(amounts)}")
        if self._marker is None:
            self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is None:
            return Settlement([(0, 0)] * len(reservation.holds), ())
        moved = self._apply(held[1], amounts)
        if not thresholds:
            return Settlement(moved, ())
        claimed: list[int] = []
        flags = self._flags
        for index, threshold in enumerate(thresholds):
            before, after = moved[threshold.hold]
            if before < threshold.level <= after and flags.get(threshold.key, 0.0) <= now:
                flags[threshold.key] = threshold.expires_at
                claimed.append(index)
        return Settlement(moved, tuple(claimed))

    def _apply(self, entries: list[_Entry], amounts: Sequence[int]) -> list[tuple[int, int]]:
        moved = []
        for (counter, cell, held, bucket), amount in zip(entries, amounts, strict=True):
            before = counter.spent
            if bucket != counter.top:  # the window moved on since (or a newer one was seen first)
                if bucket > counter.top:
                    self._advance(counter, bucket)
                if bucket <= counter.top - counter.span:  # the bucket left its rolling window
                    moved.append((before, before))
                    continue
            cell[0] += amount
            cell[1] -= held
            counter.spent = before + amount
            counter.reserved -= held
            moved.append((before, before + amount))
        return moved

    async def release(self, reservation: Reservation) -> None:
        self._check()
        held = self._reservations.pop(reservation.id, None)
        if held is not None:
            self._apply(held[1], [0] * len(reservation.holds))

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
        for reservation, entries in stale:
            del self._reservations[reservation.id]
            self._apply(entries, [h.amount for h in reservation.holds])
        finished = [k for k, c in self._counters.items() if _finished(c, now)]
        for key in finished:
            del self._counters[key]
        if finished:
            self._bound.clear()
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
        self._bound.clear()
        self._reservations.clear()
        self._flags.clear()


def _finished(counter: _Counter, now: float) -> bool:
    """A calendar counter past its period, or a rolling one whose buckets have all left."""
    if counter.reserved:
        return False
    return counter.end < now if counter.span == 1 else not counter.buckets
