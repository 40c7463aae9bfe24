"""The CounterStore contract: atomic multi-counter reservations over windowed counters.

A counter is named by a ``Window``: its key, and for rolling windows the current bucket and how
many buckets it spans. Each bucket holds settled spend and in-flight reservations. Every backend
(memory, Redis) passes the same contract tests in ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from costwarden.core.decision import Hold
from costwarden.core.periods import Window


@dataclass(frozen=True, slots=True)
class Reservation:
    """Amounts held on counters for one call until it is settled or released."""

    id: str
    holds: tuple[Hold, ...]
    expires_at: float  # epoch seconds; a reservation still open then is settled at its amount


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reservation refused because hold ``index`` would pass its limit (``used`` already there)."""

    index: int
    used: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    usage: list[tuple[int, int]]  # (spent, reserved) per requested window
    flags: frozenset[str]


class CounterStore(Protocol):
    """Where spend, reservations, rate windows and flags live (one process, or shared)."""

    async def snapshot(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot:
        """Spent and reserved per window, and which of ``flag_keys`` are set at ``now``."""
        ...

    async def reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float) -> Reservation | Conflict:
        """Hold every amount at once, or none: each hold with a limit must still fit under it.

        Reserving an id that is still held returns that reservation unchanged (safe to retry).
        """
        ...

    async def settle(self, reservation: Reservation, amounts: Sequence[int]) -> list[tuple[int, int]]:
        """Replace each hold by its actual amount; returns settled spend (before, after) per hold."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Drop the holds of a call that will not be charged."""
        ...

    async def set_flags(self, flags: Sequence[tuple[str, float]]) -> None:
        """Set flags (key, expires_at epoch seconds), e.g. a tripped tier restriction."""
        ...

    async def claim(self, key: str, expires_at: float, now: float) -> bool:
        """Set ``key`` if absent; True for the first caller only (alert de-duplication)."""
        ...

    async def expire(self, now: float) -> list[Reservation]:
        """Settle reservations whose deadline passed at their reserved amounts; return them."""
        ...

    async def load(self, spend: Iterable[tuple[Window, int]]) -> None:
        """Add settled spend to the bucket each window names (rebuilding counters from the ledger)."""
        ...

    async def ping(self) -> None:
        """Raise StorageError when the store cannot be reached."""
        ...

    async def close(self) -> None: ...
