"""Counter stores, chosen by URL: ``memory://`` (in process) or ``redis://host:port/db`` (shared)."""

from __future__ import annotations

from costwarden.counters.base import Conflict, CounterStore, Reservation, Snapshot
from costwarden.counters.memory import MemoryCounterStore


def open_store(url: str | None) -> CounterStore:
    """The counter store for ``url``; ``None`` or ``memory://`` is the in-process store."""
    if url is None or url.startswith("memory://"):
        return MemoryCounterStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from costwarden.counters.redis import RedisCounterStore

        return RedisCounterStore.from_url(url)
    raise ValueError(f"unknown counter store URL {url!r}: use memory:// or redis://host:port/db")


__all__ = ["Conflict", "CounterStore", "MemoryCounterStore", "Reservation", "Snapshot", "open_store"]
