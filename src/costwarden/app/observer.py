"""Told about every call after it is recorded: metrics, and alerts for crossed thresholds; and
about every request as it arrives, for loop detection.

Nothing here may delay or fail a call: alerts go to a queue drained by a background task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from costwarden.app.loops import LoopWatch
from costwarden.app.metrics import Metrics
from costwarden.app.ports import NotifyTargets
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.notifications import Notification, threshold_notification
from costwarden.core.scopes import Caller
from costwarden.core.watch import LoopRule
from costwarden.engine.admission import Settled


class AlertSink(Protocol):
    def submit(self, notification: Notification, targets: tuple[str, ...]) -> None: ...

    async def drain(self) -> None: ...

    async def stop(self) -> None: ...


class CallObserver:
    """Metrics for every call; threshold alerts to the targets of the call's policy."""

    def __init__(self, metrics: Metrics, alerts: AlertSink, loops: LoopWatch | None = None) -> None:
        self.metrics = metrics
        self.alerts = alerts
        self.loops = loops

    def on_event(self, event: UsageEvent, settled: Settled | None, notify: NotifyTargets) -> None:
        self.metrics.on_event(event, settled)
        if settled is None or not settled.crossings:
            return
        for crossing in settled.crossings:
            check = crossing.check
            note = threshold_notification(check, crossing.fraction, crossing.spent, notify.timezone)
            self.alerts.submit(note, notify.targets(note.department))

    def on_rejection(self, rejection: Rejection) -> None:
        self.metrics.on_rejection(rejection)

    def on_request(self, caller: Caller, payload: Mapping[str, object], notify: NotifyTargets,
                   loop: LoopRule | None) -> None:
        if self.loops is not None and loop is not None:
            self.loops.on_request(caller, payload, loop, notify)

    def on_alert(self, notification: Notification, notify: NotifyTargets) -> None:
        self.alerts.submit(notification, notify.targets(notification.department))

    async def drain(self) -> None:
        await self.alerts.drain()

    async def stop(self) -> None:
        """Deliver what is queued (bounded), then close the channels."""
        await self.alerts.stop()
