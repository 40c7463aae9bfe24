"""A metered streaming response: pumps upstream SSE through a StreamTap to the client.

It watches for the client going away. A disconnected stream is read on, without sending anything, for
at most ``DRAIN_S``: every token the upstream produced is counted, not only those delivered, and a
stream that ends within that time is charged its reported usage. Then the upstream connection is
closed (stopping its cost) before the call is settled. It always settles and records the call
before the terminal event is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.types import Receive, Scope, Send

from costwarden.app.service import Streaming
from costwarden.core.kinds import CallStatus
from costwarden.http.errors import ClientGone
from costwarden.http.headers import call_headers

log = logging.getLogger(__name__)

# How long a stream whose client left is still read. Tokens the upstream sends meanwhile are
# billed by it whether or not anyone reads them, so reading them costs nothing more and counts them.
DRAIN_S = 0.25


class MeteredStream:
    def __init__(self, streaming: Streaming, *, anthropic: bool = False) -> None:
        self.streaming = streaming
        # on the Messages API: Anthropic's rate-limit header names too
        self._headers = call_headers(streaming.receipt, anthropic=anthropic)
        self._headers += ((b"content-type", streaming.content_type.encode("latin-1")), (b"cache-control", b"no-cache"))
        self._gone = asyncio.Event()  # the client left: the pump counts, and sends nothing more

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        s = self.streaming
        status = CallStatus.CLIENT_DISCONNECT
        try:
            await send({"type": "http.response.start", "status": s.status, "headers": self._headers})
            status = await self._race(send, receive)
        except OSError:
            status = CallStatus.CLIENT_DISCONNECT
        finally:
            # shielded: a cancelled request still settles and records what it consumed
            await asyncio.shield(self._finish(status, send))

    async def _race(self, send: Send, receive: Receive) -> CallStatus:
        pump = asyncio.create_task(self._pump(send))
        watch = asyncio.create_task(_wait_for_disconnect(receive))
        gone = asyncio.create_task(self._gone.wait())
        try:
            done, _ = await asyncio.wait({pump, watch, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            gone.cancel()
        if pump in done:
            return pump.result()
        self._gone.set()
        done, _ = await asyncio.wait({pump}, timeout=DRAIN_S)
        if not done:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        return CallStatus.CLIENT_DISCONNECT

    async def _pump(self, send: Send) -> CallStatus:
        tap = self.streaming.tap
        try:
            async for chunk in self.streaming.reply.chunks:
                out = tap.feed(chunk)
                if out and not self._gone.is_set():
                    try:
                        await _send_body(send, out, more=True)
                    except ClientGone:
                        self._gone.set()  # _race bounds the reading from here on
        except Exception:  # the stream's edge: an upstream that breaks mid-stream is a cut stream
            log.warning("upstream stream broke off", exc_info=True)
            return CallStatus.CLIENT_DISCONNECT if self._gone.is_set() else CallStatus.STREAM_CUT
        if self._gone.is_set():
            return CallStatus.CLIENT_DISCONNECT
        return CallStatus.OK if tap.completed else CallStatus.STREAM_CUT

    async def _finish(self, status: CallStatus, send: Send) -> None:
        s = self.streaming
        if status == CallStatus.CLIENT_DISCONNECT:
            # Stop the upstream (and its cost) first: an open connection goes on producing
            # unread tokens while the ledger write is made.
            try:
                await s.resources.aclose()
            finally:
                await s.finish(status)
            return
        try:
            await s.finish(status)
        finally:
            await s.resources.aclose()
        with contextlib.suppress(ClientGone):
            await _send_body(send, s.tap.finish(), more=False)


async def _send_body(send: Send, body: bytes, *, more: bool) -> None:
    try:
        await send({"type": "http.response.body", "body": body, "more_body": more})
    except OSError as exc:
        raise ClientGone from exc


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message: dict[str, Any] = dict(await receive())
        if message["type"] == "http.disconnect":
            return
