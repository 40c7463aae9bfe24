"""Replica leases: a replica that stops renewing its lease has its calls settled by the others.

Every replica renews a lease in the shared store every ``LEASE_RENEW_S``; a lease lasts
``LEASE_TTL_S``. When one ends (the replica was killed, or cut off for that long), any live
replica claims it once, settles the dead replica's write-ahead rows in the ledger as
``interrupted`` at their estimates, and settles its reservations to agree: at their amounts where
the ledger now has the interrupted event, released where it has none (the call had not yet been
forwarded, or was forwarded so shortly before the replica died that its write-ahead row, still
in the writer's queue, never reached the ledger: see ``ledger/writer.py``). All within about
``LEASE_TTL_S`` plus one sweep, well under the reservation TTL.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from costwarden.counters.base import CounterStore
from costwarden.ledger import Ledger

log = logging.getLogger(__name__)
LEASE_RENEW_S = 2.0
LEASE_TTL_S = 10.0
CLAIM_S = 60.0  # how long one replica owns the settling of a dead one before another may retry


@dataclass(frozen=True, slots=True)
class Orphans:
    """What was settled for one dead replica."""

    replica: str
    interrupted: int  # calls settled at their estimates in the ledger and the counters
    released: int  # reservations with no write-ahead row: freed, not charged


async def renew(store: CounterStore, now: float, ttl_s: float = LEASE_TTL_S) -> None:
    """Keep this replica's lease until ``now + ttl_s``."""
    await store.renew_lease(now + ttl_s)


async def settle_orphans(store: CounterStore, ledger: Ledger, now: datetime) -> list[Orphans]:
    """Settle the calls of every replica whose lease ended (each dead replica once, whichever
    replica gets to it first)."""
    stamp = now.timestamp()
    settled: list[Orphans] = []
    for replica in await store.expired_leases(stamp):
        if replica == store.replica:
            continue  # this replica was late renewing: it is alive and settles its own calls
        if not await store.claim(f"orphans|{replica}", stamp + CLAIM_S, stamp):
            continue
        held = await store.owned_by(replica)
        events = await ledger.recover_interrupted(now, ids=[r.id for r in held]) if held else []
        interrupted = {event.id for event in events}
        for reservation in held:
            if reservation.id in interrupted:
                await store.settle(reservation, [hold.amount for hold in reservation.holds])
            else:
                await store.release(reservation)
        await store.end_lease(replica)
        orphans = Orphans(replica, len(interrupted), len(held) - len(interrupted))
        log.warning("replica %s stopped renewing its lease: %d calls settled interrupted, %d reservations released",
                    replica, orphans.interrupted, orphans.released)
        settled.append(orphans)
    return settled
