"""The CounterStore contract: atomic multi-counter reservations over windowed counters.

A counter is named by a ``Window``: its key, and for rolling windows the current bucket and how
many buckets it spans. Each bucket holds settled spend and in-flight reservations. Every backend
(memory, Redis) passes the same contract tests in ``tests/contract``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from costwarden.core.decision import Hold
from costwarden.core.periods import Window
from costwarden.errors import StorageError


class StoreEmptied(StorageError):
    """The store lost its counters (restarted without persistence, flushed, failed over): it
    has no generation marker. Nothing may be decided on it until it is rebuilt from the ledger."""


# Reservation and Snapshot are made on every call: plain slotted dataclasses (a frozen one sets each
# field through object.__setattr__); treat them as immutable all the same.


@dataclass(slots=True)
class Reservation:
    """Amounts held on counters for one call until it is settled or released."""

    id: str
    holds: tuple[Hold, ...]
    expires_at: float  # epoch seconds; a reservation still open then is settled at its amount
    owner: str = ""  # the replica that made it: its reservations are released when its lease ends


@dataclass(frozen=True, slots=True)
class Conflict:
    """A reservation refused because hold ``index`` would pass its limit (``used`` already there)."""

    index: int
    used: int


@dataclass(slots=True)
class Snapshot:
    usage: list[tuple[int, int]]  # (spent, reserved) per requested window
    flags: frozenset[str]


@dataclass(slots=True)
class Attempt:
    """A reservation tried, and what the store held when it was tried: (spent, reserved) per hold
    just before it (None for an id held already, a retried call) and which flags were set."""

    outcome: Reservation | Conflict
    usage: list[tuple[int, int]] | None
    flags: frozenset[str]


@dataclass(frozen=True, slots=True)
class Threshold:
    """An alert level on one hold: settled spend crossing ``level`` claims flag ``key`` (until
    ``expires_at``) for the first settlement that crosses it, across every replica."""

    hold: int
    level: int
    key: str
    expires_at: float


@dataclass(slots=True)
class Settlement:
    """What a settlement moved: settled spend (before, after) per hold, and the indexes of the
    thresholds it claimed."""

    moved: list[tuple[int, int]]
    claimed: tuple[int, ...]


class CounterStore(Protocol):
    """Where spend, reservations, rate windows and flags live (one process, or shared).

    The counters belong to a build, named by a generation marker that ``replace`` sets. A store
    without one (emptied, or never built) raises ``StoreEmptied`` from every operation that reads
    or writes counters, so that it is rebuilt from the ledger before anything is decided on it.
    Each store acts for one replica (``replica``): it owns the reservations it makes.
    """

    @property
    def replica(self) -> str:
        """The id of the replica this store acts for (the owner of its reservations)."""
        ...

    async def snapshot(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot:
        """Spent and reserved per window, and which of ``flag_keys`` are set at ``now``."""
        ...

    def remembered(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot | None:
        """``snapshot`` as this process last saw it, without a round trip: exact for an
        in-process store, possibly stale for a shared one (nothing is enforced on it: the
        store's answer to ``try_reserve`` tells). None when some of it was never seen."""
        ...

    async def buckets(self, windows: Sequence[Window]) -> list[list[tuple[int, int]]]:
        """The non-empty buckets of each rolling window, oldest first, as (bucket, spent +
        reserved): when each part of a window's use leaves it. Read only for a call a rate
        limit refuses, to tell it exactly when to retry."""
        ...

    async def reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float) -> Reservation | Conflict:
        """Hold every amount at once, or none: each hold with a limit must still fit under it.

        Reserving an id that is still held returns that reservation unchanged (safe to retry).
        """
        ...

    async def try_reserve(self, reservation_id: str, holds: Sequence[Hold], expires_at: float,
                          flag_keys: Sequence[str], now: float) -> Attempt:
        """``reserve``, answering also with the counters of ``holds`` as they were just before it
        and which of ``flag_keys`` are set at ``now``, whether it was held or refused."""
        ...

    async def settle(self, reservation: Reservation, amounts: Sequence[int]) -> list[tuple[int, int]]:
        """Replace each hold by its actual amount; returns settled spend (before, after) per hold."""
        ...

    async def settle_claiming(self, reservation: Reservation, amounts: Sequence[int],
                              thresholds: Sequence[Threshold], now: float) -> Settlement:
        """``settle``, and ``claim`` (at ``now``) each threshold whose level the settled spend of
        its hold crossed (before < level <= after). A reservation settled already moves nothing."""
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
        """Add settled spend to the bucket each window names (the counters of a budget a reload added)."""
        ...

    async def marker(self) -> str | None:
        """The generation marker of the counters' build; None when the store was emptied."""
        ...

    async def replace(self, spend: Iterable[tuple[Window, int]], marker: str,
                      expected: Mapping[str, int] | None = None) -> int:
        """Set settled spend to exactly ``spend`` (the ledger's figures, per bucket), never adding
        to what is there: every other bucket's settled spend becomes 0; reservations stay.

        Without ``expected`` (a rebuild): every counter is replaced, then the marker is set to
        ``marker``, and this store's own reservations lost with an emptied store are held again.
        With ``expected`` (a correction under the current build): only the counters named in it,
        and only those whose settled total is still the expected one. Returns how many counters
        were left alone because their total had moved.
        """
        ...

    async def renew_lease(self, expires_at: float) -> None:
        """Keep this store's replica alive until ``expires_at``."""
        ...

    async def end_lease(self, replica: str) -> None:
        """Forget ``replica``'s lease (it stopped, or its reservations were released)."""
        ...

    async def expired_leases(self, now: float) -> list[str]:
        """The replicas whose lease ended before ``now`` and was not ended by ``end_lease``."""
        ...

    async def owned_by(self, replica: str) -> list[Reservation]:
        """The open reservations that ``replica`` made."""
        ...

    async def ping(self) -> None:
        """Raise StorageError when the store cannot be reached."""
        ...

    async def close(self) -> None: ...
