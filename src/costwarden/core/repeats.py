"""Loop detection: the same request from the same key, again and again (SPEC §13 ``loop``).

Detection: the digest of a request's normalized body (its model and what it asks: ``messages``,
``input``, ``prompt``, ``system``; see ``app.tripwire.digest``) is counted per key from the first time it is seen; the count
starts over when that first sighting is older than the rule's window. A key that sends the same
body ``repeats`` times within the window is reported once for that run. Why this and not a
sliding window: one small entry per (key, body) and a dict lookup per call, where a sliding
window keeps a timestamp per call; the cost is that a run straddling the start of a new count
may need up to twice ``repeats`` calls to be seen, which a loop reaches at once anyway.

Bounded: at most ``max_entries`` (key, body) entries; when full, entries older than the window
go, and if that frees nothing every entry goes (a flood of distinct bodies is not a loop).
Pure: the caller gives the time.
"""

from __future__ import annotations

MAX_ENTRIES = 100_000


class Repeats:
    """Counts identical request bodies per key."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._max = max_entries
        self._seen: dict[tuple[str, int], list[float]] = {}  # (key, digest) -> [first seen, count]

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, key: str, body: int, now: float, window_s: float, repeats: int) -> bool:
        """Count one request of ``key`` with digest ``body`` at ``now``; True exactly when it is
        the ``repeats``-th of its run within ``window_s`` seconds."""
        return self.count(key, body, now, window_s) == repeats

    def count(self, key: str, body: int, now: float, window_s: float) -> int:
        """Count one request of ``key`` with digest ``body`` at ``now``: how many of its run so far."""
        entry = self._seen.get((key, body))
        if entry is None or now - entry[0] > window_s:
            if entry is None and len(self._seen) >= self._max:
                self._prune(now, window_s)
            self._seen[(key, body)] = [now, 1.0]
            return 1
        entry[1] += 1
        return int(entry[1])

    def _prune(self, now: float, window_s: float) -> None:
        self._seen = {k: v for k, v in self._seen.items() if now - v[0] <= window_s}
        if len(self._seen) >= self._max:
            self._seen.clear()
