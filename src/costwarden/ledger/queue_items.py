"""What goes through a ledger writer: rows to insert and jobs to run, each with an optional waiter
that resolves (on the event loop) once it is committed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Insert
from sqlalchemy.sql.schema import Table

from costwarden.errors import StorageError

MAX_ROWS_PER_STATEMENT = 64  # rows in one multi-row INSERT on SQLite (within its variable limit)
REFUSED = "ledger: a row was refused by the database"
Row = dict[str, Any]


class RowKind(StrEnum):
    """The table a hot-path row goes to."""

    EVENT = "event"
    REJECTION = "rejection"
    INFLIGHT = "inflight"  # a write-ahead row


class RowRefused(StorageError):
    """The database refused a row itself (a constraint or a value), not for being unreachable:
    retrying it, or spooling it for later, would fail the same way."""

    def __init__(self, message: str = REFUSED) -> None:
        super().__init__(message)


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
    """One row for a batched table."""

    kind: RowKind
    row: dict[str, Any]
    waiter: Waiter | None = None


@dataclass(slots=True)
class Job:
    """A function run in its own transaction; its return value resolves the waiter."""

    fn: Callable[[Connection], Any]
    waiter: Waiter | None = None


def insert_ignoring_duplicates(conn: Connection, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect (ids are idempotent)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def partition(writes: list[Write]) -> tuple[list[Row], list[Row], list[str], list[Row]]:
    """Write-ahead rows to insert, events to insert, write-ahead ids to delete, rejections."""
    ahead: list[Row] = []
    events: list[Row] = []
    refused: list[Row] = []
    for write in writes:  # one pass: most batches hold a single row
        kind = write.kind
        (events if kind is RowKind.EVENT else ahead if kind is RowKind.INFLIGHT else refused).append(write.row)
    if not events:
        return ahead, events, [], refused
    settled = {row["id"] for row in events}
    if not ahead:
        return ahead, events, sorted(settled), refused
    # A call that began and ended within one batch needs no write-ahead row at all.
    ahead_ids = {row["id"] for row in ahead}
    ahead = [row for row in ahead if row["id"] not in settled]
    return ahead, events, sorted(settled - ahead_ids), refused
