"""Read timeouts for uvicorn's httptools protocol: slow or incomplete requests are cut.

uvicorn closes idle keep-alive connections, but with httptools it waits forever for a request
head that never ends (slowloris) and for a body that never completes. Each such connection holds
a file descriptor; enough of them and real calls fail. ``TimedHttpToolsProtocol`` adds:

- a header deadline: a connection must deliver its whole request head within ``header_timeout_s``
  of connecting (or of the first byte of a later request on the same connection), else it is
  closed;
- a body deadline: the whole body must arrive within ``body_timeout_s`` of the head, else the
  call is answered 408 and the connection closed (the handler sees a disconnect);
- a cap on connections still sending their head: beyond ``max_pending``, the one waiting longest
  is closed, so that however fast an attacker opens connections, at most that many descriptors
  are held by them and the rest stay free for real calls, whose heads arrive in milliseconds.

Deadlines are totals, not idle timers, so a trickle of one byte every few seconds does not keep a
connection alive. A request that arrives in one piece arms no timer at all.

It also writes a complete answer (a head with content-length, then its whole body) to the socket
in one piece rather than two: uvicorn writes the head as soon as it is sent, and on loopback each
write costs the gateway a system call and the client a wake-up. An answer of the usual kind is
written by ``_write_whole``, the same bytes for less work; anything else goes through uvicorn's
own ``send``, whose writes are collected (``_coalesce``).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from operator import itemgetter
from typing import Any

import orjson
from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

BACKLOG = 4096  # connections the kernel queues before accept(); it caps this at net.core.somaxconn
# uvicorn's own checks of a header name and value match one byte each, so they are the bytes
# they refuse: deleting those from the names (values) joined changes the length exactly when a
# search of each would find one. bytes.translate does it at a table lookup per byte, where the
# regular expressions' character classes cost about 2 % of a call's instructions.
_BAD_NAME, _BAD_VALUE = (bytes(b for b in range(256) if pattern.match(bytes((b,)))) for pattern in (HEADER_RE,
                                                                                                 HEADER_VALUE_RE))
# Headers whose presence makes uvicorn's send do more than write them.
_UVICORN_INTERPRETS = frozenset({b"transfer-encoding", b"connection"})
_NAME, _VALUE = itemgetter(0), itemgetter(1)  # of an ASGI header pair


@dataclass(frozen=True, slots=True)
class ReadLimits:
    """How long a request may take to arrive, and how many connections may be mid-head at once."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_pending: int = 1024


class _Phase(Enum):
    IDLE = 0  # between requests (uvicorn's keep-alive timeout applies)
    HEAD = 1  # a request head has started but is not complete
    BODY = 2  # the head is complete, the body is not


class TimedProtocolFactory:
    """What uvicorn's ``http=`` is given: builds one protocol per connection, all sharing the
    server's (per process) registry of connections still sending their head."""

    def __init__(self, limits: ReadLimits) -> None:
        self.limits = limits
        self.pending: OrderedDict[TimedHttpToolsProtocol, None] = OrderedDict()

    def __call__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> TimedHttpToolsProtocol:
        return TimedHttpToolsProtocol(self, config, server_state, app_state, _loop)

    def __getstate__(self) -> ReadLimits:
        # Pickled into each worker process (uvicorn --workers), which keeps its own registry.
        return self.limits

    def __setstate__(self, limits: ReadLimits) -> None:
        self.limits = limits
        self.pending = OrderedDict()

    def hold(self, protocol: TimedHttpToolsProtocol) -> None:
        """``protocol`` waits for a request head; close the oldest such connection over the cap."""
        self.pending[protocol] = None
        while len(self.pending) > self.limits.max_pending:
            oldest, _ = self.pending.popitem(last=False)
            oldest.cut()

    def release(self, protocol: TimedHttpToolsProtocol) -> None:
        self.pending.pop(protocol, None)


class TimedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines (see the module docstring)."""

    def __init__(self, factory: TimedProtocolFactory, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._factory = factory
        self._phase = _Phase.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase = _Phase.IDLE
        # Keep-alive: when the connection, idle since its last answer, is to be closed (None: not
        # idle), and the time the one keep-alive timer is armed for (``on_response_complete``).
        self._idle_until: float | None = None
        self._keep_alive_armed_for = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that sends nothing at all is waiting for its first head.
        self._arm(_Phase.HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            self._disarm()
        elif self._phase is not self._deadline_phase:
            # Timers follow the phase the data left the request in; a complete request arms none.
            if self._phase is _Phase.IDLE:
                self._disarm()
            else:
                self._arm(self._phase)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEAD

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        self._phase = _Phase.BODY
        if self.cycle is not None and self.cycle is not before:
            _coalesce(self.cycle)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _Phase.IDLE

    def on_response_complete(self) -> None:
        """uvicorn's, with its keep-alive timer armed once for many answers: it armed a timer after
        every answer and cancelled it as the next request arrived, a timer heap insertion and
        removal per call. Here an answer notes when the connection's idleness would end it, and the
        timer, when it fires, closes the connection if that time has come, or is armed again for
        it (it finds a connection busy with a request left as it is: its answer arms it again)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_until = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_until = until = self.loop.time() + self.timeout_keep_alive
        if self.timeout_keep_alive_task is None:
            self._arm_keep_alive(until)

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn's cancels the keep-alive timer as data arrives; here the connection is only
        # no longer idle, and the timer stays for the next idle spell.
        self._idle_until = None

    def _arm_keep_alive(self, until: float) -> None:
        self._keep_alive_armed_for = until
        self.timeout_keep_alive_task = self.loop.call_at(until, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        until = self._idle_until
        if until is None:
            return
        # A timer may fire a fraction of a millisecond before the loop's clock reaches the time
        # it was armed for (uvloop rounds to whole milliseconds): that time counts as come.
        if until <= max(self._keep_alive_armed_for, self.loop.time()):
            self.timeout_keep_alive_handler()
        else:
            self._arm_keep_alive(until)

    def cut(self) -> None:
        """Close the connection now (over the pending cap, or past its header deadline)."""
        self._disarm()
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self, phase: _Phase) -> None:
        self._disarm()
        limits = self._factory.limits
        if phase is _Phase.HEAD:
            self._deadline = self.loop.call_later(limits.header_timeout_s, self.cut)
            self._factory.hold(self)
        else:
            self._deadline = self.loop.call_later(limits.body_timeout_s, self._body_timed_out)
        self._deadline_phase = phase

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._deadline_phase is _Phase.HEAD:
            self._factory.release(self)
        self._deadline_phase = _Phase.IDLE

    def _body_timed_out(self) -> None:
        """Answer 408 if the handler has not answered yet, and close; the handler reading the body
        sees a disconnect, so nothing is forwarded or charged."""
        self._deadline = None
        self._deadline_phase = _Phase.IDLE
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not self.transport.is_closing():
            self.transport.write(_timeout_response(self._factory.limits.body_timeout_s))
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()


class _Collected:
    """Stands in for a cycle's transport while uvicorn writes one complete answer."""

    __slots__ = ("closing", "parts")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:  # a connection: close answer; closed once the bytes are written
        self.closing = True


def _coalesce(cycle: RequestResponseCycle) -> None:
    """Make ``cycle`` write a complete answer in one piece.

    The start of an answer that declares its content-length is held until its body follows in
    one message; then uvicorn's ``send`` runs for both into ``_Collected`` and the bytes go to the
    socket at once. Anything else (a stream, a body in parts) is sent as it comes, a held start
    first. The task running the application looks ``cycle.send`` up only when it starts, after this.

    The closure refers to the cycle it is set on: once the answer is complete it is taken off the
    cycle again, so that the cycle, its scope, body and event are freed at the call's end rather
    than left to the garbage collector. (Making the cycle an instance of a subclass instead, by
    assigning its class, made every later attribute access on it slower.)
    """
    send = cycle.send
    held: list[ASGISendEvent] = []

    async def coalescing(message: ASGISendEvent) -> None:
        if not held:
            if message["type"] == "http.response.start" and _declares_length(message):
                held.append(message)
                return
            await send(message)
        else:
            start = held.pop()
            if message["type"] != "http.response.body" or message.get("more_body", False):
                await send(start)
                await send(message)
            elif not _write_whole(cycle, start, message):
                await _send_collected(cycle, send, start, message)
        if cycle.response_complete:
            with contextlib.suppress(AttributeError):  # taken off already (a send after the end)
                del cycle.send

    cycle.send = coalescing  # type: ignore[method-assign]


async def _send_collected(cycle: RequestResponseCycle, send: Callable[[ASGISendEvent], Awaitable[None]],
                          start: ASGISendEvent, end: ASGISendEvent) -> None:
    """uvicorn's ``send`` of a complete answer, its writes collected into one."""
    transport = cycle.transport
    collected = _Collected()
    cycle.transport = collected  # type: ignore[assignment]  # write and close are all send uses
    try:
        await send(start)
        await send(end)
    finally:
        cycle.transport = transport
        if collected.parts:
            transport.write(b"".join(collected.parts))
        if collected.closing:
            transport.close()


def _write_whole(cycle: RequestResponseCycle, start: ASGISendEvent, end: ASGISendEvent) -> bool:
    """Write a complete answer of the usual kind (a head with a content-length its body matches,
    no connection or transfer-encoding header, not to a HEAD request) as uvicorn's ``send`` would
    for the two messages, and end the cycle as it does; False, having done nothing, for anything
    else, which goes through uvicorn's ``send`` (that also raises for what is invalid).

    uvicorn checks each header name and value with a regular expression of its own, then builds
    the head piece by piece; here the names are checked as a set (``_writable_names``), then the
    values in one pass, and the head is put together by slices."""
    if (cycle.response_started or cycle.disconnected or cycle.flow.write_paused or cycle.access_log
            or cycle.scope["method"] == "HEAD"):
        return False
    status = start["status"]  # type: ignore[typeddict-item]
    line = STATUS_LINE.get(status)
    body: bytes = end.get("body", b"")  # type: ignore[assignment]
    if line is None:
        return False
    # The names, then the values, each checked by a call or two over the lot rather than in a loop
    # over the headers (fourteen or so), which cost about 45 bytecodes a header.
    pairs: list[tuple[bytes, bytes]] = [*cycle.default_headers, *start.get("headers", ())]  # type: ignore[misc]
    try:
        known = _writable_names(tuple(map(_NAME, pairs)))
    except TypeError:  # a name of another type (bytearray): uvicorn's send takes it
        return False
    if known is None:
        return False
    names, at = known
    values = list(map(_VALUE, pairs))
    length = values[at]
    if not length.isdigit() or int(length) != len(body) or not _clean(b"".join(values), _BAD_VALUE):
        return False
    lines = [b"", b": ", b"", b"\r\n"] * len(names)  # name, ": ", value, CRLF: filled in by slices
    lines[0::4], lines[2::4] = names, values
    content = [line, *lines]
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.response_started = cycle.response_complete = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    cycle.transport.write(b"".join(content))
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


@lru_cache(maxsize=64)  # the names come from the gateway's code: a few sets, each sent again and again
def _writable_names(names: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], int] | None:
    """``names`` in lower case, as uvicorn's send writes them, and the index of the first
    content-length (the one it reads); None if any is refused or is one uvicorn interprets."""
    lowered = tuple(name.lower() for name in names)
    if not _UVICORN_INTERPRETS.isdisjoint(lowered) or b"content-length" not in lowered \
            or not _clean(b"".join(lowered), _BAD_NAME):
        return None
    return lowered, lowered.index(b"content-length")


def _clean(data: bytes, refused: bytes) -> bool:
    """Whether ``data`` holds none of the bytes ``refused``."""
    return len(data.translate(None, refused)) == len(data)


def _declares_length(message: ASGISendEvent) -> bool:
    # Names as the gateway and Starlette write them (lower case); another spelling is only not
    # coalesced. The gateway's answers name it last.
    return any(name == b"content-length" for name, _ in reversed(message.get("headers", ())))  # type: ignore[call-overload]


def _timeout_response(seconds: float) -> bytes:
    body = orjson.dumps({"error": {
        "message": f"The request body did not arrive within {seconds:g} s. Send it in one piece, or faster.",
        "type": "invalid_request_error", "param": None, "code": "request_timeout"}})
    head = (f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the new soft limit.

    Each connection holds a descriptor, and most systems start processes at 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the limit we have; the caps below are derived from it
    return int(soft)


def server_options(header_timeout_s: float, body_timeout_s: float, fd_limit: int) -> dict[str, Any]:
    """uvicorn keyword arguments: the timed protocol and caps derived from the descriptor limit.

    A quarter of the descriptors may be held by connections still sending their head, half by
    client connections in all (uvicorn answers 503 beyond that rather than failing accept() or an
    upstream connect for want of a descriptor); the other half serves upstream sockets and storage.
    """
    pending = max(32, fd_limit // 4)
    limits = ReadLimits(header_timeout_s, body_timeout_s, pending)
    return {"http": TimedProtocolFactory(limits), "backlog": BACKLOG, "limit_concurrency": max(64, fd_limit // 2),
            "proxy_headers": False}  # the app applies X-Forwarded-* where they are read (``GatewayApp``)


__all__ = ["BACKLOG", "ReadLimits", "TimedHttpToolsProtocol", "TimedProtocolFactory", "raise_fd_limit",
           "server_options"]
