"""Alerts about what a key or department does (SPEC §13 ``anomaly`` and ``loop``), raised once
per scope and period across replicas, tripping the key's breaker when the rule says so.

The period of such an alert is the rule's ``breaker_for``, in fixed UTC steps: a loop that goes
on is told of again in the next period (and its breaker tripped again), never twice in one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from costwarden.app.ports import NotifyTargets
from costwarden.core.notifications import AlertKind, Behaviour, Notification
from costwarden.core.watch import breaker_key
from costwarden.engine.admission import Admission
from costwarden.errors import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sighting:
    """Behaviour a rule caught: of ``department`` (and ``key_id``, for a key) over ``window_s``."""

    kind: AlertKind
    department: str
    key_id: str | None
    window_s: int
    period_s: int  # the rule's breaker_for: the alert's period, and how long a breaker stays open
    trip: bool  # the rule trips the key's breaker

    @property
    def scope(self) -> str:
        return f"key:{self.department}/{self.key_id}" if self.key_id else f"dept:{self.department}"


class Tripwire:
    """Raises behaviour alerts: claims each once per scope and period in the counter store (so
    once across replicas), trips the key's breaker, and submits the notification."""

    def __init__(self, admission: Admission, submit: Callable[[Notification, NotifyTargets], None]) -> None:
        self.admission = admission
        self.submit = submit

    async def fire(self, sighting: Sighting, notify: NotifyTargets,
                   note: Callable[[Behaviour], Notification]) -> bool:
        """Raise ``sighting`` unless it was raised in this period; True when this call raised it."""
        now = self.admission.clock()
        bucket = int(now.timestamp()) // sighting.period_s
        start = datetime.fromtimestamp(bucket * sighting.period_s, UTC)
        end = start + timedelta(seconds=sighting.period_s)
        if not await self.admission.first(f"alert|{sighting.kind}|{sighting.scope}|{bucket}", end):
            return False
        until = await self._trip(sighting, now) if sighting.trip and sighting.key_id else None
        seen = Behaviour(sighting.scope, sighting.department, sighting.key_id, sighting.window_s, start, end, until)
        self.submit(note(seen), notify)
        return True

    async def _trip(self, sighting: Sighting, now: datetime) -> datetime | None:
        """Open the key's breaker for the rule's ``breaker_for``; None when the store cannot."""
        assert sighting.key_id is not None
        until = now + timedelta(seconds=sighting.period_s)
        try:
            await self.admission.store.set_flags([(breaker_key(sighting.department, sighting.key_id),
                                                   until.timestamp())])
        except StorageError as exc:
            log.warning("could not trip the breaker of %s: %s", sighting.scope, exc)
            return None
        log.warning("%s: breaker open until %s (%s)", sighting.scope, until.isoformat(), sighting.kind)
        return until
