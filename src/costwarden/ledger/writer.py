"""The one writer of a database: a thread that drains a queue in batches.

Callers on the event loop enqueue rows and (usually) await a future that resolves once their row
is committed. While one batch commits, the next one accumulates, so the cost of a commit is shared
by every call that arrived meanwhile (group commit). Items are applied in queue order: a call's
write-ahead row always lands before, or in the same transaction as, its final event, which
deletes it. Other writes (keys, policy versions, alerts, recovery) are functions run by the same
thread in their own transaction, in their place in the queue.

On SQLite, rows are written through the driver with statements prepared once per table (a batch
takes one multi-row statement per table) and SQLAlchemy's own bind processors, so the rows stored
are the same as through SQLAlchemy Core. The usage rows of the gateway's hot path go to a writer
process instead (``writer_process.py``): the writer thread shares the interpreter lock with the
event loop, and under load every lock hand-over between them cost the loop more than the write
itself. Rows without a waiter (write-ahead rows) that fail go to ``lost`` (the ledger's spool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from costwarden.errors import StorageError
from costwarden.ledger.engine import storage_error
from costwarden.ledger.queue_items import (
    Job,
    RowRefused,
    Write,
    insert_ignoring_duplicates,
    partition,
    resolve_all,
)
from costwarden.ledger.rollups import insert_events
from costwarden.ledger.schema import inflight, rejections
from costwarden.ledger.sqlite_statements import SqliteStatements
from costwarden.ledger.writer_process import parameters

log = logging.getLogger(__name__)

MAX_BATCH = 2000
_STOP = object()


class Writer:
    """Owns the writer thread of one database."""

    def __init__(self, engine: Engine, lost: Callable[[list[Write]], None] | None = None,
                 name: str = "costwarden-ledger-writer") -> None:
        self._engine = engine
        self._lost = lost  # takes rows without a waiter that failed (called on the writer thread)
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
                self._fail([item for item in items if isinstance(item, Write | Job)],
                           StorageError(f"ledger writer failed: {exc}"))
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
            self._fail(writes, RowRefused())
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

    def _fail(self, items: Sequence[Write | Job], error: BaseException) -> None:
        lost: list[Write] = []
        for item in items:
            if item.waiter is not None:
                item.waiter.resolve(error=error)
            elif isinstance(item, Write):
                lost.append(item)
        if not lost:
            return
        if self._lost is not None and not isinstance(error, RowRefused):
            self._lost(lost)
        else:
            log.error("ledger: %d write-ahead rows were lost: %s", len(lost), error)


def _write_batch(conn: Connection, writes: list[Write]) -> None:
    ahead, events, stale, refused = partition(writes)
    if ahead:
        conn.execute(insert_ignoring_duplicates(conn, inflight), ahead)
    if events:
        insert_events(conn, events)  # and their rollups
        if stale:
            conn.execute(delete(inflight).where(inflight.c.id.in_(stale)))
    if refused:
        conn.execute(insert_ignoring_duplicates(conn, rejections), refused)
