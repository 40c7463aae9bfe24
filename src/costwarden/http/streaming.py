"""A metered streaming response: pumps upstream SSE through a StreamTap to the client.

It watches for the client going away, so that a disconnected stream stops the upstream (and its
cost) at once, and it always settles and records the call before the terminal event is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from costwarden.app.service import Streaming
from costwarden.core import events

log = logging.getLogger(__name__)


class _ClientGone(Exception):
    pass


class MeteredStream:
    def __init__(self, streaming: Streaming) -> None:
        self.streaming = streaming

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.streaming
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in s.headers.items()]
        status = events.CLIENT_DISCONNECT
        try:
            await send({"type": "http.response.start", "status": s.status, "headers": headers})
            status = await self._race(send, receive)
        except OSError:
            status = events.CLIENT_DISCONNECT
        finally:
            # shielded: a cancelled request still settles and records what it consumed
            await asyncio.shield(self._finish(status, send))

    async def _race(self, send: Send, receive: Receive) -> str:
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(_wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if pump in done:
            return pump.result()
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        return events.CLIENT_DISCONNECT

    async def _pump(self, send: Send) -> str:
        tap = self.streaming.tap
        try:
            async for chunk in self.streaming.reply.chunks:
                out = tap.feed(chunk)
                if out:
                    await _send_body(send, out, more=True)
        except _ClientGone:
            return events.CLIENT_DISCONNECT
        except Exception:  # the stream's edge: an upstream that breaks mid-stream is a cut stream
            log.warning("upstream stream broke off", exc_info=True)
            return events.STREAM_CUT
        return events.OK if tap.completed else events.STREAM_CUT

    async def _finish(self, status: str, send: Send) -> None:
        s = self.streaming
        try:
            await s.finish(status)
        finally:
            await s.resources.aclose()
        if status == events.CLIENT_DISCONNECT:
            return
        with contextlib.suppress(_ClientGone):
            await _send_body(send, s.tap.finish(), more=False)


async def _send_body(send: Send, body: bytes, *, more: bool) -> None:
    try:
        await send({"type": "http.response.body", "body": body, "more_body": more})
    except OSError as exc:
        raise _ClientGone from exc


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: dict[str, Any] = dict(await receive())
        if message["type"] == "http.disconnect":
            return
