"""What a shared store's counters hold, as far as this process knows, to decide on without asking.

Admission decides on these figures and sends the reservation at once; the store's answer carries
the figures it really held, so a decision made on stale ones is found out in the same round trip
and made again (``engine/admission.py``). Nothing is ever enforced on them.

The figures are those of the store's last answer, moved by what this process has sent since and
not yet seen answered: a reservation adds its amounts, a settlement its actual amounts less the
held ones. The store runs a connection's commands in the order sent and answers them in that
order, so when it is the only one writing, the figures a call decides on are the ones the store
holds when its reservation runs, even with many calls in flight; another replica's writes, a
rolling window's bucket leaving it, or a command that failed make them differ, and the answer
tells.
"""

from __future__ import annotations

from collections.abc import Sequence

from costwarden.core.periods import Window
from costwarden.counters.base import Snapshot

FIGURES_LIMIT = 100_000  # counters and flags remembered at most (forgotten wholesale when full)


class Figures:
    """The last seen use (spent + reserved) per counter key and state per flag key, and the
    change still coming per counter key from commands sent and not yet answered."""

    __slots__ = ("_coming", "_counted", "_flags", "_limit", "_sent", "_tickets", "_used")

    def __init__(self, limit: int = FIGURES_LIMIT) -> None:
        self._used: dict[str, int] = {}
        self._coming: dict[str, int] = {}  # counter key -> the sum of the changes counted, not yet answered
        # commands not yet answered, by ticket: their counter keys and changes, counted in ``_coming`` or not yet
        self._sent: dict[int, tuple[Sequence[str], Sequence[int]]] = {}
        self._counted: dict[int, tuple[Sequence[str], Sequence[int]]] = {}
        self._tickets = 0
        self._flags: dict[str, bool] = {}
        self._limit = limit

    def recall(self, windows: Sequence[Window], flag_keys: Sequence[str]) -> Snapshot | None:
        """The figures of ``windows`` (as (use, 0)) and the flags remembered set; None when one of
        them was never seen."""
        if self._sent:
            self._count()
        used, coming = self._used, self._coming
        usage = []
        for window in windows:
            key = window.key
            amount = used.get(key)
            if amount is None:
                return None
            usage.append((amount + coming[key] if key in coming else amount, 0))
        if not flag_keys:
            return Snapshot(usage, frozenset())
        known = self._flags
        if any(key not in known for key in flag_keys):
            return None
        return Snapshot(usage, frozenset(key for key in flag_keys if known[key]))

    def expect(self, keys: Sequence[str], changes: Sequence[int]) -> int:
        """A command was sent that will change the use of each counter of ``keys`` (the windows'
        keys) by ``changes``;
        returns its ticket for ``arrived``. Added to the figures only when they are recalled while
        it is still coming (alone in flight, as one call at a time is, it costs no more)."""
        self._tickets += 1
        self._sent[self._tickets] = keys, changes
        return self._tickets

    def arrived(self, ticket: int) -> None:
        """The command of ``ticket`` was answered (or failed): its changes are no longer coming."""
        if self._sent.pop(ticket, None) is not None:
            return
        keys, changes = self._counted.pop(ticket)
        coming = self._coming
        for key, change in zip(keys, changes, strict=True):
            if change:
                left = coming.get(key, 0) - change  # the changes to it may have summed to 0 meanwhile
                if left:
                    coming[key] = left
                else:
                    del coming[key]

    def _count(self) -> None:
        """Add the changes of the commands sent since the last recall to what is coming."""
        coming = self._coming
        for keys, changes in self._sent.values():
            for key, change in zip(keys, changes, strict=True):
                if change:  # absent stands for 0
                    coming[key] = coming.get(key, 0) + change
        self._counted.update(self._sent)
        self._sent.clear()

    def learn(self, keys: Sequence[str], used: Sequence[int],
              flag_keys: Sequence[str] = (), flags: frozenset[str] = frozenset()) -> None:
        """Remember the use (spent + reserved) of each counter of ``keys`` (the windows' keys) and
        which of ``flag_keys`` are set."""
        if len(self._used) + len(self._flags) >= self._limit:
            self._used.clear()  # what is coming stays: its commands are still to be answered
            self._flags.clear()
        if len(keys) != len(used):
            raise ValueError(f"{len(keys)} counters and {len(used)} figures")
        figures = self._used
        for key, use in zip(keys, used):  # noqa: B905 (lengths checked; faster than ``update`` of the pairs)
            figures[key] = use
        for key in flag_keys:
            self._flags[key] = key in flags
