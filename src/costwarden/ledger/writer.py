"""The one writer of a database: a thread that drains a queue in batches.

Callers on the event loop enqueue rows and (usually) await a future that resolves once their row
is committed. While one batch commits, the next one accumulates, so the cost of a commit is shared
by every call that arrived meanwhile (group commit). Items are applied in queue order: a call's
write-ahead row always lands before, or in the same transaction as, its final event, which
deletes it. Other writes (keys, policy versions, alerts, recovery) are functions run by the same
thread in their own transaction, in their place in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.sql import Insert
from sqlalchemy.sql.schema import Table

from costwarden.errors import StorageError
from costwarden.ledger.engine import storage_error
from costwarden.ledger.schema import inflight, rejections, usage_events

log = logging.getLogger(__name__)

MAX_BATCH = 2000


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
            with self._engine.begin() as conn:
                result = job.fn(conn)
        except SQLAlchemyError as exc:
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
            with self._engine.begin() as conn:
                _write_batch(conn, writes)
        except (IntegrityError, DataError):
            # One bad row must not sink the batch: write each on its own to find it.
            if len(writes) > 1:
                for write in writes:
                    self._flush([write])
                return
            self._fail(writes, StorageError("ledger: a row was refused by the database"))
            return
        except SQLAlchemyError as exc:
            self._fail(writes, storage_error(exc, "writing usage"))
            return
        resolve_all([write.waiter for write in writes if write.waiter is not None])

    @staticmethod
    def _fail(items: list[Write] | list[Job], error: BaseException) -> None:
        waited = False
        for item in items:
            if item.waiter is not None:
                item.waiter.resolve(error=error)
                waited = True
        if not waited:
            log.error("ledger: a write-ahead row was lost: %s", error)


def _write_batch(conn: Connection, writes: list[Write]) -> None:
    ahead = [w.row for w in writes if w.kind == "inflight"]
    events = [w.row for w in writes if w.kind == "event"]
    refused = [w.row for w in writes if w.kind == "rejection"]
    settled = {row["id"] for row in events}
    # A call that began and ended within one batch needs no write-ahead row at all.
    ahead_ids = {row["id"] for row in ahead}
    ahead = [row for row in ahead if row["id"] not in settled]
    if ahead:
        conn.execute(insert_ignoring_duplicates(conn, inflight), ahead)
    if events:
        conn.execute(insert_ignoring_duplicates(conn, usage_events), events)
        stale = sorted(settled - ahead_ids)
        if stale:
            conn.execute(delete(inflight).where(inflight.c.id.in_(stale)))
    if refused:
        conn.execute(insert_ignoring_duplicates(conn, rejections), refused)
