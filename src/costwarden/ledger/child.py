"""The writer process of a SQLite ledger: the usage rows of the gateway's hot path are committed by a
child process, because the writer thread shares the interpreter lock with the event loop and, under
load, every hand-over between them cost the loop more than the write itself. A call's waiter
resolves only once the child has committed its row (an event is durable before its response ends).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import marshal
import struct
import subprocess
import sys
from collections.abc import Callable

from sqlalchemy.engine import Dialect

from costwarden.errors import StorageError
from costwarden.ledger.engine import SQLITE_BUSY_TIMEOUT_MS
from costwarden.ledger.sqlite_rows import SqliteStatements
from costwarden.ledger.writes import REFUSED, Write

log = logging.getLogger(__name__)
MAX_CHILD_EXITS = 3  # writer processes that may exit in a row before the thread takes over
IN_FLIGHT = 2  # batches sent to the writer process before the first is answered


# The child: standard library only, so that it starts in milliseconds. It reads frames of
# (batch number, [Statement, ...]) from stdin, runs each batch in one BEGIN IMMEDIATE
# transaction, and answers (batch number, None | "row" | "error", message) once it is committed.
# At end of input (the parent closed it, or died) it finishes and exits. Its commits do not
# checkpoint the WAL (the copy to the database file, every 1,000 pages by default, held up a
# batch for milliseconds): a thread of its own checkpoints beside them (PASSIVE: never blocking
# a writer), and if that thread fails, commits checkpoint again as SQLite's default does.
_CHILD = r"""
import marshal, os, sqlite3, struct, sys, threading, time

def read_exactly(size):
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data

def reply(message):
    data = marshal.dumps(message)
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(1, data):]

def checkpoints(path, timeout_ms, alive):
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=timeout_ms / 1000)
        while True:
            time.sleep(0.1)
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except BaseException:
        alive.clear()

def main(path, timeout_ms):
    db = sqlite3.connect(path, isolation_level=None, timeout=timeout_ms / 1000)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(f"PRAGMA busy_timeout={timeout_ms}")
    db.execute("PRAGMA wal_autocheckpoint=0")
    alive = threading.Event()
    alive.set()
    threading.Thread(target=checkpoints, args=(path, timeout_ms, alive), daemon=True).start()
    checkpointer = True
    while (head := read_exactly(4)) is not None:
        if checkpointer and not alive.is_set():
            db.execute("PRAGMA wal_autocheckpoint=1000")
            checkpointer = False
        body = read_exactly(struct.unpack(">I", head)[0])
        if body is None:
            break
        number, statements = marshal.loads(body)
        try:
            db.execute("BEGIN IMMEDIATE")
            for sql, rows, size in statements:  # the rows, the last repeated up to size rows
                db.execute(sql, [value for row in rows + [rows[-1]] * (size - len(rows)) for value in row])
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.rollback()
            kind = "row" if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)) else "error"
            reply((number, kind, f"{type(exc).__name__}: {exc}"))
        else:
            reply((number, None, ""))
    db.close()

main(sys.argv[1], int(sys.argv[2]))
"""


class ChildWriter:
    """Usage rows of one SQLite ledger for one event loop, written by a child process.

    Rows put on the loop are sent as one batch when the loop next runs callbacks; up to
    ``IN_FLIGHT`` batches are sent before the first is answered, so the child never waits for the
    next one. A row's waiter resolves once the child has committed it; the child commits batches
    in the order sent. A refused row is found by sending the rows of its batch again one by one
    (a write-ahead row of that batch may then land after its call's event, which only leaves a
    row that recovery drops). Every row is idempotent (INSERT ... ON CONFLICT DO NOTHING,
    DELETE), so if the child exits, the batches it had not answered are sent again to a new one;
    if children cannot be started or keep exiting, the rows go to ``fallback`` (the writer
    thread) and this writer is no longer ``usable``. Not thread-safe: everything runs on ``loop``.
    """

    def __init__(self, path: str, dialect: Dialect, loop: asyncio.AbstractEventLoop,
                 fallback: Callable[[Write], None]) -> None:
        self.loop = loop
        self.usable = True
        self._path = path
        self._fallback = fallback
        self._statements = SqliteStatements(dialect)
        self._pending: list[Write] = []
        self._sent: collections.deque[list[Write]] = collections.deque()  # answered in this order
        self._singles = 0  # batches to send one write at a time (finding a refused row)
        self._number = 0
        self._scheduled = False
        self._process: _Child | None = None
        self._starting: asyncio.Task[None] | None = None
        self._exits = 0  # child exits since the last batch committed
        self._idle: list[asyncio.Future[None]] = []

    def put(self, write: Write) -> None:
        if not self.usable:
            self._fallback(write)
            return
        self._pending.append(write)
        self._kick()

    async def drain(self) -> None:
        """Return once every row put so far has been committed (or has failed)."""
        if self._busy():
            idle = self.loop.create_future()
            self._idle.append(idle)
            await idle

    async def close(self) -> None:
        """Write what is queued, then stop the child."""
        await self.drain()
        self.usable = False
        if self._process is not None:
            process, self._process = self._process, None
            await process.stop()

    def _busy(self) -> bool:
        return bool(self._pending) or bool(self._sent) or self._starting is not None

    def _kick(self) -> None:
        if len(self._sent) >= IN_FLIGHT or not self._pending:
            return
        if self._process is None:
            if self._starting is None:
                self._starting = self.loop.create_task(self._start())
            return
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._send)  # after the callbacks now ready: a bigger batch

    async def _start(self) -> None:
        try:
            self._process = await _Child.spawn(self.loop, self._path, self._on_reply, self._on_exit)
        except Exception:  # the edge of a background task: hand the rows on, never hang them
            log.exception("ledger: could not start the writer process; writing from a thread instead")
            self._give_up()
        finally:
            self._starting = None
        self._kick()
        self._maybe_idle()

    def _send(self) -> None:
        self._scheduled = False
        while len(self._sent) < IN_FLIGHT and self._pending and self._process is not None:
            if self._singles:
                self._singles -= 1
                batch, self._pending = self._pending[:1], self._pending[1:]
            else:
                batch, self._pending = self._pending, []
            self._sent.append(batch)
            self._number += 1
            self._process.send(marshal.dumps((self._number, self._statements.batch(batch))))

    def _on_reply(self, number: int, kind: str | None, message: str) -> None:
        batch = self._sent.popleft() if self._sent else []
        self._exits = 0
        if kind is None:
            for write in batch:
                if write.waiter is not None and not write.waiter.future.done():
                    write.waiter.future.set_result(None)
        elif kind == "row" and len(batch) > 1:
            self._pending[:0] = batch  # again, one by one, to find the row the database refused
            self._singles += len(batch)
        elif kind == "row":
            _fail(batch, StorageError(REFUSED))
        else:
            _fail(batch, StorageError(f"ledger: writing usage failed: {message}"))
        self._kick()
        self._maybe_idle()

    def _on_exit(self) -> None:
        self._process = None
        unanswered = [write for batch in self._sent for write in batch]
        self._sent.clear()
        self._pending[:0] = unanswered  # maybe committed, maybe not: idempotent, so again
        self._exits += 1
        if self._exits > MAX_CHILD_EXITS:
            log.error("ledger: the writer process keeps exiting; writing from a thread instead")
            self._give_up()
        elif self._pending:
            log.warning("ledger: the writer process exited; starting another for %d rows", len(self._pending))
        self._kick()
        self._maybe_idle()

    def _give_up(self) -> None:
        self.usable = False
        pending, self._pending, self._singles = self._pending, [], 0
        for write in pending:
            try:
                self._fallback(write)
            except StorageError as exc:
                _fail([write], exc)

    def _maybe_idle(self) -> None:
        if self._busy():
            return
        idle, self._idle = self._idle, []
        for future in idle:
            if not future.done():
                future.set_result(None)


def _fail(writes: list[Write], error: StorageError) -> None:
    for write in writes:
        if write.waiter is not None and not write.waiter.future.done():
            write.waiter.future.set_exception(error)
    if any(write.waiter is None for write in writes):
        log.error("ledger: a write-ahead row was lost: %s", error)


class _Child(asyncio.SubprocessProtocol):
    """The child process and its framed pipes."""

    def __init__(self, on_reply: Callable[[int, str | None, str], None], on_exit: Callable[[], None]) -> None:
        self._on_reply = on_reply
        self._on_exit = on_exit
        self._buffer = bytearray()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._exited: asyncio.Future[None] | None = None
        self._stopping = False

    @classmethod
    async def spawn(cls, loop: asyncio.AbstractEventLoop, path: str,
                    on_reply: Callable[[int, str | None, str], None], on_exit: Callable[[], None]) -> _Child:
        child = cls(on_reply, on_exit)
        child._exited = loop.create_future()
        # -I -S: no environment, no site packages; the child needs the standard library only
        transport, _ = await loop.subprocess_exec(
            lambda: child, sys.executable, "-I", "-S", "-c", _CHILD, path, str(SQLITE_BUSY_TIMEOUT_MS),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        child._transport = transport
        child._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]  # a write pipe (uvloop's too)
        return child

    def send(self, body: bytes) -> None:
        assert self._stdin is not None
        self._stdin.write(struct.pack(">I", len(body)) + body)

    async def stop(self) -> None:
        assert self._stdin is not None and self._exited is not None
        self._stopping = True
        self._stdin.close()  # end of input: the child finishes and exits
        await self._exited

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from(">I", buffer)
            if len(buffer) < 4 + size:
                break
            number, kind, message = marshal.loads(bytes(buffer[4:4 + size]))
            del buffer[:4 + size]
            self._on_reply(number, kind, message)

    def connection_lost(self, exc: Exception | None) -> None:
        # The child has exited and every reply it wrote has been read.
        if self._transport is not None:
            self._transport.close()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
        if not self._stopping:
            self._on_exit()
