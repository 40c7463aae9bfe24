"""Told about every call after it is recorded: metrics, and alerts for crossed thresholds.

Nothing here may delay or fail a call: alerts go to a queue drained by a background task.
"""

from __future__ import annotations

from typing import Protocol

from costwarden.app.metrics import Metrics
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.notifications import Notification, threshold_notification
from costwarden.engine.admission import Admission, Settled


class AlertSink(Protocol):
    def submit(self, notification: Notification, targets: tuple[str, ...]) -> None: ...

    async def drain(self) -> None: ...

    async def stop(self) -> None: ...


class CallObserver:
    def __init__(self, metrics: Metrics, alerts: AlertSink, admission: Admission) -> None:
        self.metrics = metrics
        self.alerts = alerts
        self.admission = admission

    def on_event(self, event: UsageEvent, settled: Settled | None) -> None:
        self.metrics.on_event(event, settled)
        if settled is None or not settled.crossings:
            return
        policy = self.admission.policy
        for crossing in settled.crossings:
            note = threshold_notification(crossing.check, crossing.fraction, crossing.spent, policy.timezone)
            self.alerts.submit(note, self._targets(note.department))

    def on_rejection(self, rejection: Rejection) -> None:
        self.metrics.on_rejection(rejection)

    def _targets(self, department: str | None) -> tuple[str, ...]:
        policy = self.admission.policy
        if department is None:
            return policy.organization_notify
        dept = policy.departments.get(department)
        return dept.notify if dept is not None else ()

    async def drain(self) -> None:
        await self.alerts.drain()

    async def stop(self) -> None:
        """Deliver what is queued (bounded), then close the channels."""
        await self.alerts.stop()
