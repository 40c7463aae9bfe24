"""Until when a replica had its Redis counters kept, so that its reservations need not say.

A counter's key expires (garbage collection only) an hour past the latest keep-until a
reservation gave it: its window's end, or the reservation's deadline when later. Reading a
counter's expiry and moving it cost Redis more than the rest of a reservation, while nearly every
reservation found nothing to move. So a replica remembers, per counter key, a keep-until it had
the counter kept for; a reservation whose counters are all known kept past its deadline and their
windows' ends says nothing of expiries. When it says, it asks for ``KEEP_SLACK_MS`` more than
needed, so that the calls of the next minutes need not.

What is remembered stays true because a key's expiry only ever moves later, unless the key is
lost: a store emptied is a new build, on which the replica forgets it all; a key deleted or
evicted alone is found missing by the reservation that would make it anew, which then holds
nothing, so that it is sent again with its keep-until (``lua/reserve.lua``).
"""

from __future__ import annotations

from collections.abc import Sequence

KEEP_SLACK_MS = 600_000  # how much longer than it must a reservation asks its counters to be kept
KEPT_LIMIT = 10_000  # counters remembered at most (forgotten wholesale when full: only asked again)
FOREVER = 2**62  # the horizon of a reservation without counters (ms)


def keep_targets(untils: Sequence[int], deadline: int) -> list[int]:
    """The keep-until (ms) to ask for each counter of windows ending at ``untils`` (ms), held by
    a reservation ending at ``deadline`` (ms)."""
    return [(until if until > deadline else deadline) + KEEP_SLACK_MS for until in untils]


class KeptCounters:
    """Counter key -> a keep-until (ms) this replica had it kept for, at least."""

    __slots__ = ("_limit", "_until")

    def __init__(self, limit: int = KEPT_LIMIT) -> None:
        self._until: dict[str, int] = {}
        self._limit = limit

    def horizon(self, counters: Sequence[str], untils: Sequence[int]) -> int:
        """The latest reservation deadline (ms) for which every one of ``counters`` is known kept,
        past it and past its window's end (``untils``, ms); 0 when one is not known so."""
        kept, horizon = self._until, FOREVER
        for counter, until in zip(counters, untils, strict=True):
            at = kept.get(counter, 0)
            if at < until:
                return 0
            horizon = min(horizon, at)
        return horizon

    def remember(self, counters: Sequence[str], targets: Sequence[int]) -> int:
        """``counters`` were kept for ``targets`` (ms); returns the horizon that gives them."""
        kept = self._until
        if len(kept) >= self._limit:
            kept.clear()
        for counter, target in zip(counters, targets, strict=True):
            if kept.get(counter, 0) < target:
                kept[counter] = target
        return min(targets, default=FOREVER)

    def forget(self) -> None:
        """Forget everything (a new build: the counters may have been lost with the old one)."""
        self._until.clear()
