"""A TCP relay in front of a server that can hold back the next answer it sends.

It puts a real network delay where a test needs one: a request the server has carried out whose
answer has not reached the client yet.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class AnswerGate:
    """Relays every connection to ``target_port``; ``hold_next`` keeps the next answer back until
    ``release``. Requests relayed while an answer is held are kept for ``sent``."""

    target_port: int
    port: int = 0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    _server: asyncio.Server | None = None
    _holding: bool = False
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _requests: list[bytes] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> AnswerGate:
        self._open.set()
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def hold_next(self) -> None:
        self._holding, self._requests = True, []
        self.held.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def sent(self, needle: bytes, timeout_s: float) -> bool:
        """Whether a request holding ``needle`` is relayed within ``timeout_s`` while an answer is held."""
        async with self._arrived:
            try:
                await asyncio.wait_for(self._arrived.wait_for(lambda: any(needle in r for r in self._requests)),
                                       timeout_s)
            except TimeoutError:
                return False
        return True

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pumps = [asyncio.create_task(self._requests_to(client_reader, server_writer)),
                 asyncio.create_task(self._answers_to(server_reader, client_writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (client_writer, server_writer):
                writer.close()

    async def _requests_to(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
            if not self._open.is_set():
                async with self._arrived:
                    self._requests.append(chunk)
                    self._arrived.notify_all()

    async def _answers_to(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            if self._holding:  # this answer is the one to hold
                self._holding = False
                self.held.set()
                await self._open.wait()
            writer.write(chunk)
            await writer.drain()
