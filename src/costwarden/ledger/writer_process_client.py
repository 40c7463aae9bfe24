"""The gateway's end of a ledger's writer process (``writer_process.py`` for SQLite,
``--postgresql`` for PostgreSQL): usage rows put on one event loop are sent to the process
in batches, and a row's waiter resolves only once the process has committed it (an event is
durable before its response ends). On PostgreSQL, the rows of a lone call (no other call in
flight, no row at the process) are committed from the event loop instead (``direct_lane.py``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy.engine import Dialect

from costwarden.errors import StorageError
from costwarden.ledger import writer_process
from costwarden.ledger.company import Company
from costwarden.ledger.direct_lane import DirectLane, HandOver
from costwarden.ledger.engine import SQLITE_BUSY_TIMEOUT_MS
from costwarden.ledger.queue_items import RowKind, RowRefused, Write
from costwarden.ledger.sqlite_statements import PostgresStatements, SqliteStatements

log = logging.getLogger(__name__)
MAX_EXITS = 3  # writer processes that may exit in a row before the thread takes over
IN_FLIGHT = 2  # batches sent to the writer process before the first is answered (see Program.in_flight)
Lost = Callable[[list[Write]], None]
Lane = Callable[[asyncio.AbstractEventLoop, HandOver, Callable[[], None]], DirectLane]


@dataclass(frozen=True, slots=True)
class Program:
    """How to start a writer process and what to send it: the command line, the frame of a
    numbered batch, whether a batch waits for company (``company.py``) before it is sent, the
    process's environment (None: this process's), the direct lane of lone calls' rows, if any
    (``direct_lane.py``), and how many batches may be sent before the first is answered."""

    argv: Sequence[str]
    encode: Callable[[int, list[Write]], bytes]
    company: bool = False
    env: Mapping[str, str] | None = field(default=None)
    lane: Lane | None = None
    in_flight: int = IN_FLIGHT


def sqlite_program(path: str, dialect: Dialect) -> Program:
    """The SQLite writer process: marshalled driver statements, prepared in this process."""
    statements = SqliteStatements(dialect)
    # -I -S: no environment, no site packages; the program needs the standard library only
    return Program([sys.executable, "-I", "-S", writer_process.__file__, path, str(SQLITE_BUSY_TIMEOUT_MS)],
                   lambda number, batch: writer_process.frame((number, statements.batch(batch))))


def postgres_program(url: str, dialect: Dialect) -> Program:
    """The PostgreSQL writer process, through psycopg. A batch someone waits for is held back to
    wait for company (``company.py``), and one batch is in flight at a time: the rows queued while
    it commits go together in the next one. A statement costs PostgreSQL about 350 us whatever it
    holds, and 33 us more per call; with one batch in flight rather than two, its CPU per call
    fell by a fifth at c=16 and c=64 (fewer, bigger commits) and the added latency did not grow
    (``bench/gateway.py --store redis``, interleaved runs, ``docs/scaling.md``). Lone calls do not
    wait for it: they go by the direct lane."""
    statements = PostgresStatements(dialect)
    # -I: no PYTHON* variables nor user site; the site packages stay, for psycopg
    return Program([sys.executable, "-I", writer_process.__file__, "--postgresql"],
                   lambda number, batch: writer_process.frame((number, statements.batch(batch))),
                   company=True, env={**os.environ, writer_process.URL_VARIABLE: url},
                   lane=lambda loop, hand_over, idle: DirectLane(url, statements, loop, hand_over, idle),
                   in_flight=1)


class WriterProcessClient:
    """Usage rows of one ledger for one event loop, written by a writer process.

    Rows put on the loop are sent as one batch when the loop next runs callbacks; up to
    ``Program.in_flight`` batches are sent before the first is answered (with two, the process
    never waits for the next one). A row's waiter resolves once the process has committed it; it
    commits batches in the order sent. A refused row is found by sending the rows of its batch again one by one
    (a write-ahead row of that batch may then land after its call's event, which only leaves a
    row that recovery drops). Every row is idempotent (INSERT ... ON CONFLICT DO NOTHING,
    DELETE), so if the process exits, the batches it had not answered are sent again to a new one;
    if processes cannot be started or keep exiting, the rows go to ``fallback`` (the writer
    thread) and this writer is no longer ``usable``. Rows without a waiter (write-ahead rows) that
    fail are handed to ``lost``. With ``Program.company``, a batch whose every row is waited for
    is held back while it waits for company, by the writer thread's rules (``company.py``); a
    batch with a write-ahead row goes at once. With ``Program.lane``, a lone call's rows go to the
    direct lane instead, which hands back those it does not commit; ``drain`` waits for them too.
    Not thread-safe: everything runs on ``loop``.
    """

    def __init__(self, program: Program, loop: asyncio.AbstractEventLoop,
                 fallback: Callable[[Write], None], lost: Lost) -> None:
        self.loop = loop
        self.usable = True
        self._program = program
        self._fallback = fallback
        self._lost = lost
        self._pending: list[Write] = []
        self._sent: collections.deque[list[Write]] = collections.deque()  # answered in this order
        self._singles = 0  # batches to send one write at a time (finding a refused row)
        self._number = 0
        self._scheduled = False
        self._process: _Process | None = None
        self._starting: asyncio.Task[None] | None = None
        self._exits = 0  # process exits since the last batch committed
        self._idle: list[asyncio.Future[None]] = []
        self._company = Company() if program.company else None
        self._hold: _Hold | None = None
        self._lane = None if program.lane is None else program.lane(loop, self._to_process, self._maybe_idle)

    def put(self, write: Write) -> None:
        """Queue ``write`` for the next batch. The event of a call begun here, with no other
        call in flight, goes at once: no other event could join its batch, and waiting for the
        loop's other callbacks (its settlement's, say) would only delay its commit."""
        if not self.usable:
            self._fallback(write)
            return
        company = self._company
        if company is not None:
            lone = write.kind is RowKind.EVENT and company.is_open(write.row["id"])
            company.note((write,), time.monotonic())
            lane = self._lane
            if lane is not None and lane.take(write, self._alone(write, company)):
                return
            self._pending.append(write)
            if lone and not company.in_flight and self._process is not None:
                self._send()
                return
        else:
            self._pending.append(write)
        self._kick()

    def _alone(self, write: Write, company: Company) -> bool:
        """Whether ``write``, noted by ``company``, is a lone call's row while the writer process
        has no row pending or being committed: an event with no other call in flight; a
        write-ahead row with none either, in a lull (``Company.lull``)."""
        if write.kind is RowKind.INFLIGHT:
            alone = company.in_flight == 1 and company.lull
        else:
            alone = write.kind is RowKind.EVENT and not company.in_flight
        return alone and not self._pending and not self._sent

    def _to_process(self, write: Write) -> None:
        """A row the direct lane did not commit: to the writer process after all."""
        if not self.usable:
            try:
                self._fallback(write)
            except StorageError as exc:
                self._fail([write], exc)
            return
        self._pending.append(write)
        self._kick()

    @property
    def lane_open(self) -> bool:
        """Whether a lone call's rows are committed on the direct lane now."""
        return self._lane is not None and self._lane.open

    def forget(self, writes: Sequence[Write]) -> None:
        """The calls of ``writes`` ended without this writer (their rows went to the spool): no
        batch waits for them any more (see ``company.py``)."""
        if self._company is not None:
            self._company.forget(write.row["id"] for write in writes)

    def start(self) -> None:
        """Start the process now rather than for the first row (it takes a moment to start),
        and open the direct lane."""
        if self.usable and self._process is None and self._starting is None:
            self._starting = self.loop.create_task(self._start())
        if self._lane is not None:
            self._lane.start()

    async def drain(self) -> None:
        """Return once every row put so far has been committed (or has failed)."""
        if self._busy():
            idle = self.loop.create_future()
            self._idle.append(idle)
            await idle

    async def close(self) -> None:
        """Write what is queued, then stop the process."""
        await self.drain()
        self.usable = False
        if self._lane is not None:
            await self._lane.close()
        if self._process is not None:
            process, self._process = self._process, None
            await process.stop()

    def _busy(self) -> bool:
        return (bool(self._pending) or bool(self._sent) or self._starting is not None
                or (self._lane is not None and self._lane.busy))

    def _kick(self) -> None:
        if len(self._sent) >= self._program.in_flight or not self._pending:
            return
        if self._process is None:
            self.start()
            return
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._send)  # after the callbacks now ready: a bigger batch

    async def _start(self) -> None:
        try:
            self._process = await _Process.spawn(self.loop, self._program, self._on_reply, self._on_exit)
        except Exception:  # the edge of a background task: hand the rows on, never hang them
            log.exception("ledger: could not start the writer process; writing from a thread instead")
            self._give_up()
        finally:
            self._starting = None
        self._kick()
        self._maybe_idle()

    def _held(self) -> bool:
        """Whether the pending rows wait for company now (see ``company.py``). A hold ends once
        enough events came or once its timer has fired, whatever the clocks say then: a timer may
        fire before ``time.monotonic`` has moved by its delay (uvloop rounds a delay to whole
        milliseconds and reads a coarser clock), and once no more rows come, the timer is the
        only thing that sends the held ones."""
        if self._company is None or self._singles or not all(w.waiter is not None for w in self._pending):
            self._release()
            return False
        events = sum(1 for w in self._pending if w.kind is RowKind.EVENT)
        if self._hold is None:
            wait = self._company.wait()
            if wait is None:
                return False
            window_s, wanted = wait
            self._hold = _Hold(self.loop.call_later(window_s, self._hold_over), events + wanted)
            return True
        if not self._hold.over and events < self._hold.enough:
            return True
        self._release()
        return False

    def _follows(self) -> bool:
        """Whether the pending rows, write-ahead rows alone, go with the next batch rather than
        beside the one being committed (with company, ``Program.company``): they are sent once it
        is answered, with the events queued meanwhile, as one statement instead of a transaction
        of their own (measured, ``bench/ledger_statements.py --mixed``, a tenth less of
        PostgreSQL's time per call). They wait for one commit at most, as rows do whenever
        ``Program.in_flight`` batches are being committed."""
        return self._company is not None and bool(self._sent) and all(w.waiter is None for w in self._pending)

    def _hold_over(self) -> None:
        if self._hold is not None:
            self._hold.over = True
        self._kick()

    def _release(self) -> None:
        if self._hold is not None:
            self._hold.timer.cancel()
            self._hold = None

    def _send(self) -> None:
        self._scheduled = False
        while len(self._sent) < self._program.in_flight and self._pending and self._process is not None:
            if self._held() or self._follows():
                return
            if self._singles:
                self._singles -= 1
                batch, self._pending = self._pending[:1], self._pending[1:]
            else:
                batch, self._pending = self._pending, []
            self._sent.append(batch)
            self._number += 1
            self._process.send(self._program.encode(self._number, batch))

    def _on_reply(self, number: int, kind: str | None, message: str) -> None:
        batch = self._sent.popleft() if self._sent else []
        self._exits = 0
        if kind is None:
            for write in batch:
                if write.waiter is not None and not write.waiter.future.done():
                    write.waiter.future.set_result(None)
        elif kind == writer_process.ROW_REFUSED and len(batch) > 1:
            self._pending[:0] = batch  # again, one by one, to find the row the database refused
            self._singles += len(batch)
        elif kind == writer_process.ROW_REFUSED:
            self._fail(batch, RowRefused())
        else:
            self._fail(batch, StorageError(f"ledger: writing usage failed: {message}"))
        self._kick()
        self._maybe_idle()

    def _on_exit(self) -> None:
        self._process = None
        unanswered = [write for batch in self._sent for write in batch]
        self._sent.clear()
        self._pending[:0] = unanswered  # maybe committed, maybe not: idempotent, so again
        self._exits += 1
        if self._exits > MAX_EXITS:
            log.error("ledger: the writer process keeps exiting; writing from a thread instead")
            self._give_up()
        elif self._pending:
            log.warning("ledger: the writer process exited; starting another for %d rows", len(self._pending))
        self._kick()
        self._maybe_idle()

    def _give_up(self) -> None:
        self.usable = False
        self._release()
        pending, self._pending, self._singles = self._pending, [], 0
        for write in pending:
            try:
                self._fallback(write)
            except StorageError as exc:
                self._fail([write], exc)

    def _fail(self, writes: list[Write], error: StorageError) -> None:
        for write in writes:
            if write.waiter is not None and not write.waiter.future.done():
                write.waiter.future.set_exception(error)
        lost = [write for write in writes if write.waiter is None]
        if lost and not isinstance(error, RowRefused):
            self._lost(lost)
        elif lost:
            log.error("ledger: a write-ahead row was refused: %s", error)

    def _maybe_idle(self) -> None:
        if self._busy():
            return
        idle, self._idle = self._idle, []
        for future in idle:
            if not future.done():
                future.set_result(None)


@dataclass(slots=True)
class _Hold:
    """Pending rows held back for company: the timer that ends the hold, how many pending events
    end it sooner, and whether the timer has fired."""

    timer: asyncio.TimerHandle
    enough: int
    over: bool = False


class _Process(asyncio.SubprocessProtocol):
    """The writer process and its framed pipes."""

    def __init__(self, on_reply: Callable[[int, str | None, str], None], on_exit: Callable[[], None]) -> None:
        self._on_reply = on_reply
        self._on_exit = on_exit
        self._buffer = bytearray()
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._exited: asyncio.Future[None] | None = None
        self._stopping = False

    @classmethod
    async def spawn(cls, loop: asyncio.AbstractEventLoop, program: Program,
                    on_reply: Callable[[int, str | None, str], None], on_exit: Callable[[], None]) -> _Process:
        process = cls(on_reply, on_exit)
        process._exited = loop.create_future()
        transport, _ = await loop.subprocess_exec(
            lambda: process, *program.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            env=None if program.env is None else dict(program.env))
        process._transport = transport
        process._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]  # a write pipe (uvloop's too)
        return process

    def send(self, data: bytes) -> None:
        assert self._stdin is not None
        self._stdin.write(data)

    async def stop(self) -> None:
        assert self._stdin is not None and self._exited is not None
        self._stopping = True
        self._stdin.close()  # end of input: the process finishes and exits
        await self._exited

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._buffer += data
        for number, kind, message in writer_process.unframe(self._buffer):
            self._on_reply(number, kind, message)

    def connection_lost(self, exc: Exception | None) -> None:
        # The process has exited and every reply it wrote has been read.
        if self._transport is not None:
            self._transport.close()
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
        if not self._stopping:
            self._on_exit()
