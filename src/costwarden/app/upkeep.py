"""Keeping the counter store true while the gateway runs (SPEC section 10).

One background task per process, on a short tick:
- an emptied store (no generation marker) is rebuilt from the ledger by replacement, by one
  replica (a claim in the store); until then hard-checked calls are refused by the store itself;
- the replica's lease is renewed, and the calls of replicas whose lease ended are settled;
- settlements the store could not take are retried;
- reservations past their deadline are settled at their amounts (the last resort);
- the reconciler compares counters with the ledger and publishes the drift.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from costwarden.app.leases import LEASE_RENEW_S, LEASE_TTL_S, renew, settle_orphans
from costwarden.app.reconciler import RECONCILE_S, Reconciler
from costwarden.app.settings import Settings
from costwarden.core.policy import Policy
from costwarden.counters.base import CounterStore
from costwarden.engine.admission import Admission
from costwarden.engine.rebuild import new_marker, rebuild_counters
from costwarden.engine.settlements import PendingSettlements
from costwarden.errors import StorageError
from costwarden.ledger import Ledger

log = logging.getLogger(__name__)
REBUILD_CLAIM = "costwarden|rebuild"
# Another replica may take over a rebuild after this; two rebuilds at once are harmless (each sets
# the same figures), so the claim only spares the ledger a second read.
REBUILD_CLAIM_S = 15.0


@dataclass(frozen=True, slots=True)
class UpkeepTimes:
    """How often each duty runs, in seconds."""

    tick_s: float = 1.0  # emptied-store check and settlement retries
    lease_renew_s: float = LEASE_RENEW_S
    lease_ttl_s: float = LEASE_TTL_S
    expire_s: float = 30.0
    reconcile_s: float = RECONCILE_S

    @classmethod
    def of(cls, settings: Settings) -> UpkeepTimes:
        """The reconciliation interval and lease lifetime the settings give."""
        ttl = settings.lease_ttl_s
        return cls(reconcile_s=settings.reconcile_s, lease_ttl_s=ttl, lease_renew_s=min(LEASE_RENEW_S, ttl / 5))


async def ensure_built(policy: Policy, store: CounterStore, ledger: Ledger, now: datetime,
                       pending: PendingSettlements | None = None) -> bool:
    """Rebuild an emptied (or never built) store from the ledger, once across replicas; True
    when the store is built (by this replica or found so), False while another one rebuilds it.

    Settlements held in ``pending`` whose events a rebuild read from the ledger are not applied
    again: the counters equal the ledger afterwards, not the ledger plus the outage's spend."""
    marker = await store.marker()
    if marker is not None:
        if pending is not None and pending.build != marker:
            if pending.build is not None and len(pending):
                # Another replica rebuilt; when it read the ledger is unknown here. The spend of
                # calls let through unreserved (soft budgets only) found in the ledger now is taken
                # as counted: at worst a call that committed after that read is missed until the
                # reconciler, rather than a soft budget counted twice and alerting early. Settlements
                # of reservations (hard budgets too) are all applied: over-counting is the safe side.
                pending.counted(await ledger.recorded(pending.call_ids(unreserved_only=True)))
            pending.build = marker
        return True
    stamp = now.timestamp()
    if not await store.claim(REBUILD_CLAIM, stamp + REBUILD_CLAIM_S, stamp):
        return False
    # Looked up before the rebuild reads the ledger, so every event found is surely in its figures;
    # one committed in between is counted twice, the safe side, until the reconciler corrects it.
    counted = await ledger.recorded(pending.call_ids()) if pending is not None and len(pending) else set()
    marker = new_marker(now)
    cells = await rebuild_counters(policy, store, ledger, now, marker)
    if pending is not None:
        pending.counted(counted)
        pending.build = marker
    log.warning("the counter store had no counters: rebuilt %d counter cells from the ledger", cells)
    return True


class CounterUpkeep:
    """The background duties of one process over its store; ``run`` until cancelled."""

    def __init__(self, admission: Admission, ledger: Ledger, policy: Callable[[], Policy],
                 on_drift: Callable[[Mapping[str, int]], None], times: UpkeepTimes | None = None) -> None:
        self.admission = admission
        self.store = admission.store
        self.ledger = ledger
        self.policy = policy
        self.times = times or UpkeepTimes()
        self.reconciler = Reconciler(self.store, ledger, policy, admission.clock)
        self._on_drift = on_drift
        self._due: dict[str, float] = {}
        self._failing = False  # the store failed at the last tick (logged once, not every second)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.tick(loop.time())
            await asyncio.sleep(self.times.tick_s)

    async def tick(self, at: float) -> None:
        """Run every duty that is due at monotonic time ``at``; a failing store skips the rest."""
        times = self.times
        try:
            if self._is_due("lease", at, times.lease_renew_s):
                await renew(self.store, self.admission.clock().timestamp(), times.lease_ttl_s)
            if not await ensure_built(self.policy(), self.store, self.ledger, self.admission.clock(),
                                      self.admission.pending):
                return
            if len(self.admission.pending):
                await self.admission.pending.retry()
            if self._is_due("orphans", at, times.lease_renew_s):
                await settle_orphans(self.store, self.ledger, self.admission.clock())
            if self._is_due("expire", at, times.expire_s):
                stale = await self.store.expire(self.admission.clock().timestamp())
                if stale:
                    log.warning("settled %d stale reservations at their estimates", len(stale))
            if self._is_due("reconcile", at, times.reconcile_s):
                await self.reconciler.round()
                self._on_drift(self.reconciler.drift)
        except StorageError as exc:
            if not self._failing:
                log.warning("counter store upkeep: %s", exc)
            self._failing = True
            return
        if self._failing:
            log.warning("the counter store is available again")
        self._failing = False

    def _is_due(self, duty: str, at: float, every: float) -> bool:
        if at < self._due.get(duty, 0.0):
            return False
        self._due[duty] = at + every
        return True
