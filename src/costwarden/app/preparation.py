"""Work on a call done while its reservation is in flight.

While a shared counter store (Redis) answers a reservation, the gateway's thread has nothing to
do for the call. What the call does once admitted, building the request to send upstream and its
write-ahead record, depends on its decision, not on the store's answer: ``Preparation`` does it
in that wait, for the decision whose reservation was sent. The call uses the result only if it is
admitted with that very decision; otherwise (refused, decided again on the store's figures, or a
store that answered before the work ran) it does the work itself, as it would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from costwarden.core.decision import Decision

T = TypeVar("T")


class Preparation(Generic[T]):
    """``work(decision, admitted_at)`` run for the last decision sent, once the loop is free."""

    __slots__ = ("_at", "_decision", "_made", "_queued", "_work")

    def __init__(self, work: Callable[[Decision, datetime], T]) -> None:
        self._work = work
        self._decision: Decision | None = None
        self._at: datetime | None = None
        self._made: T | None = None
        self._queued = False

    def sending(self, decision: Decision, at: datetime) -> None:
        """``Admission.admit``'s ``sending``: prepare for ``decision`` after its reservation left."""
        self._decision, self._at, self._made = decision, at, None
        if not self._queued:
            self._queued = True
            loop = asyncio.get_running_loop()
            # Queued twice: the counter store writes a reservation from a callback it queues as the
            # reservation is sent (so that one write carries a loop turn's commands); the work
            # runs after that write, while the store answers, rather than before it is asked.
            loop.call_soon(loop.call_soon, self._run)

    def _run(self) -> None:
        self._queued = False
        decision, at = self._decision, self._at
        if decision is None or at is None or self._made is not None:
            return
        try:
            self._made = self._work(decision, at)
        except Exception:  # a loop callback's edge: the call meets this again doing the work itself
            self._decision = None

    def take(self, decision: Decision, at: datetime) -> T | None:
        """What was prepared for ``decision`` admitted at ``at``, or None (the caller does the
        work). A run still queued then does nothing."""
        made = self._made if decision is self._decision and at is self._at else None
        self._decision = self._made = None
        return made
