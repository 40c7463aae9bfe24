"""The alert outbox: ``submit()`` never waits, a background worker records and delivers.

A call only ever touches ``submit()``, which puts the notification on a bounded queue (dropping
the oldest when full), so a slow or failing channel can never delay or fail a call (SPEC 3.5).
The worker first records each notification in the ledger's alerts table, whose unique dedupe
key makes "fires once per budget, scope and period" hold across gateway replicas: only the
replica whose insert wins delivers. It then sends to every target at once, each under a timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from costwarden.alerts.channels import ALERT_LOGGER, Channels, channel_kind, describe
from costwarden.alerts.failures import DeliveryFailed
from costwarden.alerts.mail import SmtpSettings
from costwarden.clock import utc_now
from costwarden.core.notifications import Notification
from costwarden.errors import StorageError
from costwarden.ledger import AlertRecord

log = logging.getLogger(ALERT_LOGGER)
_Item = tuple[Notification, tuple[str, ...]]


class AlertLog(Protocol):
    """Where alerts are recorded once (the Ledger)."""

    async def record_alert(self, alert: AlertRecord) -> bool: ...


@dataclass(slots=True)
class DeliveryCounters:
    """Outcomes since start, per channel kind (``log``, ``webhook``, ``email``, ``unknown``)."""

    delivered: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # notifications already recorded (here or by another replica): not sent
    dropped: int = 0  # pushed out of a full queue before they were handled


def alert_record(notification: Notification, at: datetime) -> AlertRecord:
    """The ledger row of ``notification``."""
    threshold = None if notification.threshold is None else str(notification.threshold)
    return AlertRecord(at=at, kind=notification.kind, scope=notification.scope, text=notification.text,
                       dedupe_key=notification.dedupe_key, department=notification.department,
                       budget_index=notification.budget_index, period_start=notification.period_start,
                       threshold=threshold)


class AlertDispatcher:
    """An AlertSink. ``start()`` the worker, ``submit()`` from the event loop's thread,
    ``drain()`` to wait for everything submitted, ``stop()`` when done."""

    def __init__(self, ledger: AlertLog, smtp: SmtpSettings | None = None, *, queue_size: int = 1000,
                 concurrency: int = 8, delivery_timeout_s: float = 30.0, webhook_timeout_s: float = 5.0,
                 webhook_attempts: int = 3, backoff_s: float = 0.5,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.counters = DeliveryCounters()
        self._ledger = ledger
        self._channels = Channels(smtp, webhook_timeout_s=webhook_timeout_s, webhook_attempts=webhook_attempts,
                                  backoff_s=backoff_s, smtp_timeout_s=delivery_timeout_s)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        # Several notifications are handled at once so that one hanging endpoint holds one slot,
        # not every alert behind it.
        self._slots = asyncio.Semaphore(concurrency)
        self._timeout_s = delivery_timeout_s
        self._clock = clock
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        """Whether the background worker is up."""
        return self._worker is not None and not self._worker.done()

    def submit(self, notification: Notification, targets: tuple[str, ...]) -> None:
        """Queue ``notification`` for ``targets`` without waiting; when the queue is full the
        oldest waiting notification is dropped (and logged) to make room."""
        if self._queue.full():
            oldest, _ = self._queue.get_nowait()
            self._queue.task_done()
            self.counters.dropped += 1
            log.warning("alert queue full (%d): dropped %s alert for %s: %s", self._queue.maxsize,
                        oldest.kind, oldest.scope, oldest.text)
        self._queue.put_nowait((notification, tuple(targets)))

    async def start(self) -> None:
        """Start the background worker (once)."""
        if self.running:
            return
        self._worker = asyncio.create_task(self._work(), name="alert-dispatcher")
        if self._channels.smtp is None:
            log.info("alert e-mail is disabled (COSTWARDEN_SMTP_URL is not set): mailto: targets are skipped")

    async def drain(self) -> None:
        """Wait until every notification submitted so far is recorded and delivered (or failed).
        Returns at once when the worker is not running, as nothing would empty the queue."""
        if self.running:
            await self._queue.join()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Drain for up to ``timeout_s``, then cancel whatever is left and release connections."""
        if self._worker is None:
            await self._channels.aclose()
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self.drain()
        except TimeoutError:
            log.warning("stopping with %d alerts not delivered", self._queue.qsize() + len(self._tasks))
        tasks = [self._worker, *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._worker = None
        await self._channels.aclose()

    async def _work(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                item = await self._queue.get()
            except asyncio.CancelledError:
                self._slots.release()  # stopped while idle: leave the slots whole for a restart
                raise
            task = asyncio.create_task(self._process(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _process(self, item: _Item) -> None:
        notification, targets = item
        try:
            if await self._first_time(notification):
                await asyncio.gather(*(self._deliver(notification, target) for target in targets))
        except Exception:
            # The outermost edge of a background task: nothing an alert does may stop the worker.
            log.exception("alert %s for %s failed unexpectedly", notification.kind, notification.scope)
        finally:
            self._slots.release()
            self._queue.task_done()

    async def _first_time(self, notification: Notification) -> bool:
        """Record the alert; False when it was recorded before (here or on another replica)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                recorded = await self._ledger.record_alert(alert_record(notification, self._clock()))
        except (StorageError, TimeoutError) as exc:
            # Better a duplicate alert than a lost one: deliver when the ledger cannot say.
            log.warning("could not record %s alert for %s (%s); delivering it anyway",
                        notification.kind, notification.scope, str(exc) or type(exc).__name__)
            return True
        if not recorded:
            self.counters.duplicates += 1
            log.debug("alert %s already recorded: not sent again", notification.dedupe_key)
        return recorded

    async def _deliver(self, notification: Notification, target: str) -> None:
        kind = channel_kind(target)
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._channels.deliver(notification, target, self._clock())
        except DeliveryFailed as exc:
            self.counters.failed[kind] += 1
            log.warning("alert for %s not delivered: %s", notification.scope, exc)
        except TimeoutError:
            self.counters.failed[kind] += 1
            log.warning("alert for %s not delivered: %s timed out after %.1f s",
                        notification.scope, describe(target), self._timeout_s)
        except Exception:
            # A channel's library failing in a way it does not document must not stop the others.
            self.counters.failed[kind] += 1
            log.exception("alert for %s not delivered to %s", notification.scope, describe(target))
        else:
            self.counters.delivered[kind] += 1
