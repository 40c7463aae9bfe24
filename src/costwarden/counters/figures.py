"""What a shared store's counters held when this process last saw them, to decide on without asking.

Admission decides on these remembered figures and sends the reservation at once; the store's
answer carries the figures it really held, so a decision made on stale ones is found out in the
same round trip and made again (``engine/admission.py``). Nothing is ever enforced on them.
"""

from __future__ import annotations

from collections.abc import Sequence

from costwarden.core.periods import Window
from costwarden.counters.base import Snapshot

FIGURES_LIMIT = 100_000  # counters and flags remembered at most (forgotten wholesale when full)


class Figures:
    """The last seen use (spent + reserved) per counter key and state per flag key."""

    __slots__ = ("_flags", "_limit", "_used")

    def __init__(self, limit: int = FIGURES_LIMIT) -> None:
        self._used: dict[str, int] = {}
        self._flags: dict[str, bool] = {}
        self._limit = limit

    def recall(self, windows: Sequence[Window], flag_keys: Sequence[str]) -> Snapshot | None:
        """The remembered figures of ``windows`` (as (use, 0)) and the flags remembered set; None
        when one of them was never seen."""
        used = self._used
        usage = []
        for window in windows:
            amount = used.get(window.key)
            if amount is None:
                return None
            usage.append((amount, 0))
        if not flag_keys:
            return Snapshot(usage, frozenset())
        known = self._flags
        if any(key not in known for key in flag_keys):
            return None
        return Snapshot(usage, frozenset(key for key in flag_keys if known[key]))

    def learn(self, windows: Sequence[Window], used: Sequence[int],
              flag_keys: Sequence[str] = (), flags: frozenset[str] = frozenset()) -> None:
        """Remember the use (spent + reserved) of each of ``windows`` and which of ``flag_keys`` are set."""
        if len(self._used) + len(self._flags) >= self._limit:
            self._used.clear()
            self._flags.clear()
        self._used.update(zip([window.key for window in windows], used, strict=True))
        for key in flag_keys:
            self._flags[key] = key in flags
