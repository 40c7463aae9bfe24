"""The ports of the gateway service: what it needs from the ledger, the upstreams and the
observers, as Protocols. ``bootstrap`` plugs in the concrete adapters; tests plug in fakes.

The counter store's port is ``costwarden.counters.CounterStore``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol
from zoneinfo import ZoneInfo

from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.notifications import Notification
from costwarden.core.scopes import Caller
from costwarden.core.watch import LoopRule
from costwarden.engine.admission import Settled
from costwarden.providers import Reply, StreamingReply


class UsageLedger(Protocol):
    """The part of the ledger the hot path writes to."""

    def check_accepting(self) -> None:
        """Raise StorageError while the ledger cannot take a new call's rows (checked before
        forwarding, so that a call is refused rather than served unrecorded)."""
        ...

    def begin(self, call: InflightCall) -> None:
        """Queue the write-ahead row of a call about to be forwarded; does not wait."""
        ...

    def queue(self, event: UsageEvent) -> Awaitable[None]:
        """Hand ``event`` to be made durable now; the awaitable completes once it is."""
        ...

    async def record_rejection(self, rejection: Rejection) -> None:
        """Make a refused call's record durable."""
        ...


class UpstreamClient(Protocol):
    """Sends calls to the upstreams a policy names (``providers.UpstreamPool``)."""

    async def post(self, upstream_name: str, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """POST ``body`` and read the whole answer; UpstreamError when unreachable."""
        ...

    def stream(self, upstream_name: str, path: str, body: bytes,
               headers: Mapping[str, str]) -> AbstractAsyncContextManager[StreamingReply]:
        """POST ``body`` and hand out the answer while it arrives."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...


class Observer(Protocol):
    """Metrics and alerts: told about every event; must never block or fail a call."""

    def on_event(self, event: UsageEvent, settled: Settled | None, notify: NotifyTargets) -> None: ...

    def on_rejection(self, rejection: Rejection) -> None: ...

    def on_request(self, caller: Caller, payload: Mapping[str, object], notify: NotifyTargets,
                   loop: LoopRule | None) -> None:
        """A request arrived (before admission), for ``loop`` detection; must cost next to nothing."""
        ...

    def on_alert(self, notification: Notification, notify: NotifyTargets) -> None:
        """An enforcement alert (a budget exhausted, a restriction started) to deliver."""
        ...


class NotifyTargets(Protocol):
    """Where a department's alerts go, and the zone their dates are told in (the call's policy)."""

    @property
    def timezone(self) -> ZoneInfo: ...

    def targets(self, department: str | None) -> tuple[str, ...]: ...
