"""The direct lane: a lone call's ledger rows committed from the gateway's event loop (PostgreSQL).

A row sent to the writer process (``writer_process.py``) crosses two pipes, its batch and the
answer, and at concurrency 1 that was a quarter of an event's time to durable. When the writer
process has nothing pending and nothing in flight, the lane commits a call's rows itself,
through two libpq connections held on the event loop (psycopg's ``pq``, non-blocking): the
statements are the writer process's (``PostgresStatements``), prepared on the server, with the
same durability: write-ahead rows on a connection with ``synchronous_commit = off``, events on a
durable one.

Which rows take it, as the writer process's client decides (``writer_process_client.py``): the
event of a lone call (no other call in flight, as ``company.py`` counts them) and, while calls
come one at a time (``Company.lull``), its write-ahead row, when neither the writer process nor
the lane has a row pending or in flight; and the event of a call whose write-ahead row is still
being committed on the lane, which waits for that commit (its statement deletes that row, so the
row must be there first). With calls in flight together the lane is not used, so the writer
process's batches and their company are as before.

When it fails: a row the lane does not commit (its connection broke or took longer than
``TIMEOUT_S``, or the database refused the row) goes on to the writer process with its waiter,
as if it had been put there, so that path's handling applies (a refused row found, the spool
when the database is down, the commit deadline of ``ledger.py``). Every statement is idempotent,
so a row committed on the lane whose answer was lost is committed again harmlessly; a
write-ahead row whose commit, on a connection given up, lands after its call's event is left
behind and dropped by recovery (it settles nothing twice). A broken lane is opened again in the
background, after ``RECONNECT_S`` and then less and less often while it fails (at most every
``RECONNECT_MAX_S``); meanwhile rows go to the writer process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq

from costwarden.ledger.queue_items import RowKind, Write
from costwarden.ledger.sqlite_statements import PostgresStatements
from costwarden.ledger.writer_process import Statement, session_settings

log = logging.getLogger(__name__)
TIMEOUT_S = 1.0  # a row's commit on the lane, before it goes to the writer process instead
RECONNECT_S = 0.5  # before opening a broken lane again; doubled after each failed attempt
RECONNECT_MAX_S = 8.0
CONNECT_TIMEOUT_S = 2
APPLICATION_NAME = "costwarden direct lane"  # its connections, as pg_stat_activity shows them
HandOver = Callable[[Write], None]


@dataclass(slots=True)
class _Item:
    """A row on the lane: its statement, with ``$n`` placeholders, and its text parameters."""

    write: Write
    sql: bytes
    params: list[bytes | None]


class DirectLane:
    """The lane of one ledger on one event loop. ``hand_over`` puts a row on the writer
    process's path; ``idle`` is called when the lane's last row is answered. Not thread-safe."""

    def __init__(self, url: str, statements: PostgresStatements, loop: asyncio.AbstractEventLoop,
                 hand_over: HandOver, idle: Callable[[], None]) -> None:
        self._url = url
        self._statements = statements
        self._loop = loop
        self._hand_over = hand_over
        self._idle = idle
        self._sessions: dict[bool, _Session] | None = None  # by whether it commits unflushed
        self._ahead: dict[str, list[Write]] = {}  # write-ahead rows being committed: events behind
        self._texts: dict[str, bytes | None] = {}  # statement text, with ``$n`` placeholders
        self._connecting: asyncio.Task[None] | asyncio.TimerHandle | None = None
        self._pause_s = RECONNECT_S
        self._closed = False

    @property
    def open(self) -> bool:
        """Whether the lane's connections are open (it takes rows)."""
        return self._sessions is not None

    @property
    def busy(self) -> bool:
        """Whether a row is on the lane."""
        sessions = self._sessions
        return bool(self._ahead) or (sessions is not None and any(s.busy for s in sessions.values()))

    def start(self) -> None:
        """Open the lane's connections in the background."""
        if not self._closed and self._sessions is None and self._connecting is None:
            self._connecting = self._loop.create_task(self._connect())

    def take(self, write: Write, alone: bool) -> bool:
        """Put ``write`` on the lane if it is one the lane takes (see the module's docstring);
        ``alone``: it is the row of a lone call, and the writer process has no row."""
        kind = write.kind
        if kind is RowKind.EVENT:
            behind = self._ahead.get(write.row["id"])
            if behind is not None:
                behind.append(write)
                return True
        elif kind is not RowKind.INFLIGHT:
            return False
        if not alone or self.busy:
            return False
        sessions = self._sessions
        if sessions is None:
            return False
        item = self._item(write)
        if item is None:
            return False
        if kind is RowKind.INFLIGHT:
            self._ahead[write.row["id"]] = []
        sessions[kind is RowKind.INFLIGHT].submit(item)
        return True

    async def close(self) -> None:
        """Close the connections (after the rows on the lane are answered: ``busy`` is False)."""
        self._closed = True
        connecting = self._connecting
        if isinstance(connecting, asyncio.TimerHandle):
            connecting.cancel()
        elif connecting is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        self._give_up()

    def _item(self, write: Write) -> _Item | None:
        """``write`` as one statement with text parameters; None for a row the lane leaves to the
        writer process (a batch of several statements, or a parameter of another type)."""
        statements: list[Statement] = self._statements.batch([write])
        if len(statements) != 1:
            return None
        sql, values = statements[0]
        text = self._texts.get(sql, b"")
        if text == b"":
            text = self._texts[sql] = _numbered(sql)
        params = _text_parameters(values)
        if text is None or params is None:
            return None
        return _Item(write, text, params)

    def _answered(self, item: _Item) -> None:
        write = item.write
        if write.waiter is not None and not write.waiter.future.done():
            write.waiter.future.set_result(None)
        if write.kind is RowKind.INFLIGHT:
            for event in self._ahead.pop(write.row["id"], []):
                self._follow(event)
        if not self.busy:
            self._idle()

    def _follow(self, event: Write) -> None:
        """An event whose write-ahead row has just been committed on the lane."""
        item = self._item(event) if self._sessions is not None else None
        if item is None or self._sessions is None:
            self._hand_over(event)
        else:
            self._sessions[False].submit(item)

    def _refused(self, item: _Item) -> None:
        """The database refused the row: the writer process finds which and says so."""
        self._pass_on([item])
        if not self.busy:
            self._idle()

    def _broken(self, reason: str) -> None:
        """A connection failed or overran: every row on the lane goes to the writer process, its
        write-ahead rows first, each followed by its events."""
        log.warning("ledger: the direct lane failed (%s); its rows go to the writer process", reason)
        sessions = self._sessions
        self._give_up()
        if sessions is not None:
            self._pass_on(sessions[True].take_all())
            self._pass_on(sessions[False].take_all())
        for behind in list(self._ahead.values()):  # write-ahead rows handed over above
            for event in behind:
                self._hand_over(event)
        self._ahead.clear()
        self._reopen_later()
        self._idle()

    def _pass_on(self, items: list[_Item]) -> None:
        for item in items:
            self._hand_over(item.write)
            if item.write.kind is RowKind.INFLIGHT:
                for event in self._ahead.pop(item.write.row["id"], []):
                    self._hand_over(event)

    def _give_up(self) -> None:
        sessions, self._sessions = self._sessions, None
        for session in (sessions or {}).values():
            session.close()

    def _reopen_later(self) -> None:
        if not self._closed and self._connecting is None:
            self._connecting = self._loop.call_later(self._pause_s, self._reopen)

    def _reopen(self) -> None:
        self._connecting = None
        self.start()

    async def _connect(self) -> None:
        conns: dict[bool, psycopg.Connection[Any]] = {}
        try:
            for unflushed in (False, True):
                conns[unflushed] = await asyncio.to_thread(self._open, unflushed)
        except psycopg.Error as exc:
            log.debug("ledger: could not open the direct lane: %s", exc)
        finally:
            self._connecting = None
        if self._closed or len(conns) < 2:
            for conn in conns.values():
                conn.close()
            self._pause_s = min(2 * self._pause_s, RECONNECT_MAX_S)
            self._reopen_later()
            return
        self._pause_s = RECONNECT_S
        self._sessions = {unflushed: _Session(self, self._loop, conn) for unflushed, conn in conns.items()}

    def _open(self, unflushed: bool) -> psycopg.Connection[Any]:
        """A connection set up as the writer process's (on a worker thread)."""
        conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name=APPLICATION_NAME)
        try:
            for setting in session_settings(unflushed):
                conn.execute(setting)
            conn.pgconn.nonblocking = 1
        except BaseException:
            conn.close()
            raise
        return conn


class _Session:
    """One connection of the lane: its rows committed one at a time, in order. A statement's
    first run is unprepared, so that a row never waits for a preparation; the text is prepared
    on the server once the connection is next idle, and run prepared from then on."""

    def __init__(self, lane: DirectLane, loop: asyncio.AbstractEventLoop, conn: psycopg.Connection[Any]) -> None:
        self._lane = lane
        self._loop = loop
        self._conn = conn
        self._pgconn = conn.pgconn
        self._fd = self._pgconn.socket
        self._queue: collections.deque[_Item] = collections.deque()
        self._current: _Item | None = None
        self._names: dict[bytes, bytes] = {}  # prepared statements, by text
        self._unprepared: dict[bytes, None] = {}  # texts run, to prepare when idle
        self._preparing: tuple[bytes, bytes] | None = None  # (name, text) being prepared
        self._result: pq.abc.PGresult | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._open = True
        loop.add_reader(self._fd, self._readable)

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    def submit(self, item: _Item) -> None:
        self._queue.append(item)
        if self._current is None and self._preparing is None:
            self._next()

    def take_all(self) -> list[_Item]:
        """The rows not answered, in order; the session keeps none."""
        items = [*([self._current] if self._current is not None else []), *self._queue]
        self._current = None
        self._queue.clear()
        return items

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._timer is not None:
            self._timer.cancel()
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        with contextlib.suppress(psycopg.Error):
            self._conn.close()

    def _next(self) -> None:
        """Send the next row's statement, or else prepare a text run unprepared."""
        pgconn = self._pgconn
        try:
            if self._queue:
                item = self._current = self._queue.popleft()
                name = self._names.get(item.sql)
                if name is not None:
                    pgconn.send_query_prepared(name, item.params)
                else:
                    pgconn.send_query_params(item.sql, item.params)
                    self._unprepared[item.sql] = None
            elif self._unprepared:
                sql = next(iter(self._unprepared))
                del self._unprepared[sql]
                self._preparing = name, _ = b"lane%d" % len(self._names), sql
                pgconn.send_prepare(name, sql)
            else:
                return
            self._timer = self._loop.call_later(TIMEOUT_S, self._overdue)
            if pgconn.flush():
                self._loop.add_writer(self._fd, self._writable)
        except psycopg.Error as exc:
            self._lane._broken(f"{type(exc).__name__}: {exc}")

    def _writable(self) -> None:
        try:
            if not self._pgconn.flush():
                self._loop.remove_writer(self._fd)
        except psycopg.Error as exc:
            self._lane._broken(f"{type(exc).__name__}: {exc}")

    def _readable(self) -> None:
        pgconn = self._pgconn
        try:
            pgconn.consume_input()
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection was closed")
            while (self._current is not None or self._preparing is not None) and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is not None:
                    self._result = result
                    continue
                result, self._result = self._result, None
                self._done(result)
        except psycopg.Error as exc:
            self._lane._broken(f"{type(exc).__name__}: {exc}")

    def _done(self, result: pq.abc.PGresult | None) -> None:
        """The current step (a row's statement, or preparing a text) is answered."""
        if self._timer is not None:
            self._timer.cancel()
        ok = result is not None and result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK)
        state = b"" if result is None else (result.error_field(pq.DiagnosticField.SQLSTATE) or b"")
        if not ok and state[:2] not in (b"22", b"23"):  # not a value or a constraint: the connection
            message = b"" if result is None else result.error_message
            self._lane._broken(message.decode(errors="replace").strip() or "no result")
            return
        item, self._current = self._current, None
        if self._preparing is not None:
            name, sql = self._preparing
            self._preparing = None
            if ok:
                self._names[sql] = name
        elif item is not None and ok:
            self._lane._answered(item)
        elif item is not None:
            self._lane._refused(item)
        if self._open and self._current is None and self._preparing is None:
            self._next()

    def _overdue(self) -> None:
        self._lane._broken(f"a commit took longer than {TIMEOUT_S:g} s")


def _numbered(sql: str) -> bytes | None:
    """``sql`` with psycopg's ``%s`` placeholders as PostgreSQL's ``$1``, ``$2``...; None for a
    text with any other ``%``."""
    parts = sql.split("%s")
    if any("%" in part for part in parts):
        return None
    numbered = parts[0]
    for number, part in enumerate(parts[1:], 1):
        numbered += f"${number}{part}"
    return numbered.encode()


def _text_parameters(values: list[Any]) -> list[bytes | None] | None:
    """Parameters in PostgreSQL's text format: strings, and lists of strings as arrays (the ids
    of ``varchar[]``); None if any is of another type."""
    texts: list[bytes | None] = []
    for value in values:
        if value is None or type(value) is str:
            texts.append(None if value is None else value.encode())
        elif type(value) is list and all(type(v) is str for v in value):
            quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value)
            texts.append(("{" + ",".join(quoted) + "}").encode())
        else:
            return None
    return texts
