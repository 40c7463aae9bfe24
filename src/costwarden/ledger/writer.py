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
process instead (``writer_process.py``), on SQLite and on PostgreSQL: the writer thread shares the
interpreter lock with the event loop, and under load every lock hand-over between them cost the
loop more than the write itself. The thread takes those rows only where no process can (another
event loop, a SQLite URL with options) or once processes keep failing to start. Rows without a waiter (write-ahead rows) that fail go to ``lost`` (the ledger's spool).

Write-ahead rows are never held back: a row still in this process's queue is lost with it in a
``kill -9``, and the call it stands for would then go unsettled. Nobody waits for them, though, so
a batch of write-ahead rows alone commits without waiting for PostgreSQL to flush its WAL
(``synchronous_commit = off``, as the SQLite writer process commits them without a sync): the next
synchronous commit, or PostgreSQL's WAL writer within a fraction of a second, makes them durable.
Under load they ride along with other calls' events, and a call whose event is in the same batch
needs no write-ahead row at all (``partition``). Under concurrency, a batch of events that carries
no write-ahead row also waits a little for other calls' events (``company.py``), so that one commit
carries several calls even when commits are quick. On PostgreSQL the thread keeps one connection open, as on SQLite, and checks it only
after it has been idle for ``PING_AFTER_IDLE_S`` (a check on every batch cost a commit of its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import delete
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from costwarden.errors import StorageError
from costwarden.ledger.company import Company
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

log = logging.getLogger(__name__)

MAX_BATCH = 2000
PING_AFTER_IDLE_S = 1.0  # a PostgreSQL connection unused this long is checked before it is used
_STOP = object()


class Writer:
    """Owns the writer thread of one database."""

    def __init__(self, engine: Engine, lost: Callable[[list[Write]], None] | None = None,
                 name: str = "costwarden-ledger-writer") -> None:
        self._engine = engine
        self._lost = lost  # takes rows without a waiter that failed (called on the writer thread)
        self._sqlite = engine.dialect.name == "sqlite"
        self._statements = SqliteStatements(engine.dialect) if self._sqlite else None
        self._held: Connection | None = None  # the thread's connection, kept open
        self._used = 0.0  # when the held connection was last used (monotonic seconds)
        self._company = Company()
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
            items = self._take(None)
            if _STOP in items:
                stopping = True
                items = [item for item in items if item is not _STOP]
            work = [item for item in items if isinstance(item, Write | Job)]
            if not stopping:
                stopping = self._gather(work)
            try:
                self._process(work)
            except Exception as exc:  # the thread's outermost edge: never leave a caller hanging
                log.exception("ledger writer failed")
                self._fail(work, StorageError(f"ledger writer failed: {exc}"))
        self._drop_connection()

    def _gather(self, work: list[Write | Job]) -> bool:
        """Add to ``work`` the events of other calls in flight that come while it waits for
        company (see ``company.py``); returns whether the writer was asked to stop meanwhile."""
        self._company.note(_writes(work), time.monotonic())
        # a write-ahead row never waits (see the module's docstring), nor does a batch without events
        waited = any(item.waiter is not None for item in work) and not any(_write_ahead(item) for item in work)
        wait = self._company.wait() if waited else None
        if wait is None:
            return False
        window_s, wanted = wait
        deadline, ended = time.monotonic() + window_s, 0
        while ended < wanted and len(work) < MAX_BATCH:
            more = self._take(max(0.0, deadline - time.monotonic()), MAX_BATCH - len(work))
            if not more:
                return False
            added = [item for item in more if isinstance(item, Write | Job)]
            work.extend(added)
            ended += self._company.note(_writes(added), time.monotonic())
            if _STOP in more:
                return True
        return False

    def _take(self, timeout: float | None, limit: int = MAX_BATCH) -> list[object]:
        """What is queued, waiting up to ``timeout`` (None: for ever) for a first item."""
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(items) < limit:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    # -- connections ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """The held connection in a transaction, committed on leaving the block."""
        conn = self._connection()
        with conn.begin():
            yield conn
        self._used = time.monotonic()

    def _connection(self) -> Connection:
        if self._held is not None and not self._sqlite and time.monotonic() - self._used > PING_AFTER_IDLE_S:
            # PostgreSQL may have restarted since: find out now rather than by failing a batch.
            try:
                self._held.exec_driver_sql("SELECT 1")
                self._held.rollback()
            except SQLAlchemyError:
                self._drop_connection()
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
                with self._transaction() as conn:
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
            for sql, params in statements.batch(writes):
                cursor.execute(sql, params)
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


def _writes(items: Sequence[Write | Job]) -> list[Write]:
    return [item for item in items if isinstance(item, Write)]


def _write_ahead(item: Write | Job) -> bool:
    """A row nobody waits for (a write-ahead row)."""
    return isinstance(item, Write) and item.waiter is None


def _write_batch(conn: Connection, writes: list[Write]) -> None:
    ahead, events, stale, refused = partition(writes)
    if all(write.waiter is None for write in writes):
        # Nobody waits: do not wait for the WAL flush either (see the module's docstring).
        conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
    if ahead:
        conn.execute(insert_ignoring_duplicates(conn, inflight), ahead)
    if events:
        insert_events(conn, events)  # and their rollups
        if stale:
            conn.execute(delete(inflight).where(inflight.c.id.in_(stale)))
    if refused:
        conn.execute(insert_ignoring_duplicates(conn, rejections), refused)
