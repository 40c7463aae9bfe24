"""Counter stores, chosen by URL: ``memory://`` (in process) or ``redis://host:port/db`` (shared)."""

from __future__ import annotations

from costwarden.counters.base import (
    Attempt,
    Conflict,
    CounterStore,
    Reservation,
    Settlement,
    Snapshot,
    StoreEmptied,
    Threshold,
)
from costwarden.counters.memory import MemoryCounterStore


def open_store(url: str | None, replica: str | None = None) -> CounterStore:
    """The counter store for ``url``, acting for ``replica`` (a fresh id when None); ``None`` or
    ``memory://`` is the in-process store. Either must be built (``replace``) before use."""
    if url is None or url.startswith("memory://"):
        return MemoryCounterStore(replica or "local", marker=None)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from costwarden.counters.redis import RedisCounterStore

        return RedisCounterStore.from_url(url, replica=replica)
    raise ValueError(f"unknown counter store URL {url!r}: use memory:// or redis://host:port/db")


__all__ = ["Attempt", "Conflict", "CounterStore", "MemoryCounterStore", "Reservation", "Settlement", "Snapshot",
           "StoreEmptied", "Threshold", "open_store"]
