"""The gateway's HTTP protocol writes a complete answer to the socket in one piece, the same bytes
uvicorn's own protocol writes in two, and leaves streams as they were."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from costwarden.http.timeouts import ReadLimits, TimedProtocolFactory

REQUEST = b"POST /x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"


class Socket(asyncio.Transport):
    """A transport that records each write the protocol makes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.closed_by_answer = False  # closed before the connection was dropped

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def whole(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await PlainTextResponse("a complete answer", headers={"x-request-id": "req_1"})(scope, receive, send)


async def closing(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await PlainTextResponse("bye", headers={"connection": "close"})(scope, receive, send)


async def streamed(scope: Scope, receive: Receive, send: Send) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: 2\n\n"

    await receive()
    await StreamingResponse(pieces(), media_type="text/event-stream")(scope, receive, send)


async def serve_one(app: Any, *, stock: bool = False) -> Socket:
    """Feed one request to a protocol serving ``app``; the socket once the answer is complete."""
    config = Config(app=app, lifespan="off", proxy_headers=False, access_log=False)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    protocol = (HttpToolsProtocol(config, state, {}, loop) if stock
                else TimedProtocolFactory(ReadLimits())(config, state, {}, loop))
    sock = Socket()
    protocol.connection_made(sock)
    protocol.data_received(REQUEST)
    cycle = protocol.cycle
    assert cycle is not None
    async with asyncio.timeout(5):
        while not cycle.response_complete:
            await asyncio.sleep(0)  # the answer is written by a task on this loop
    sock.closed_by_answer = sock.closed
    protocol.connection_lost(None)
    return sock


async def test_a_complete_answer_is_one_write_of_the_bytes_uvicorn_writes_in_two() -> None:
    ours, stock = await serve_one(whole), await serve_one(whole, stock=True)
    assert len(stock.writes) == 2  # what is saved: uvicorn writes the head, then the body
    assert ours.writes == [b"".join(stock.writes)]
    assert ours.writes[0].endswith(b"\r\n\r\na complete answer")
    assert not ours.closed_by_answer


async def test_an_answer_that_closes_the_connection_is_written_before_the_close() -> None:
    ours, stock = await serve_one(closing), await serve_one(closing, stock=True)
    assert ours.writes == [b"".join(stock.writes)]
    assert ours.closed_by_answer and stock.closed_by_answer


async def test_a_stream_is_written_as_it_comes() -> None:
    ours, stock = await serve_one(streamed), await serve_one(streamed, stock=True)
    assert ours.writes == stock.writes
    assert len(ours.writes) > 2 and ours.writes[0].endswith(b"\r\n\r\n")  # the head goes out first
