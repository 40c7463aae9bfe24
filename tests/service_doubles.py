"""Stand-ins for the service's ports that are not our storage: an upstream that answers every
call alike, and an observer that keeps what it is told."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import orjson

from costwarden.core.events import Rejection, UsageEvent
from costwarden.engine.admission import Settled
from costwarden.providers import Reply, StreamingReply

ANSWER = {"id": "x", "object": "chat.completion", "model": "gpt-4o-mini",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}


class FakeUpstream:
    """Answers every call with ``body``; a stream yields ``chunks``."""

    def __init__(self, body: bytes = orjson.dumps(ANSWER), chunks: tuple[bytes, ...] = ()) -> None:
        self.body = body
        self.chunks = chunks
        self.calls = 0

    async def post(self, upstream_name: str, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        self.calls += 1
        return Reply(200, {"content-type": "application/json"}, self.body)

    @asynccontextmanager
    async def stream(self, upstream_name: str, path: str, body: bytes,
                     headers: Mapping[str, str]) -> AsyncIterator[StreamingReply]:
        self.calls += 1

        async def chunks() -> AsyncIterator[bytes]:
            for chunk in self.chunks:
                yield chunk

        yield StreamingReply(200, {"content-type": "text/event-stream"}, chunks())

    async def aclose(self) -> None:
        pass


class FakeObserver:
    """Keeps the events and alerts it is told of."""

    def __init__(self) -> None:
        self.events: list[UsageEvent] = []
        self.alerts: list[object] = []

    def on_event(self, event: UsageEvent, settled: Settled | None, notify: object) -> None:
        self.events.append(event)

    def on_rejection(self, rejection: Rejection) -> None:
        pass

    def on_request(self, caller: object, payload: object, notify: object, loop: object) -> None:
        pass

    def on_alert(self, notification: object, notify: object) -> None:
        self.alerts.append(notification)
