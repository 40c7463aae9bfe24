"""What a ledger does while its database cannot take rows (PostgreSQL down, SQLite locked, disk
full): the rows of calls already forwarded go to the local spool, new calls are refused before
they are forwarded (or, if configured, accepted into the spool), and a background task probes the
database and replays the spool into it.

The ledger turns unavailable when a commit fails or overruns its deadline, and available again
once a probe succeeds and the spool has been replayed. Replaying is idempotent: event and
rejection ids are unique and inserted ignoring duplicates, and a write-ahead row whose call's
event is already in the database is not left behind. If even the spool cannot be written (its
disk is full), rows are kept in memory and written again at every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from costwarden.errors import StorageError
from costwarden.ledger.queue_items import RowKind, insert_ignoring_duplicates
from costwarden.ledger.rollups import insert_events
from costwarden.ledger.schema import inflight, rejections, usage_events
from costwarden.ledger.spool import Journal, Spool, SpooledRow, SpoolError

log = logging.getLogger(__name__)
PROBE_INTERVAL_S = 0.5  # between attempts to reach the database again
REPLAY_CHUNK = 500  # spooled rows per replaying transaction
UNAVAILABLE = "The usage ledger is unreachable; this call was not forwarded and not charged. Retry shortly."


class WhenDown(StrEnum):
    """What happens to new calls while the ledger's database is unreachable."""

    REFUSE = "refuse"  # 503 storage_unavailable before forwarding
    SPOOL = "spool"  # forwarded, their rows kept in the local spool


Replay = Callable[[list[SpooledRow]], Awaitable[None]]


class Outage:
    """The availability of one ledger and where its rows go while it is unavailable."""

    def __init__(self, spool: Spool, when_down: WhenDown, probe: Callable[[], Awaitable[None]],
                 replay: Replay) -> None:
        self.spool = spool
        self.when_down = when_down
        self._probe = probe
        self._replay = replay
        self._available = True
        self._held: list[SpooledRow] = []  # rows neither the database nor the spool took
        self._lock = threading.Lock()  # ``_held`` is shared with the writer thread
        self._spooling = 0  # appends under way
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def available(self) -> bool:
        """Whether the database is taking rows (False from a failed commit until it is back and
        the spool has been replayed)."""
        return self._available

    @property
    def accepting(self) -> bool:
        """Whether new calls may be forwarded: the database is available, or new calls are to be
        spooled and the spool can be written."""
        if self._available:
            return True
        with self._lock:
            return self.when_down is WhenDown.SPOOL and not self._held

    def check_accepting(self) -> None:
        """Raise StorageError (503, retry) unless a new call may be forwarded."""
        if not self.accepting:
            raise StorageError(UNAVAILABLE)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop recovery runs on (the one the ledger's rows are written from)."""
        if self._loop is None or self._loop.is_closed():
            self._loop = loop

    # -- rows the database did not take ------------------------------------------------------

    def mark_down(self, reason: str) -> None:
        """The database failed a write: take new rows to the spool and start probing it."""
        if self._available:
            log.error("ledger unavailable (%s): rows go to the spool in %s until it is back; new calls are %s",
                      reason, self.spool.directory,
                      "refused" if self.when_down is WhenDown.REFUSE else "accepted into the spool")
        self._available = False
        self._start_recovery()

    async def keep(self, rows: Sequence[SpooledRow]) -> None:
        """Write ``rows`` to the spool (synced), or hold them in memory if even that fails; never
        raises for a storage failure."""
        self._spooling += 1
        try:
            await asyncio.to_thread(self.spool.append, rows)
        except SpoolError as exc:
            self._hold(rows, exc)
        finally:
            self._spooling -= 1
        self._start_recovery()

    def keep_soon(self, rows: Sequence[SpooledRow]) -> None:
        """``keep`` without waiting (a write-ahead row: nobody waits for it)."""
        task = asyncio.get_running_loop().create_task(self.keep(rows))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def keep_from_thread(self, rows: Sequence[SpooledRow], reason: str) -> None:
        """``keep`` for the writer thread: synced before it returns."""
        try:
            self.spool.append(rows)
        except SpoolError as exc:
            self._hold(rows, exc)
        self._available = False
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: the next start replays
                loop.call_soon_threadsafe(self.mark_down, reason)

    def _hold(self, rows: Sequence[SpooledRow], exc: SpoolError) -> None:
        log.error("ledger spool unwritable (%s): %d rows held in memory until the database or the spool "
                  "takes them", exc, len(rows))
        with self._lock:
            self._held.extend(rows)

    # -- getting back -----------------------------------------------------------------------

    def _start_recovery(self) -> None:
        if self._closed or (self._recovery is not None and not self._recovery.done()):
            return
        loop = asyncio.get_running_loop()
        self.attach(loop)
        self._recovery = loop.create_task(self._recover(), name="ledger-recovery")

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)  # the interval between probes, not synchronization
            try:
                await self._probe()
                replayed = await self.drain()
            except StorageError as exc:
                log.debug("ledger still unavailable: %s", exc)
                await self._spool_held()
                continue
            except OSError as exc:  # a journal could not be read: try again, say why
                log.error("ledger spool: %s", exc)
                continue
            if not self._available:
                log.warning("ledger available again; %d spooled rows replayed into it", replayed)
            self._available = True  # new rows go to the database again
            if self._idle():
                return
            # rows spooled while this replay ran: replay them too, without waiting

    def _idle(self) -> bool:
        with self._lock:
            held = bool(self._held)
        return not held and self._spooling == 0 and not self.spool.pending

    async def _spool_held(self) -> None:
        """Retry the spool with the rows held in memory."""
        with self._lock:
            held, self._held = self._held, []
        if not held:
            return
        try:
            await asyncio.to_thread(self.spool.append, held)
        except SpoolError:
            with self._lock:
                self._held[:0] = held

    async def drain(self) -> int:
        """Replay the rows held in memory and every journal (this process's and those left by
        dead ones) into the database; returns how many rows. Raises StorageError if it cannot."""
        with self._lock:
            held, self._held = self._held, []
        try:
            await self._replay(held)
        except BaseException:
            with self._lock:
                self._held[:0] = held
            raise
        journals = await asyncio.to_thread(self.spool.rotate)
        finished: list[Journal] = []
        try:
            replayed = len(held)
            for journal in journals:
                rows = await asyncio.to_thread(journal.read)
                for start in range(0, len(rows), REPLAY_CHUNK):
                    await self._replay(rows[start:start + REPLAY_CHUNK])
                await asyncio.to_thread(self.spool.finish, journal)
                finished.append(journal)
                replayed += len(rows)
        finally:
            self.spool.release([journal for journal in journals if journal not in finished])
        return replayed

    async def stop(self) -> None:
        """Stop probing and replaying, and finish the spool appends under way."""
        self._closed = True
        tasks = [*self._tasks, *([self._recovery] if self._recovery is not None else [])]
        for task in tasks:
            if task.get_loop() is _running_loop():
                if task is self._recovery:
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def close(self) -> None:
        """After ``stop`` and the writers' last rows: rows still held in memory go to the spool if
        it takes them; journals with rows stay on disk for the next start."""
        await self._spool_held()
        with self._lock:
            lost = len(self._held)
        if lost:
            log.error("ledger closed with %d rows neither the database nor the spool took: they are lost", lost)
        self.spool.close()


def replay(conn: Connection, rows: Sequence[SpooledRow]) -> None:
    """Insert spooled rows, leaving those already in the database as they are; a write-ahead row
    whose call's event is in the database is removed (it may have been spooled after the event
    was committed)."""
    by_kind: dict[RowKind, list[dict[str, object]]] = {kind: [] for kind in RowKind}
    for kind, row in rows:
        by_kind[kind].append(row)
    events, ahead = by_kind[RowKind.EVENT], by_kind[RowKind.INFLIGHT]
    if events:
        insert_events(conn, events)  # and their rollups
    if by_kind[RowKind.REJECTION]:
        conn.execute(insert_ignoring_duplicates(conn, rejections), by_kind[RowKind.REJECTION])
    if ahead:
        conn.execute(insert_ignoring_duplicates(conn, inflight), ahead)
    ids = [row["id"] for row in ahead] + [row["id"] for row in events]
    if ids:
        settled = select(usage_events.c.id).where(usage_events.c.id.in_(ids))
        conn.execute(delete(inflight).where(inflight.c.id.in_(ids), inflight.c.id.in_(settled)))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
