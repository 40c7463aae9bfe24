"""The reconciler: compares budget counters with the ledger and corrects confirmed drift.

Each round reads every current budget counter, the ledger's settled spend, and the counters
again. Only settled spend is compared (reservations of calls in flight are not drift), and a
counter that moved while the ledger was read is not judged this round. A difference is drift when
two rounds in a row find the same amount on a counter unmoved while each read the ledger: a call
settled on the counters an instant before its event is committed is not, and traffic between the
rounds (which moves the counter and the ledger alike) does not hide real drift. Confirmed drift is
published per counter and, when ``correct`` is on, replaced by the ledger's figure, only if the
counter still holds what was read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from costwarden.core.periods import Window
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck
from costwarden.counters.base import CounterStore
from costwarden.engine.rebuild import ledger_spend, ledger_totals
from costwarden.ledger import Ledger

log = logging.getLogger(__name__)
RECONCILE_S = 30.0


@dataclass(frozen=True, slots=True)
class Drift:
    """A counter whose settled spend differs from the ledger's (``counter - ledger``, nano-units)."""

    key: str
    counter: int
    ledger: int

    @property
    def amount(self) -> int:
        return self.counter - self.ledger


@dataclass(slots=True)
class Reconciler:
    """One replica's reconciler; ``round`` is called every ``RECONCILE_S`` by the runtime."""

    store: CounterStore
    ledger: Ledger
    policy: Callable[[], Policy]
    clock: Callable[[], datetime]
    correct: bool = True
    drift: dict[str, int] = field(default_factory=dict)  # confirmed drift per counter key, 0 when healthy
    _suspects: dict[str, Drift] = field(default_factory=dict)
    _known: dict[str, Window] = field(default_factory=dict)  # the counters the last round read

    async def round(self) -> list[Drift]:
        """Compare every current budget counter with the ledger; returns the confirmed drift."""
        policy, now = self.policy(), self.clock()
        known = self._known
        before = await self._settled(known, now)
        spend = await ledger_spend(policy, self.ledger, now)
        totals = ledger_totals(spend)
        self._known = {key: check.window for key, (check, _) in totals.items()}
        after = await self._settled(self._known, now)
        suspects: dict[str, Drift] = {}
        confirmed: list[Drift] = []
        drift: dict[str, int] = {}
        for key, (_, ledger) in totals.items():
            counter = after[key]
            if key not in before or before[key] != counter:
                drift[key] = self.drift.get(key, 0)  # moved while the ledger was read: judge next round
                continue
            found = Drift(key, counter, ledger)
            suspect = self._suspects.get(key)
            if found.amount and suspect is not None and suspect.amount == found.amount:
                confirmed.append(found)
                drift[key] = found.amount
            else:
                drift[key] = 0
                if found.amount:
                    suspects[key] = found
        self._suspects, self.drift = suspects, drift
        if confirmed:
            log.warning("counters differ from the ledger: %s",
                        ", ".join(f"{d.key} {d.amount:+d}" for d in confirmed))
            if self.correct:
                await self._correct(confirmed, spend)
        return confirmed

    async def _settled(self, windows: dict[str, Window], now: datetime) -> dict[str, int]:
        keys = list(windows)
        snapshot = await self.store.snapshot([windows[k] for k in keys], [], now.timestamp())
        return {key: spent for key, (spent, _) in zip(keys, snapshot.usage, strict=True)}

    async def _correct(self, confirmed: list[Drift], spend: list[tuple[BudgetCheck, Window, int]]) -> None:
        wanted = {d.key: d.counter for d in confirmed}
        entries = [(window, amount) for _, window, amount in spend if window.key in wanted]
        marker = await self.store.marker()
        if marker is None:
            return  # emptied meanwhile: the rebuild replaces everything
        skipped = await self.store.replace(entries, marker, expected=wanted)
        log.warning("corrected %d counters to the ledger's figures (%d had moved)", len(wanted) - skipped, skipped)
