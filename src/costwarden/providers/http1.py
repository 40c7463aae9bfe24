"""A lean HTTP/1.1 client for upstream calls: keep-alive connections parsed with httptools.

The gateway sends one kind of request (a POST of a JSON body) to a handful of hosts, and under
load the general-purpose client it used cost about three times the CPU per call of this one, in
a process whose one core is the limit. What it does: pooled keep-alive connections per host
(LIFO, idle ones dropped after ``keepalive_s``), a cap on open connections, TLS for https, a
connect timeout, a read timeout between bytes, content-length, chunked and close-delimited
bodies, back-pressure on every body (reading pauses while more than ``HIGH_WATER`` bytes wait
for the consumer and resumes as it drains them, so a stream holds a bounded buffer and a whole
body is collected as it arrives), gzip/deflate bodies decoded. What it does not: proxies,
redirects, cookies, HTTP/2 (the upstream APIs speak HTTP/1.1).

Failures are raised as ``ConnectFailed`` (nothing was sent: safe to retry), ``ReadTimeout`` or
``CallFailed`` (the request may have reached the upstream).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httptools

HIGH_WATER = 256 * 1024  # body bytes waiting for the consumer before reading pauses
LOW_WATER = HIGH_WATER // 4  # ... and the level at which it resumes
_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class ConnectFailed(Exception):
    """No connection could be made (refused, DNS, TLS, timeout): the request was not sent."""

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout


class ReadTimeout(Exception):
    """The upstream sent nothing for the read timeout."""


class CallFailed(Exception):
    """The connection failed after the request was (maybe) sent."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where connections go: scheme, host and port, and the Host header naming them."""

    scheme: str
    host: str
    port: int
    host_header: bytes

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # the running one (the pool reads its clock through it)
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.broken = False  # closed, failed, or left in a state it cannot be reused from
        self.idle_since = 0.0
        self._active = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._complete = False
        self._keep_alive = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout = 0.0
        self._last_read = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        self._last_read = self.loop.time()
        if not self._active:
            self._break(None)  # bytes nobody asked for: this connection cannot be trusted again
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._break(CallFailed(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool:
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self._active and not self._complete:
            if self._head_done and self._close_delimited():
                self._complete = True  # the body ran until the connection closed, as it said
            elif self._error is None:
                self._error = CallFailed(str(exc) if exc else "the upstream closed the connection")
        self._wake()
        self._cancel_timer()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._headers = []
            return
        self._status = status
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self._head_done:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._head_done:
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # only known while the message is current
        # Nothing more belongs to this answer, so nothing more needs holding back; a connection
        # left paused would never read the answer to its next request.
        self._resume()
        self._wake()

    # -- one exchange ----------------------------------------------------------------------------

    def send(self, request: bytes, read_timeout: float) -> None:
        """Write a whole request and start waiting for its answer."""
        assert self.transport is not None and not self._active
        self._active = True
        self._status, self._headers, self._head_done, self._complete, self._keep_alive = 0, [], False, False, False
        self._error = None
        self._timeout = read_timeout
        self._last_read = now = self.loop.time()
        # The read timer outlives an exchange (it finds the connection idle and lapses) and serves
        # the next one, which it checks when it fires: a timer made and cancelled per request
        # cost the loop a heap insertion and removal every call. Re-armed only if it would fire late.
        if self._timer is None or self._timer.when() > now + read_timeout:
            self._cancel_timer()
            self._timer = self.loop.call_at(now + read_timeout, self._check_timeout)
        self.transport.write(request)

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The status and raw headers of the answer."""
        while not self._head_done:
            await self._wait()
        return self._status, self._headers

    async def chunk(self) -> bytes | None:
        """The next piece of the body as it arrived, or None once it has all been read."""
        while not self._chunks:
            if self._complete:
                return None
            await self._wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= LOW_WATER:
            self._resume()
        return data

    async def body(self) -> bytes:
        """The whole (rest of the) body, taken from the buffer as it arrives so that reading
        never stays paused."""
        parts: list[bytes] = []
        while True:
            parts.extend(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            if self._complete:
                break
            self._resume()
            await self._wait()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def finish(self) -> bool:
        """End the exchange; True when the connection may carry another request."""
        self._active = False
        if not self._complete or self._chunks or self._error is not None or not self._keep_alive:
            self._break(None)
        return not self.broken

    def close(self) -> None:
        self._break(None)

    # -- internals -------------------------------------------------------------------------------

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._last_read = self.loop.time()  # the pause was ours: the upstream's silence starts now
            if self.transport is not None:
                self.transport.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _break(self, error: BaseException | None) -> None:
        self.broken = True
        if error is not None and self._error is None:
            self._error = error
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _check_timeout(self) -> None:
        self._timer = None
        if not self._active or self._complete:
            return
        due = self._last_read + self._timeout
        if self._paused:  # the consumer is behind, not the upstream: no read is outstanding
            self._timer = self.loop.call_at(self.loop.time() + self._timeout, self._check_timeout)
        elif self.loop.time() >= due:
            self._break(ReadTimeout())
        else:  # data arrived meanwhile: wait for the rest of the interval
            self._timer = self.loop.call_at(due, self._check_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_delimited(self) -> bool:
        names = {name.lower() for name, _ in self._headers}
        return b"content-length" not in names and b"transfer-encoding" not in names


class ConnectionPool:
    """Keep-alive connections per origin, at most ``limit`` open at once."""

    def __init__(self, *, limit: int = 512, keepalive_s: float = 4.0, connect_timeout_s: float = 5.0) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._connect_timeout_s = connect_timeout_s
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def acquire(self, origin: Origin) -> Connection:
        """An idle connection to ``origin`` or a new one; ConnectFailed when none can be made."""
        while True:
            if self._closed:
                raise ConnectFailed("the connection pool is closed")
            idle = self._idle.get(origin)
            if idle:
                now = idle[-1].loop.time()
                while idle:
                    connection = idle.pop()  # the most recently used: the least likely to be stale
                    if not connection.broken and now - connection.idle_since < self._keepalive_s:
                        return connection
                    self._discard(connection)
            if len(self._open) < self._limit or self._evict_one():
                return await self._connect(origin)
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter

    def release(self, origin: Origin, connection: Connection) -> None:
        """Hand a connection back after ``Connection.finish``: kept when it can be reused."""
        if connection.broken or self._closed:
            self._discard(connection)
            return
        connection.idle_since = connection.loop.time()
        self._idle.setdefault(origin, []).append(connection)
        self._wake_one()

    def discard(self, connection: Connection) -> None:
        """Close a connection that will not be reused."""
        connection.close()
        self._discard(connection)

    async def aclose(self) -> None:
        self._closed = True
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(None)
        self._waiting.clear()

    async def _connect(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        connection = Connection(loop)
        self._open.add(connection)  # counted while connecting, so the cap holds
        context = self._ssl_context() if origin.tls else None
        try:
            await asyncio.wait_for(loop.create_connection(
                lambda: connection, origin.host, origin.port, ssl=context,
                server_hostname=origin.host if context is not None else None), self._connect_timeout_s)
        except TimeoutError as exc:
            self._discard(connection)
            raise ConnectFailed(f"no connection within {self._connect_timeout_s:g} s", timeout=True) from exc
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (ssl.SSLError)
            self._discard(connection)
            raise ConnectFailed(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__) from exc
        except BaseException:
            self._discard(connection)
            raise
        return connection

    def _discard(self, connection: Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            self._wake_one()

    def _evict_one(self) -> bool:
        """Close an idle connection (to any origin) to make room for a new one."""
        for idle in self._idle.values():
            if idle:
                self._discard(idle.pop(0))  # the longest idle
                return True
        return False

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl


def decode_body(headers: dict[str, str], body: bytes) -> bytes:
    """The body without its content-encoding (gzip or deflate); others are left as they are."""
    encoding = headers.get("content-encoding", "").strip().lower()
    wbits = _DECODERS.get(encoding)
    if wbits is None or not body:
        return body
    try:
        return zlib.decompress(body, wbits)
    except zlib.error as exc:
        raise CallFailed(f"could not decode a {encoding} body: {exc}") from exc


async def decoded_chunks(headers: dict[str, str], connection: Connection) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive, decoded when gzip or deflate."""
    wbits = _DECODERS.get(headers.get("content-encoding", "").strip().lower())
    decoder = zlib.decompressobj(wbits) if wbits is not None else None
    while (data := await connection.chunk()) is not None:
        if decoder is not None:
            try:
                data = decoder.decompress(data)
            except zlib.error as exc:
                raise CallFailed(f"could not decode a compressed stream: {exc}") from exc
        if data:
            yield data
    if decoder is not None and (rest := decoder.flush()):
        yield rest
