"""The gateway's HTTP protocol closes a keep-alive connection idle for uvicorn's keep-alive timeout,
with one timer armed for many answers: never a connection busy with a request, nor one that
answered again since the timer was armed."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Receive, Scope, Send
from test_response_writes import REQUEST, Socket
from uvicorn.config import Config
from uvicorn.server import ServerState

from costwarden.http.timeouts import ReadLimits, TimedHttpToolsProtocol, TimedProtocolFactory

KEEP_ALIVE_S = 5


class Held:
    """An app whose answers wait until ``release``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


async def answer(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def connect(app: Any) -> tuple[TimedHttpToolsProtocol, Socket]:
    config = Config(app=app, lifespan="off", proxy_headers=False, access_log=False, timeout_keep_alive=KEEP_ALIVE_S)
    config.load()
    protocol = TimedProtocolFactory(ReadLimits())(config, ServerState(), {}, asyncio.get_running_loop())
    sock = Socket()
    protocol.connection_made(sock)
    return protocol, sock


async def request(protocol: TimedHttpToolsProtocol, *, answered: bool = True) -> None:
    protocol.data_received(REQUEST)
    cycle = protocol.cycle
    async with asyncio.timeout(5):
        while not (cycle.response_complete if answered else cycle.body):
            await asyncio.sleep(0)  # the answer is written by a task on this loop


def fire(protocol: TimedHttpToolsProtocol) -> float:
    """Run the keep-alive timer now, as if its time had come; the time it was armed for."""
    timer = protocol.timeout_keep_alive_task
    assert isinstance(timer, asyncio.TimerHandle)
    callback, args = timer._callback, timer._args  # type: ignore[attr-defined]
    timer.cancel()  # the loop does not run it again
    callback(*args)
    return timer.when()


async def test_an_idle_connection_is_closed_when_its_keep_alive_time_comes() -> None:
    protocol, sock = connect(answer)
    await request(protocol)
    until = protocol.loop.time() + KEEP_ALIVE_S
    assert fire(protocol) <= until
    assert sock.closed
    protocol.connection_lost(None)


async def test_a_connection_busy_with_a_request_is_left_open() -> None:
    app = Held()
    protocol, sock = connect(app)
    app.gate.set()
    await request(protocol)
    app.gate.clear()
    await request(protocol, answered=False)  # the next request arrived; its answer waits
    fire(protocol)
    assert not sock.closed and protocol.timeout_keep_alive_task is None
    app.gate.set()
    async with asyncio.timeout(5):
        while not protocol.cycle.response_complete:
            await asyncio.sleep(0)
    fire(protocol)  # armed again by the answer
    assert sock.closed
    protocol.connection_lost(None)


async def test_a_connection_that_answered_since_the_timer_was_armed_waits_for_its_own_time() -> None:
    protocol, sock = connect(answer)
    await request(protocol)
    first = protocol.timeout_keep_alive_task
    await request(protocol)
    assert protocol.timeout_keep_alive_task is first  # one timer for both answers
    armed_for = fire(protocol)
    assert not sock.closed
    assert protocol.timeout_keep_alive_task is not None
    assert protocol.timeout_keep_alive_task.when() > armed_for  # armed for the second answer's time
    fire(protocol)
    assert sock.closed
    protocol.connection_lost(None)
    assert protocol.timeout_keep_alive_task is None
