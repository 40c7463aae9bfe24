"""The counter scripts' calls to Redis, pipelined on one connection this store opens itself.

redis-py's client runs each command through a pool checkout, a retry wrapper, a task that times
its write and observability hooks; per call of the gateway (one reserve, one settle) that cost
more of the event loop than the script and its answer. Here the scripts go over one connection of
this store's own, opened from the client's settings (host and port or socket path, TLS, user and
password, database): a call queues its FCALL (or EVALSHA) as one buffer, the commands queued in
one turn of the event loop leave in one write, and Redis answers a connection's commands in the
order sent, so each answer goes to the oldest call still waiting. A call cancelled meanwhile
keeps its place: its answer is read and dropped, never handed to the next call.

A script or function the server does not know (restarted, flushed) is loaded and sent again; a
server without functions (Redis 6.2) answers FCALL with ``FunctionsUnavailable``, for the caller
to send the script instead. A lost connection fails the calls waiting on it; each is tried again
on a new one, ``RETRIES`` times after a short pause, as the client's retry does: the scripts are
safe to run again. A server that does not answer within the client's socket timeout is not asked
again: the connection is closed and every call waiting on it fails at once with a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

PAUSES_S = (0.02, 0.04)  # before each retry of a call whose connection failed
RETRIES = len(PAUSES_S)
DEFAULT_TIMEOUT_S = 5.0  # connecting and answering, when the client sets no timeout


def bulk(word: str) -> str:
    """``word`` as one RESP bulk string, its length counted in UTF-8 bytes: a command made of
    such pieces is encoded once, whole (``evalsha``)."""
    return f"${len(word) if word.isascii() else len(word.encode())}\r\n{word}\r\n"


_COUNTS = [bulk(str(count)) for count in range(64)]


def count_word(count: int) -> str:
    """``bulk(str(count))``, made once for the small counts every call sends."""
    return _COUNTS[count] if count < 64 else bulk(str(count))


class FunctionsUnavailable(ResponseError):
    """The server has no functions for this client (FCALL is unknown, or not allowed to its user,
    or loading a library is not): send the operation as a script."""


class Loadable(Protocol):
    """What a call runs: something the server may have to be given first."""

    async def load(self, client: Redis) -> None:
        """Give it to the server (after the server said it did not know it)."""
        ...


@dataclass(frozen=True, slots=True)
class _Eval:
    """A script registered on the client, loaded by SCRIPT LOAD."""

    script: AsyncScript

    async def load(self, client: Redis) -> None:
        await client.script_load(self.script.script)


def pack_command(words: Sequence[str]) -> bytes:
    """``words`` as one RESP command (an array of bulk strings), in a single buffer."""
    return f"*{len(words)}\r\n{''.join([bulk(word) for word in words])}".encode()


def _error(reply: ResponseError) -> RedisError:
    """An error answer as redis-py raises it: the generic code ``ERR`` taken off the message, and
    the kinds a script call handles apart as their own classes."""
    code, _, rest = str(reply).partition(" ")
    if code == "ERR":
        if rest == "Function not found":  # a server restarted or flushed since the library was loaded
            return NoScriptError(rest)
        if rest.startswith("unknown command") and "fcall" in rest[:24].lower():  # Redis 6.2
            return FunctionsUnavailable(rest)
        return ResponseError(rest)
    if code == "NOPERM" and "'fcall'" in rest:  # a user allowed scripts and not functions
        return FunctionsUnavailable(rest)
    if code == "NOSCRIPT":
        return NoScriptError(rest)
    if code == "LOADING":  # a restarted server reading its data: try again shortly
        return BusyLoadingError(rest)
    return reply


class _Connection(asyncio.Protocol):
    """One connection; answers go to the waiting calls in the order their commands were sent.

    One timer watches the oldest call still waiting: if it has waited ``timeout_s``, the server
    is taken to have stopped answering, and the connection fails with a timeout (a timer per call
    cost more than its script's answer)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()  # and when sent
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._watch: asyncio.TimerHandle | None = None
        self.failure: Exception | None = None  # why it can serve no more calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._waiting:  # an answer nobody asked for: the stream cannot be trusted
                self.fail(RedisConnectionError("Redis sent an answer to no command"))
                return
            future, _ = self._waiting.popleft()
            if future.done():  # its call was cancelled
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queue ``command``; the future resolves with its answer."""
        if self.failure is not None:
            raise self.failure
        future = self._loop.create_future()
        now = self._loop.time()
        self._waiting.append((future, now))
        if self._watch is None:
            self._watch = self._loop.call_at(now + self._timeout_s, self._check)
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(command)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.failure is None and self._transport is not None:  # one command alone is not copied
            self._transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def _check(self) -> None:
        self._watch = None
        if not self._waiting:
            return
        due = self._waiting[0][1] + self._timeout_s
        if self._loop.time() >= due:
            self.fail(RedisTimeoutError(f"Redis did not answer within {self._timeout_s:g} s"))
        else:
            self._watch = self._loop.call_at(due, self._check)

    def fail(self, failure: Exception) -> None:
        """Serve no more calls: close, and fail every call still waiting with ``failure``."""
        if self.failure is None:
            self.failure = failure
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._transport is not None:
            self._transport.abort()
        waiting, self._waiting = self._waiting, collections.deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(self.failure)
                future.exception()  # a cancelled caller will not look at it: no warning


class ScriptCalls:
    """EVALSHA over one pipelined connection to the server of ``client``."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        settings = client.connection_pool.connection_kwargs
        self._settings = settings
        self._timeout = settings.get("socket_timeout") or DEFAULT_TIMEOUT_S
        self._connect_timeout = settings.get("socket_connect_timeout") or self._timeout
        tls = issubclass(client.connection_pool.connection_class, SSLConnection)
        self._tls = _tls_context(settings) if tls else None
        self._conn: _Connection | None = None
        self._opening = asyncio.Lock()

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run ``script`` on ``keys`` and ``args``; raises the client's RedisError subclasses."""
        return await self.run_packed(_Eval(script), pack_command(("EVALSHA", script.sha, str(len(keys)), *keys, *args)))

    async def run_packed(self, script: Loadable, command: bytes) -> Any:
        """Run ``command``, a call of ``script`` packed already (FCALL or EVALSHA, one buffer)."""
        try:
            return await self._first_try(script, command)
        except (NoScriptError, RedisConnectionError) as exc:
            return await self._recover(script, command, exc)

    def _first_try(self, script: Loadable, command: bytes) -> Awaitable[Any]:
        """On the open connection, the answer's future itself: the usual call costs no coroutine
        of its own."""
        conn = self._conn
        if conn is not None and conn.failure is None:
            return conn.send(command)
        return self._recover(script, command, None)

    async def _recover(self, script: Loadable, command: bytes, failure: RedisError | None) -> Any:
        """Run ``command`` after ``failure`` (None: no connection was open yet): a script the
        server forgot is loaded again, a lost connection tried again ``RETRIES`` times."""
        attempt = 0
        while True:
            if isinstance(failure, NoScriptError):
                await script.load(self._client)
            elif failure is not None:  # a RedisConnectionError; BusyLoadingError is one too
                if attempt == RETRIES:
                    raise failure
                await asyncio.sleep(PAUSES_S[attempt])  # a back-off before trying again
                attempt += 1
            try:
                return await self._call(command)
            except (NoScriptError, RedisConnectionError) as exc:
                failure = exc

    async def _call(self, command: bytes) -> Any:
        conn = self._conn
        if conn is None or conn.failure is not None:
            conn = await self._connection()
        return await conn.send(command)

    async def _connection(self) -> _Connection:
        """The open connection, or a new one (one opening at a time, shared by the calls)."""
        async with self._opening:
            if self._conn is None or self._conn.failure is not None:
                self._conn = await self._open()
            return self._conn

    async def _open(self) -> _Connection:
        settings, loop = self._settings, asyncio.get_running_loop()
        conn: _Connection | None = None

        def protocol() -> _Connection:
            return _Connection(loop, self._timeout)

        try:
            async with asyncio.timeout(self._connect_timeout):
                if settings.get("path"):
                    transport, conn = await loop.create_unix_connection(protocol, settings["path"])
                else:
                    host = settings.get("host", "localhost")
                    transport, conn = await loop.create_connection(
                        protocol, host, settings.get("port", 6379), ssl=self._tls,
                        server_hostname=host if self._tls is not None else None)
                conn.connection_made(transport)  # uvloop may call it only after returning
                await asyncio.gather(*(conn.send(pack_command(words)) for words in _hello(settings)))
        except BaseException as exc:
            if conn is not None:
                conn.fail(RedisConnectionError("the connection to Redis could not be set up"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"Redis did not accept a connection within {self._connect_timeout:g} s") \
                    from None
            if isinstance(exc, ResponseError):  # a wrong password, an unknown database
                raise RedisConnectionError(f"Redis refused the connection: {exc}") from exc
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"could not connect to Redis: {exc}") from exc
            raise
        return conn

    async def close(self) -> None:
        """Close the connection; calls still waiting fail."""
        if self._conn is not None:
            self._conn.fail(RedisConnectionError("the counter store was closed"))
            self._conn = None


def _hello(settings: Mapping[str, Any]) -> list[list[str]]:
    """The commands that make a new connection the client's: authenticate, pick the database."""
    commands = []
    password = settings.get("password")
    if password is not None:
        username = settings.get("username")
        commands.append(["AUTH", *([username] if username else []), password])
    if settings.get("db"):
        commands.append(["SELECT", str(settings["db"])])
    return commands


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _tls_context(settings: Mapping[str, Any]) -> ssl.SSLContext:
    """A TLS context from the client's ``ssl_*`` settings (``rediss://`` URLs)."""
    context = ssl.create_default_context(cafile=settings.get("ssl_ca_certs"), capath=settings.get("ssl_ca_path"),
                                         cadata=settings.get("ssl_ca_data"))
    required = settings.get("ssl_cert_reqs", "required")
    required = _CERT_REQS.get(required, required) if isinstance(required, str) else required
    context.check_hostname = bool(settings.get("ssl_check_hostname", required != ssl.CERT_NONE))
    context.verify_mode = required
    if settings.get("ssl_certfile"):
        context.load_cert_chain(settings["ssl_certfile"], settings.get("ssl_keyfile"), settings.get("ssl_password"))
    return context
