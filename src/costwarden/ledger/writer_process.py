"""The program of a ledger's writer process, and the framing both ends of its pipes share.

The gateway's hot-path usage rows are committed by a separate process because a writer thread
shares the interpreter lock with the event loop, and under load every hand-over between them cost
the loop more than the write itself (``writer_process_client.py`` is the gateway's end).

The process reads frames of ``(batch number, [Statement, ...])`` from its standard input, runs
each batch in one ``BEGIN IMMEDIATE`` transaction, and answers ``(batch number, outcome,
message)`` once it is committed. At end of input (the parent closed it, or died) it finishes and
exits: a parent killed meanwhile leaves it to commit what it was sent, then exit. Commits are
durable (``synchronous=FULL``: the WAL is synced before a commit returns), and their cost is
shared by every row of a batch. Commits do not checkpoint the WAL (the copy to the
database file, every 1,000 pages by default, held up a batch for milliseconds): a thread of its
own checkpoints beside them (PASSIVE: never blocking a writer), and if that thread fails, commits
checkpoint again as SQLite's default does.

It is run by path (``python -I -S writer_process.py DB BUSY_TIMEOUT_MS``) rather than with ``-m``,
so that it starts in milliseconds without importing the package: it imports the standard library
only, which a test checks.

On PostgreSQL (``python -I writer_process.py --postgresql``, the URL in ``URL_VARIABLE``) it does
the same through psycopg, which is all it imports besides the standard library (importing the
package and SQLAlchemy took a second on a loaded machine, longer than a call waits for its
commit). A batch of write-ahead rows only commits without waiting for the WAL flush, on a
connection of its own (``synchronous_commit = off``): the next batch with an event flushes it, as
the WAL sync does on SQLite. A batch of one statement (most are: a call's event deletes its
write-ahead row and adds to the rollups in the same statement) runs as a transaction of its own,
in one round trip. A connection idle for ``PING_AFTER_IDLE_S`` is checked before it is used
(PostgreSQL may have restarted meanwhile); one that failed is replaced at the next batch.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final

HEADER: Final = struct.Struct(">I")  # the length of the marshalled body that follows
CHECKPOINT_INTERVAL_S: Final = 0.1
URL_VARIABLE: Final = "COSTWARDEN_LEDGER_WRITER_URL"  # the PostgreSQL URL (kept off the command line)
PING_AFTER_IDLE_S: Final = 1.0
# Prepared statements a SQLite connection keeps: a multi-row statement of every size, up to
# MAX_ROWS_PER_STATEMENT, for each table a batch writes (``sqlite_statements``), and the rest.
STATEMENT_CACHE: Final = 512
# How the writer's connections plan. Its statements are prepared (psycopg prepares a text run five
# times) and their best plan does not depend on the values sent: with a few hundred write-ahead
# rows, PostgreSQL chose to plan a call's event anew on every execution ("custom" plans: 0.4 ms of
# the server's time each). Its only scan is of the write-ahead rows, by id, and that table churns
# (every call inserts a row, its event deletes it): a plan made while it held few rows read it
# whole, dead rows included, until the next vacuum, when the primary key finds the few ids at once.
PLANNER_SETTINGS: Final = ("SET plan_cache_mode TO force_generic_plan", "SET enable_seqscan TO off")

# A batch's outcome: None (committed), ROW_REFUSED (a constraint or value; sending its rows one by
# one finds the row) or FAILED (the database could not take the batch).
ROW_REFUSED: Final = "row"
FAILED: Final = "error"

# A statement for the driver: its SQL and its parameters, flat (every row's values in turn for a
# multi-row statement). Only builtin types, so that ``marshal`` carries them.
Statement = tuple[str, list[Any]]
Reply = tuple[int, str | None, str]


def session_settings(unflushed: bool) -> list[bytes]:
    """What a writer's new PostgreSQL connection runs first: ``PLANNER_SETTINGS``, and for one
    that commits write-ahead rows (``unflushed``), commits that do not wait for the WAL flush."""
    settings = [setting.encode() for setting in PLANNER_SETTINGS]
    return [*settings, b"SET synchronous_commit TO OFF"] if unflushed else settings


def frame(message: Any) -> bytes:
    """``message`` marshalled, behind its length."""
    body = marshal.dumps(message)
    return HEADER.pack(len(body)) + body


def unframe(buffer: bytearray) -> list[Any]:
    """Every complete frame at the head of ``buffer``, removed from it; a partial one stays."""
    messages = []
    while len(buffer) >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer)
        if len(buffer) < HEADER.size + size:
            break
        messages.append(marshal.loads(bytes(buffer[HEADER.size:HEADER.size + size])))
        del buffer[:HEADER.size + size]
    return messages


def connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection with the ledger's pragmas; transactions are managed explicitly."""
    db = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000,
                         cached_statements=STATEMENT_CACHE)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an acknowledged row survives a power loss
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    # A multi-row statement inside BEGIN keeps the pages it changes in a statement journal (to undo
    # it alone), a temporary file once past 64 KiB: as many bytes written as to the WAL itself.
    # In memory, it is written nowhere; it stays as small as a batch.
    db.execute("PRAGMA temp_store=MEMORY")
    return db


def write_ahead_only(statements: list[Statement]) -> bool:
    """Whether a batch holds only write-ahead rows (inserts into ``inflight``)."""
    return all(sql.split(None, 3)[2].strip('"') == "inflight" for sql, _ in statements)


def commit(db: sqlite3.Connection, statements: list[Statement]) -> tuple[str | None, str]:
    """Run ``statements`` in one transaction; the outcome and, on failure, the driver's message.

    A batch of write-ahead rows only is committed without syncing the WAL (it survives the
    process, not a power loss): nobody waits for it, and the next batch with an event or a
    rejection syncs the WAL, which makes every earlier frame durable too. A call's final event
    then costs one disk sync, not two (the write-ahead row's commit would otherwise be in the way)."""
    try:
        db.execute("PRAGMA synchronous=NORMAL" if write_ahead_only(statements) else "PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        for sql, params in statements:
            db.execute(sql, params)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.rollback()
        kind = ROW_REFUSED if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError) else FAILED
        return kind, f"{type(exc).__name__}: {exc}"
    return None, ""


class Checkpointer:
    """A daemon thread that checkpoints the WAL beside the commits; ``alive`` until it fails."""

    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self._path = path
        self._timeout_ms = busy_timeout_ms
        self._alive = threading.Event()
        self._stop = threading.Event()
        self._alive.set()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoints", daemon=True)

    @property
    def alive(self) -> bool:
        return self._alive.is_set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            db = connect(self._path, self._timeout_ms)
            try:
                while not self._stop.wait(CHECKPOINT_INTERVAL_S):  # a period, not synchronization
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                db.close()
        except sqlite3.Error:
            self._alive.clear()  # the commits checkpoint again themselves


def read_exactly(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``, or None at end of input."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def answer(commit: Callable[[list[Statement]], tuple[str | None, str]], source: int, sink: int) -> None:
    """Commit each batch read from ``source`` and answer it on ``sink``, until end of input. Once
    the parent is gone (killed: its end of ``sink`` is closed), what it sent is still committed,
    unanswered: the rows of the batches it had written to the pipe, write-ahead rows among them."""
    replies: int | None = sink
    while (head := read_exactly(source, HEADER.size)) is not None:
        body = read_exactly(source, HEADER.unpack(head)[0])
        if body is None:
            break
        number, statements = marshal.loads(body)
        kind, message = commit(statements)
        reply: Reply = (number, kind, message)
        if replies is None:
            continue
        try:
            write_all(replies, frame(reply))
        except BrokenPipeError:  # the parent is gone
            replies = None


def bind_none(value: None) -> None:
    """None as itself. Registered as None's adapter, it spares the sqlite3 module its search for
    one on every NULL bound (two failed attribute lookups, one raising and clearing an error):
    about 190 ns per NULL without it, 40 ns with it."""
    return value


def serve(path: str, busy_timeout_ms: int, source: int = 0, sink: int = 1) -> None:
    """Commit the batches read from ``source`` and answer each on ``sink``, until end of input."""
    sqlite3.register_adapter(type(None), bind_none)
    db = connect(path, busy_timeout_ms)
    db.execute("PRAGMA wal_autocheckpoint=0")
    checkpointer = Checkpointer(path, busy_timeout_ms)
    checkpointer.start()
    autocheckpoint = False

    def checkpointed_commit(statements: list[Statement]) -> tuple[str | None, str]:
        nonlocal autocheckpoint
        if not autocheckpoint and not checkpointer.alive:
            db.execute("PRAGMA wal_autocheckpoint=1000")
            autocheckpoint = True
        return commit(db, statements)

    try:
        answer(checkpointed_commit, source, sink)
    finally:
        checkpointer.stop()
        db.close()


class Postgres:
    """Two held psycopg connections to ``url`` (autocommit): one commits durably, the other,
    for batches of write-ahead rows only, without waiting for the WAL flush. Each has one cursor
    for every batch, and each statement text goes to it as the same bytes object every time:
    psycopg then skips its per-text work (encoding, parsing, choosing the parameters' dumpers),
    which it redoes for a new cursor or a new text object."""

    def __init__(self, url: str) -> None:
        import psycopg  # here, not above: the SQLite program imports the standard library only

        self._psycopg = psycopg
        self._url = url
        self._conns: dict[bool, Any] = {}  # by whether it commits without waiting for the flush
        self._cursors: dict[bool, Any] = {}
        self._used: dict[bool, float] = {}
        self._texts: dict[str, bytes] = {}  # each statement text, encoded once

    def commit(self, statements: list[Statement]) -> tuple[str | None, str]:
        """``commit``'s contract, on PostgreSQL. A batch of one statement (the usual one: a
        call's event, or write-ahead rows) is a transaction of its own, one round trip."""
        psycopg = self._psycopg
        try:
            unflushed = write_ahead_only(statements)
            cursor = self._cursor(unflushed)
            # Not in psycopg's pipeline mode: it cost more CPU here than the round trips it saves.
            if len(statements) == 1:
                sql, params = statements[0]
                cursor.execute(self._text(sql), params, prepare=True)
            else:
                with self._conns[unflushed].transaction():
                    for sql, params in statements:
                        cursor.execute(self._text(sql), params, prepare=True)
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            return ROW_REFUSED, f"{type(exc).__name__}: {exc}"
        except psycopg.Error as exc:
            self.close()
            return FAILED, f"{type(exc).__name__}: {exc}"
        return None, ""

    def _text(self, sql: str) -> bytes:
        text = self._texts.get(sql)
        if text is None:
            text = self._texts[sql] = sql.encode()
        return text

    def _cursor(self, unflushed: bool) -> Any:
        cursor = self._cursors.get(unflushed)
        if cursor is not None and time.monotonic() - self._used[unflushed] > PING_AFTER_IDLE_S:
            try:
                cursor.execute(b"SELECT 1")
            except self._psycopg.Error:
                self.close()
                cursor = None
        if cursor is None:
            conn = self._psycopg.connect(self._url, autocommit=True)
            self._conns[unflushed] = conn
            cursor = self._cursors[unflushed] = conn.cursor()
            for setting in session_settings(unflushed):
                cursor.execute(setting)
        self._used[unflushed] = time.monotonic()
        return cursor

    def close(self) -> None:
        conns, self._conns, self._cursors = self._conns, {}, {}
        for conn in conns.values():
            with contextlib.suppress(self._psycopg.Error):
                conn.close()


def serve_postgres(url: str, source: int = 0, sink: int = 1) -> None:
    """``serve`` for a PostgreSQL database at ``url`` (a libpq URL)."""
    database = Postgres(url)
    try:
        answer(database.commit, source, sink)
    finally:
        database.close()


def main(argv: list[str]) -> int:
    """``DB BUSY_TIMEOUT_MS`` or ``--postgresql``: serve standard input and output."""
    if argv == ["--postgresql"] and os.environ.get(URL_VARIABLE):
        serve_postgres(os.environ[URL_VARIABLE])
        return 0
    if len(argv) != 2:
        print(f"usage: writer_process.py DB BUSY_TIMEOUT_MS | writer_process.py --postgresql (with {URL_VARIABLE})",
              file=sys.stderr)
        return 2
    serve(argv[0], int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
