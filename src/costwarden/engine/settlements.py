"""Settlements the counter store could not take (Redis down or emptied), kept for a retry.

A call already answered is never failed for its counters: its settlement waits here, in order,
and is applied when the store is back. The queue is bounded; a settlement that falls off it (or
dies with the process) is not lost money, since the ledger has the event and the reconciler or a
rebuild puts the counters right from it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from costwarden.core.periods import Window
from costwarden.counters.base import CounterStore, Reservation
from costwarden.errors import StorageError

log = logging.getLogger(__name__)
PENDING_LIMIT = 100_000  # settlements held at most; about 300 bytes each


@dataclass(frozen=True, slots=True)
class PendingSettle:
    """Move a reservation's holds to ``amounts`` (zeros: a release)."""

    reservation: Reservation
    amounts: tuple[int, ...]

    @property
    def call_id(self) -> str:
        return self.reservation.id


@dataclass(frozen=True, slots=True)
class PendingSpend:
    """Add spend that was never reserved (a call let through while the store was down)."""

    call_id: str
    spend: tuple[tuple[Window, int], ...]


Pending = PendingSettle | PendingSpend


class PendingSettlements:
    """A bounded, ordered queue of settlements to retry against one store."""

    def __init__(self, store: CounterStore, limit: int = PENDING_LIMIT) -> None:
        self.store = store
        self._queue: deque[Pending] = deque()
        self._limit = limit
        self.dropped = 0  # settlements that fell off the queue (the reconciler corrects them)
        self.build: str | None = None  # the store's build (generation marker) the queue was last judged against

    def __len__(self) -> int:
        return len(self._queue)

    def settle(self, reservation: Reservation, amounts: Sequence[int]) -> None:
        """Keep a settlement (or, with zero amounts, a release) for ``retry``."""
        self._add(PendingSettle(reservation, tuple(amounts)))

    def spend(self, call_id: str, spend: Sequence[tuple[Window, int]]) -> None:
        """Keep the unreserved spend of call ``call_id`` to add for ``retry``."""
        if spend:
            self._add(PendingSpend(call_id, tuple(spend)))

    def call_ids(self, *, unreserved_only: bool = False) -> set[str]:
        """The calls whose settlements are queued (only those let through unreserved)."""
        return {item.call_id for item in self._queue if not unreserved_only or isinstance(item, PendingSpend)}

    def counted(self, ids: Collection[str]) -> None:
        """Forget the spend of calls ``ids``, which a rebuild took from the ledger: adding it again
        would count it twice. Their reservations are only released (the store holds them again
        after a rebuild); their unreserved spend is dropped."""
        chosen = set(ids)
        kept: deque[Pending] = deque()
        for item in self._queue:
            if item.call_id not in chosen:
                kept.append(item)
            elif isinstance(item, PendingSettle):
                kept.append(PendingSettle(item.reservation, (0,) * len(item.amounts)))
        self._queue = kept

    def _add(self, item: Pending) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%d counter settlements dropped (queue full); the reconciler will correct them",
                            self.dropped)
        self._queue.append(item)

    async def retry(self) -> int:
        """Apply the queued settlements in order until the store fails again; returns how many
        were applied (the rest stay queued)."""
        applied = 0
        while self._queue:
            item = self._queue[0]
            try:
                if isinstance(item, PendingSettle):
                    await self.store.settle(item.reservation, item.amounts)
                else:
                    await self.store.load(item.spend)
            except StorageError:
                break
            self._queue.popleft()
            applied += 1
        if applied:
            log.info("applied %d counter settlements held while the store was unavailable", applied)
        return applied
