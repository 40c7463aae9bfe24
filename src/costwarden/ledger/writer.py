"""The one writer of a database: a thread that drains a queue in batches.

Callers on the event loop enqueue rows and (usually) await a future that resolves once their row
is committed. While one batch commits, the next one accumulates, so the cost of a commit is shared
by every call that arrived meanwhile (group commit). Items are applied in queue order: a call's
write-ahead row always lands before, or in the same transaction as, its final event, which
deletes it. Other writes (keys, policy versions, alerts, recovery) are functions run by the same
thread in their own transaction, in their place in the queue.

On SQLite, rows are written through the driver with statements prepared once per table (a batch
takes one multi-row statement per table) and SQLAlchemy's own bind processors, so the rows stored
are the same as through SQLAlchemy Core. The usage rows of the gateway's hot path go to a child
process instead (``ChildWriter``): the writer thread shares the interpreter lock with the event
loop, and under load every lock hand-over between them cost the loop more than the write itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import marshal
import queue
import sqlite3
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql import Insert
from sqlalchemy.sql.schema import Table

from costwarden.errors import StorageError
from costwarden.ledger.engine import SQLITE_BUSY_TIMEOUT_MS, storage_error
from costwarden.ledger.schema import inflight, rejections, usage_events

log = logging.getLogger(__name__)

MAX_BATCH = 2000
MAX_ROWS_PER_STATEMENT = 64  # rows in one multi-row INSERT on SQLite (within its variable limit)
REFUSED = "ledger: a row was refused by the database"
MAX_CHILD_EXITS = 3  # writer processes that may exit in a row before the thread takes over
IN_FLIGHT = 2  # batches sent to the writer process before the first is answered
Row = dict[str, Any]


class Waiter:
    """An asyncio future the writer thread resolves from its own thread."""

    __slots__ = ("future", "loop")

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.future: asyncio.Future[Any] = self.loop.create_future()

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(self._set, result, error)

    def _set(self, result: Any, error: BaseException | None) -> None:
        if self.future.done():
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)


def resolve_all(waiters: list[Waiter]) -> None:
    """Resolve many waiters with None, waking each event loop once rather than once per waiter."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Waiter]] = {}
    for waiter in waiters:
        by_loop.setdefault(waiter.loop, []).append(waiter)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_set_all, group)


def _set_all(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter._set(None, None)


@dataclass(slots=True)
class Write:
    """One row for a batched table: 'event', 'rejection' or 'inflight'."""

    kind: str
    row: dict[str, Any]
    waiter: Waiter | None = None


@dataclass(slots=True)
class Job:
    """A function run in its own transaction; its return value resolves the waiter."""

    fn: Callable[[Connection], Any]
    waiter: Waiter | None = None


_STOP = object()


def insert_ignoring_duplicates(conn: Connection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect (ids are idempotent)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


class Writer:
    """Owns the writer thread of one database."""

    def __init__(self, engine: Engine, name: str = "costwarden-ledger-writer") -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        self._statements = SqliteStatements(engine.dialect) if self._sqlite else None
        self._held: Connection | None = None  # SQLite: the thread's connection, kept open
        self._queue: queue.SimpleQueue[Write | Job | object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Write | Job) -> None:
        """Enqueue without waiting; raises StorageError once the writer is closed."""
        with self._lock:
            if self._closed:
                raise StorageError("ledger is closed")
            self._queue.put(item)

    async def submit(self, item: Write | Job) -> Any:
        """Enqueue ``item`` (which must carry a waiter) and wait until it is committed."""
        assert item.waiter is not None
        self.put(item)
        return await item.waiter.future

    async def close(self) -> None:
        """Stop accepting work, write everything queued, and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in items:
                stopping = True
                items = [item for item in items if item is not _STOP]
            try:
                self._process([item for item in items if isinstance(item, Write | Job)])
            except Exception as exc:  # the thread's outermost edge: never leave a caller hanging
                log.exception("ledger writer failed")
                for item in items:
                    if isinstance(item, Write | Job) and item.waiter is not None:
                        item.waiter.resolve(error=StorageError(f"ledger writer failed: {exc}"))
        self._drop_connection()

    # -- connections ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A connection in a transaction, committed on leaving the block."""
        if not self._sqlite:
            with self._engine.begin() as conn:  # a checkout per batch: pre-ping survives restarts
                yield conn
            return
        conn = self._connection()
        with conn.begin():
            yield conn

    def _connection(self) -> Connection:
        if self._held is None:
            self._held = self._engine.connect()
        return self._held

    def _drop_connection(self) -> None:
        """Give the held connection back (after a failure, or when stopping); the next batch
        takes a fresh one."""
        if self._held is not None:
            with contextlib.suppress(Exception):
                self._held.close()
            self._held = None

    # -- batches -------------------------------------------------------------------------------

    def _process(self, items: list[Write | Job]) -> None:
        pending: list[Write] = []
        for item in items:
            if isinstance(item, Write):
                pending.append(item)
                continue
            self._flush(pending)
            pending = []
            self._run_job(item)
        self._flush(pending)

    def _run_job(self, job: Job) -> None:
        try:
            with self._transaction() as conn:
                result = job.fn(conn)
        except SQLAlchemyError as exc:
            self._drop_connection()
            self._fail([job], storage_error(exc, "a write"))
        except Exception as exc:  # a domain error raised by the job belongs to its caller
            self._fail([job], exc)
        else:
            if job.waiter is not None:
                job.waiter.resolve(result)

    def _flush(self, writes: list[Write]) -> None:
        if not writes:
            return
        try:
            if self._statements is not None:
                self._write_sqlite(writes, self._statements)
            else:
                with self._engine.begin() as conn:
                    _write_batch(conn, writes)
        except (IntegrityError, DataError, sqlite3.IntegrityError, sqlite3.DataError):
            # One bad row must not sink the batch: write each on its own to find it.
            if len(writes) > 1:
                for write in writes:
                    self._flush([write])
                return
            self._fail(writes, StorageError(REFUSED))
            return
        except SQLAlchemyError as exc:
            self._drop_connection()
            self._fail(writes, storage_error(exc, "writing usage"))
            return
        except sqlite3.Error as exc:
            self._drop_connection()
            self._fail(writes, StorageError(f"ledger: writing usage failed: {type(exc).__name__}: {exc}"))
            return
        resolve_all([write.waiter for write in writes if write.waiter is not None])

    def _write_sqlite(self, writes: list[Write], statements: SqliteStatements) -> None:
        """``_write_batch`` through the sqlite3 driver, in one BEGIN IMMEDIATE transaction."""
        driver = self._connection().connection.dbapi_connection
        assert isinstance(driver, sqlite3.Connection)
        cursor = driver.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            for sql, rows, size in statements.batch(writes):
                cursor.execute(sql, parameters(rows, size))
            cursor.execute("COMMIT")
        except BaseException:
            if driver.in_transaction:
                driver.rollback()
            raise
        finally:
            cursor.close()

    @staticmethod
    def _fail(items: list[Write] | list[Job], error: BaseException) -> None:
        waited = False
        for item in items:
            if item.waiter is not None:
                item.waiter.resolve(error=error)
                waited = True
        if not waited:
            log.error("ledger: a write-ahead row was lost: %s", error)


def _partition(writes: list[Write]) -> tuple[list[Row], list[Row], list[str], list[Row]]:
    """Write-ahead rows to insert, events to insert, write-ahead ids to delete, rejections."""
    ahead = [w.row for w in writes if w.kind == "inflight"]
    events = [w.row for w in writes if w.kind == "event"]
    refused = [w.row for w in writes if w.kind == "rejection"]
    settled = {row["id"] for row in events}
    # A call that began and ended within one batch needs no write-ahead row at all.
    ahead_ids = {row["id"] for row in ahead}
    ahead = [row for row in ahead if row["id"] not in settled]
    stale = sorted(settled - ahead_ids) if events else []
    return ahead, events, stale, refused


def _write_batch(conn: Connection, writes: list[Write]) -> None:
    ahead, events, stale, refused = _partition(writes)
    if ahead:
        conn.execute(insert_ignoring_duplicates(conn, inflight), ahead)
    if events:
        conn.execute(insert_ignoring_duplicates(conn, usage_events), events)
        if stale:
            conn.execute(delete(inflight).where(inflight.c.id.in_(stale)))
    if refused:
        conn.execute(insert_ignoring_duplicates(conn, rejections), refused)


# -- SQLite statements ------------------------------------------------------------------------------


class SqliteStatements:
    """The driver-level statements (SQL, parameters) of a batch of writes: ``_write_batch``'s
    effect, with one multi-row statement per table in the usual batch."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._inserts: dict[tuple[str, tuple[str, ...]], _Insert] = {}
        with contextlib.closing(sqlite3.connect(":memory:")) as probe:
            self._max_variables = probe.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def batch(self, writes: list[Write]) -> list[Statement]:
        ahead, events, stale, refused = _partition(writes)
        statements: list[Statement] = []
        if ahead:
            self._insert(statements, inflight, ahead)
        if events:
            self._insert(statements, usage_events, events)
        for part, size in _parts([[ident] for ident in stale], self._max_rows(1)):
            statements.append((f"DELETE FROM inflight WHERE id IN ({', '.join('?' * size)})", part, size))
        if refused:
            self._insert(statements, rejections, refused)
        return statements

    def _insert(self, out: list[Statement], table: Table, rows: list[Row]) -> None:
        keys = tuple(rows[0])
        insert = self._inserts.get((table.name, keys))
        if insert is None:
            insert = self._inserts[(table.name, keys)] = _Insert(table, keys, self._dialect)
        values = [insert.values(row) for row in rows]
        for part, size in _parts(values, self._max_rows(len(keys))):
            out.append((insert.sql_for(size), part, size))

    def _max_rows(self, columns: int) -> int:
        return max(1, min(MAX_ROWS_PER_STATEMENT, self._max_variables // columns))


# A statement for the driver: its SQL for ``size`` rows of parameters, and the rows, fewer than
# ``size`` when the last one is to be repeated (see ``_parts``); ``parameters()`` flattens them.
Statement = tuple[str, list[list[Any]], int]


def _parts(rows: list[list[Any]], most: int) -> Iterator[tuple[list[list[Any]], int]]:
    """``rows`` in consecutive parts of at most ``most``, each to be padded with copies of its
    last row to a power of two: a handful of statement texts serve every batch (the driver keeps
    them prepared) and a batch takes one statement per table. The statements using this are
    idempotent per row (INSERT ... ON CONFLICT DO NOTHING, DELETE ... IN), so the copies change
    nothing. Each statement step releases and re-takes the interpreter lock."""
    most = 1 << (most.bit_length() - 1)
    for start in range(0, len(rows), most):
        part = rows[start:start + most]
        yield part, 1 << (len(part) - 1).bit_length()


def parameters(rows: list[list[Any]], size: int) -> list[Any]:
    """The flat parameters of a statement: ``rows``, the last repeated up to ``size`` rows."""
    return [value for row in rows + [rows[-1]] * (size - len(rows)) for value in row]


class _Insert:
    """INSERT ... ON CONFLICT DO NOTHING of ``keys`` into ``table`` for the sqlite3 driver, and
    the bind processors SQLAlchemy would apply to those columns (UTC times as text, booleans)."""

    def __init__(self, table: Table, keys: tuple[str, ...], dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        columns = [table.c[key] for key in keys]
        self._head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) VALUES "
        self._row = f"({', '.join('?' for _ in columns)})"
        self._sql: dict[int, str] = {}
        self.keys = keys
        processors = [_faster(c.type.dialect_impl(dialect).bind_processor(dialect)) for c in columns]
        self.processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def sql_for(self, rows: int) -> str:
        """The statement inserting ``rows`` rows at once."""
        sql = self._sql.get(rows)
        if sql is None:
            sql = self._sql[rows] = f"{self._head}{', '.join([self._row] * rows)} ON CONFLICT DO NOTHING"
        return sql

    def values(self, row: Row) -> list[Any]:
        values = [row[key] for key in self.keys]
        for index, process in self.processors:
            values[index] = process(values[index])
        return values


_SAMPLES = (datetime(2026, 11, 10, 15, 4, 5, 123456, tzinfo=UTC), datetime(987, 1, 2, 3, 4, 5, tzinfo=UTC))


def _utc_text(value: Any) -> Any:
    """An aware UTC datetime as SQLite stores it through SQLAlchemy: naive UTC text."""
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (value.year, value.month, value.day, value.hour,  # noqa: UP031
                                                    value.minute, value.second, value.microsecond)


def _faster(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A UTC time processor that skips SQLAlchemy's general one (a type decorator, then a
    dictionary format) when it gives the same text for sample times; anything else as it is."""
    if process is None:
        return None
    try:
        same = all(process(sample) == _utc_text(sample) for sample in _SAMPLES)
    except Exception:  # not a processor of times
        same = False
    if not same:
        return process

    def utc_text(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            return _utc_text(value)
        return process(value)  # other zones, naive times (refused there), None

    return utc_text


# -- SQLite usage rows in a child process --------------------------------------------------------------

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
