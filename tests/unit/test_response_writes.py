"""The gateway's HTTP protocol writes a complete answer to the socket in one piece, the same bytes
uvicorn's own protocol writes in two, and leaves streams as they were."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
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


async def serve_one(app: Any, *, stock: bool = False, request: bytes = REQUEST,
                    cycles: list[weakref.ref[RequestResponseCycle]] | None = None) -> Socket:
    """Feed one request to a protocol serving ``app``; the socket once the answer is complete
    (``cycles``: gets a weak reference to the request's cycle)."""
    config = Config(app=app, lifespan="off", proxy_headers=False, access_log=False)
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    protocol = (HttpToolsProtocol(config, state, {}, loop) if stock
                else TimedProtocolFactory(ReadLimits())(config, state, {}, loop))
    sock = Socket()
    protocol.connection_made(sock)
    protocol.data_received(request)
    cycle = protocol.cycle
    assert cycle is not None
    if cycles is not None:
        cycles.append(weakref.ref(cycle))
    async with asyncio.timeout(5):
        while not cycle.response_complete and not sock.closed:
            await asyncio.sleep(0)  # the answer is written by a task on this loop
    for _ in range(3):
        await asyncio.sleep(0)  # the task's end (a failed answer is logged, then closed)
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


async def test_an_answered_cycle_is_freed_without_the_garbage_collector() -> None:
    # A reference cycle through it kept each call's cycle, scope, body and event alive until a
    # collection found them.
    cycles: list[weakref.ref[RequestResponseCycle]] = []
    gc.disable()
    try:
        await serve_one(whole, cycles=cycles)
        assert cycles[0]() is None
    finally:
        gc.enable()


class Sends:
    """Counts the calls of uvicorn's own ``send``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = RequestResponseCycle.send

        async def counted(cycle: RequestResponseCycle, message: Any) -> None:
            self.calls += 1
            await original(cycle, message)

        monkeypatch.setattr(RequestResponseCycle, "send", counted)


def answering(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_a_usual_answer_is_written_without_uvicorns_send(monkeypatch: pytest.MonkeyPatch) -> None:
    sends = Sends(monkeypatch)
    ours = await serve_one(whole)
    assert sends.calls == 0
    stock = await serve_one(whole, stock=True)
    assert sends.calls == 2
    assert ours.writes == [b"".join(stock.writes)]


# mostly what the gateway sends; now and then what uvicorn refuses, or interprets
names = st.one_of(st.sampled_from([b"x-request-id", b"X-Costwarden-Cost-USD", b"content-type", b"x-ok"]),
                  st.sampled_from([b"connection", b"transfer-encoding", b"bad name", b"bad:name", bytearray(b"x-ok")]))
values = st.one_of(st.sampled_from([b"req_1", b"0.000002", b"application/json", b"tab\tok", b""]),
                   st.sampled_from([b"close", b"chunked", b"keep-alive", b"a\nb", b"a\x00b"]))
requests = st.sampled_from([REQUEST, REQUEST.replace(b"Host: gw", b"Host: gw\r\nConnection: close"),
                            REQUEST.replace(b"POST /x HTTP/1.1", b"POST /x HTTP/1.0"),
                            b"HEAD /x HTTP/1.1\r\nHost: gw\r\n\r\n"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(status=st.sampled_from([200, 201, 204, 400, 429, 502, 599]),
       headers=st.lists(st.tuples(names, values), max_size=5),
       body=st.sampled_from([b"", b"{}", b'{"id": "x"}']),
       length=st.one_of(st.just("right"), st.sampled_from(["short", "long", "none", "twice", "odd"])),
       request=requests)
def test_every_answer_is_written_as_uvicorn_writes_it(status: int, headers: list[tuple[bytes, bytes]], body: bytes,
                                                      length: str, request: bytes) -> None:
    declared = {"right": [str(len(body)).encode()], "short": [str(len(body) + 1).encode()],
                "long": [str(max(0, len(body) - 1)).encode()], "none": [],
                "twice": [str(len(body)).encode(), b"999"], "odd": [b" %d" % len(body)]}[length]
    answer = [*headers, *((b"content-length", value) for value in declared)]

    async def both() -> tuple[Socket, Socket]:
        app = answering(status, answer, body)
        return await serve_one(app, request=request), await serve_one(app, stock=True, request=request)

    ours, stock = asyncio.run(both())
    assert b"".join(ours.writes) == b"".join(stock.writes)
    assert ours.closed_by_answer == stock.closed_by_answer
    assert ours.closed == stock.closed
