"""The request-path part of the ``loop`` alert (SPEC §13): the same request from one key again
and again. Detection is described in ``core.repeats``.

Per call: one digest of what the request asks and one dict lookup; nothing else unless the
request repeats one this process has seen within the window. With a shared counter store
(Redis), repeats are also added to a shared rolling counter per key and body, so that a client
spread over several replicas is caught as soon as their counts together reach ``repeats``: a
request seen only once on a replica costs no round trip, and a repeated one costs two, in a task
of its own (coalesced per key and body), never in the call. A loop found is raised through the
``Tripwire`` (once per key and period across replicas, the breaker tripped if the rule says so).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from costwarden.app.ports import NotifyTargets
from costwarden.app.tripwire import Sighting, Tripwire
from costwarden.core.notifications import AlertKind, loop_notification
from costwarden.core.periods import Period
from costwarden.core.repeats import Repeats
from costwarden.core.scopes import Caller
from costwarden.core.watch import LoopRule
from costwarden.errors import StorageError

log = logging.getLogger(__name__)
_Body = tuple[str, str, int]  # department, key id, digest
_UTC = ZoneInfo("UTC")  # a rolling window does not depend on the zone


class LoopWatch:
    """Counts each key's repeated requests and raises a loop in a task of its own, so the call
    never waits for the store or the alert. ``shared``: add repeats to the counter store too."""

    def __init__(self, tripwire: Tripwire, *, shared: bool = False, repeats: Repeats | None = None,
                 seconds: Callable[[], float] = time.monotonic) -> None:
        self.tripwire = tripwire
        self.shared = shared
        self.repeats = repeats or Repeats()
        # Counts only need this process's elapsed seconds: a monotonic float is read in a fraction
        # of the time a datetime takes to make.
        self.seconds = seconds
        self._pending: dict[_Body, int] = {}  # repeats not yet added to the shared counter
        self._raised: dict[_Body, float] = {}  # when a shared count last reached the rule's repeats
        self._tasks: set[asyncio.Task[None]] = set()

    def on_request(self, caller: Caller, payload: Mapping[str, object], rule: LoopRule | None,
                   notify: NotifyTargets) -> None:
        """Count one request of ``caller``'s key under ``rule`` (None: loops are not watched)."""
        if rule is None or caller.key_id is None:
            return
        body, now = digest(payload), self.seconds()
        count = self.repeats.count(caller.key_id, body, now, rule.window_s)
        if not self.shared:
            if count == rule.repeats:
                self._start(self._raise(caller.department, caller.key_id, rule, notify))
            return
        if count < 2:  # seen once here: nothing to share yet
            return
        key = (caller.department, caller.key_id, body)
        pushing = key in self._pending
        self._pending[key] = self._pending.get(key, 0) + (2 if count == 2 else 1)  # the first sighting too
        if not pushing:
            self._start(self._share(key, rule, notify))

    async def _share(self, key: _Body, rule: LoopRule, notify: NotifyTargets) -> None:
        """Add this replica's repeats of ``key`` to the shared counter (those that arrive meanwhile
        too), and raise the loop when the shared count reaches the rule's repeats."""
        department, key_id, body = key
        store = self.tripwire.admission.store
        period = Period(text=f"{rule.window_s}s", kind="rolling", seconds=rule.window_s)
        try:
            while (amount := self._pending.get(key, 0)) > 0:
                self._pending[key] = 0
                now = self.tripwire.admission.clock()
                window = period.window(f"loop|{department}/{key_id}|{body:08x}", now, _UTC)
                await store.load([(window, amount)])
                total = (await store.snapshot([window], (), now.timestamp())).usage[0][0]
                if total >= rule.repeats and self.seconds() - self._raised.get(key, -1e18) > rule.window_s:
                    self._raised[key] = self.seconds()
                    await self._raise(department, key_id, rule, notify)
        except StorageError as exc:
            log.debug("loop counts of key %s not shared: %s", key_id, exc)
        finally:
            self._pending.pop(key, None)
            if len(self._raised) > 10_000:
                self._raised.clear()

    async def _raise(self, department: str, key_id: str, rule: LoopRule, notify: NotifyTargets) -> None:
        sighting = Sighting(AlertKind.LOOP, department, key_id, rule.window_s, rule.breaker_s, rule.trip_breaker)
        await self.tripwire.fire(sighting, notify, partial(loop_notification, repeats=rule.repeats,
                                                           tz=notify.timezone))

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def digest(payload: Mapping[str, object]) -> int:
    """A digest of what a request asks (its model, messages, input, prompt, system): fields that
    differ between identical asks (``user``, ``metadata``, ``stream``...) are left out. CRC-32 of
    its JSON: the same on every replica, and a collision only merges two bodies of one key."""
    get = payload.get
    return zlib.crc32(orjson.dumps((get("model"), get("messages"), get("input"), get("prompt"), get("system"))))
