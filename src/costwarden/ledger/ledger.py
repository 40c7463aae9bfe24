"""The usage ledger: one object per database URL, async, safe to share by every request.

Writes go through the database's single writer thread (see ``writer.py``); the usage rows of the
hot path go to a writer process instead (``writer_process.py``, with ``--postgresql`` on
PostgreSQL), one per event loop that writes them, started on first use; on PostgreSQL a lone
call's rows are committed from the event loop itself (``direct_lane.py``). Reads run on a small
reader pool in worker threads. Every backend exception leaves this class as StorageError, except
on the hot path: the rows of a call already forwarded that the database does not take within
``COMMIT_DEADLINE_S`` go to the local spool (``outage.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, SQLAlchemyError

from costwarden.core.audit import AuditEntry
from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.metadata import MetadataVersion
from costwarden.errors import StorageError
from costwarden.ledger import audit, audit_log, closings, credentials, department_metadata, queries
from costwarden.ledger.audit import AlertRecord, PolicyVersion
from costwarden.ledger.credentials import KeyRecord, TokenRecord
from costwarden.ledger.deadlines import CommitDeadlines
from costwarden.ledger.engine import DEFAULT_URL, create_engines, normalize_url, storage_error
from costwarden.ledger.migrations import migrate
from costwarden.ledger.outage import Outage, WhenDown, replay
from costwarden.ledger.queries import TotalsRow, WhereValue
from costwarden.ledger.queue_items import Job, RowKind, RowRefused, Waiter, Write
from costwarden.ledger.rollups import insert_events
from costwarden.ledger.rows import event_row, inflight_row, interrupted_event, rejection_row, utc
from costwarden.ledger.schema import inflight, rejections, usage_events
from costwarden.ledger.spool import Spool, SpooledRow
from costwarden.ledger.writer import Writer
from costwarden.ledger.writer_process_client import (
    Program,
    WriterProcessClient,
    postgres_program,
    sqlite_program,
)

T = TypeVar("T")
R = TypeVar("R")
PAGE = 1000
# How long a hot-path row may take to commit before it goes to the spool instead (a locked SQLite
# file makes a commit wait for its busy timeout); it may still commit later, which is harmless.
COMMIT_DEADLINE_S = 2.0
PG_SPOOL_DIR = "./costwarden-spool"
log = logging.getLogger(__name__)


class CommitOverdue(StorageError):
    """A hot-path row was not committed within ``COMMIT_DEADLINE_S``."""


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else utc(now)


class Ledger:
    """Append-only usage ledger plus keys, tokens, policy versions, alerts and closed periods."""

    def __init__(self, url: str, writer_engine: Engine, reader_engine: Engine, spool_dir: Path,
                 when_down: WhenDown = WhenDown.REFUSE) -> None:
        self.url = url
        self._writer_engine = writer_engine
        self._reader_engine = reader_engine
        self._outage = Outage(Spool(spool_dir), when_down, self._probe, self._replay)
        self._writer = Writer(writer_engine, self._lost_in_thread)
        self._child_path = _sqlite_file(writer_engine)
        self._program = _writer_program(writer_engine, self._child_path)
        self._child: WriterProcessClient | None = None
        self._deadlines: CommitDeadlines | None = None  # of the loop the latest commit was awaited on
        self._closed = False

    @classmethod
    async def open(cls, url: str = DEFAULT_URL, *, spool_dir: str | Path | None = None,
                   when_down: WhenDown = WhenDown.REFUSE) -> Ledger:
        """Open the database at ``url``, bringing its schema up to date first, then replay any rows
        a previous process left in the spool (before anything reads the ledger to recover).

        ``spool_dir`` holds the spool (default: ``<database file>-spool`` beside a SQLite file,
        ``./costwarden-spool`` for PostgreSQL); each database spools in a subdirectory of its own.
        ``when_down`` says whether new calls are refused or spooled while the database is down.
        """
        parsed = normalize_url(url)
        writer_engine, reader_engine = create_engines(parsed)
        try:
            await _migrate(writer_engine)
        except SQLAlchemyError as exc:
            writer_engine.dispose()
            reader_engine.dispose()
            raise storage_error(exc, f"opening {parsed.render_as_string(hide_password=True)}") from exc
        except BaseException:
            writer_engine.dispose()
            reader_engine.dispose()
            raise
        ledger = cls(url, writer_engine, reader_engine, spool_directory(parsed, spool_dir), when_down)
        try:
            replayed = await ledger._outage.drain()
        except BaseException:
            await ledger.close()
            raise
        if replayed:
            log.warning("replayed %d rows a previous process left in the ledger spool", replayed)
        return ledger

    async def close(self) -> None:
        """Write everything queued, then release the database (rows it did not take stay in the
        spool for the next start)."""
        self._closed = True
        if self._child is not None:
            if _running_loop() is self._child.loop:
                await self._child.close()
            else:  # its loop is gone or elsewhere: its process ends with this one
                log.warning("ledger closed outside the event loop that wrote its usage rows")
        await self._outage.stop()
        await self._writer.close()
        await self._outage.close()
        self._writer_engine.dispose()
        self._reader_engine.dispose()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._writer_engine.dialect.name

    # -- the hot path ----------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether the database is taking rows; False from a failed commit until a probe reaches
        it again and the spool has been replayed into it."""
        return self._outage.available

    @property
    def accepting(self) -> bool:
        """Whether a new call may be forwarded (``check_accepting`` does not raise)."""
        return self._outage.accepting

    def check_accepting(self) -> None:
        """Call before forwarding a call: raises StorageError (503 ``storage_unavailable``, retry)
        while the database is unavailable, unless new calls are to be spooled meanwhile."""
        self._outage.check_accepting()

    async def ready(self) -> bool:
        """For /readyz: new calls are accepted and, unless they are spooled, the database answers."""
        if not self._outage.accepting:
            return False
        if not self._outage.available:
            return True  # accepting while down: calls go to the spool
        try:
            await self.ping()
        except StorageError as exc:
            self._outage.mark_down(exc.message)  # refuse new calls now rather than after a failed commit
            return False
        return True

    @property
    def direct_lane_open(self) -> bool:
        """Whether the rows of a lone call on this event loop are committed from it, not by the
        writer process (PostgreSQL, ``direct_lane.py``)."""
        child = self._child
        return child is not None and child.loop is _running_loop() and child.lane_open

    def start_writer(self) -> None:
        """Start the writer process of the running event loop now (a server, before its first
        call): it takes a moment to start, which the first call would otherwise wait for."""
        self._writer_process(_running_loop())

    def begin(self, call: InflightCall) -> None:
        """Queue the write-ahead row of a call about to be forwarded; does not wait. It goes with
        the writer's next batch, and is not written at all if this call's event is in the same
        batch (``writer.py``)."""
        write = Write(RowKind.INFLIGHT, inflight_row(call))
        if self._outage.available:
            self._put(write)
        else:
            self._outage.keep_soon([(write.kind, write.row)])

    async def record(self, event: UsageEvent) -> None:
        """Append ``event``; returns once it is durable: committed, or, if the database does not
        take it, in the spool. An existing id is left as it is. Raises only for a row the database
        refuses by itself (RowRefused), never because the database is down, locked or full."""
        await self.queue(event)

    def queue(self, event: UsageEvent) -> Awaitable[None]:
        """Hand ``event`` to the writer now; the awaitable completes once it is durable, as
        ``record``'s does. Lets a call's other closing work overlap the commit."""
        return self._commit_or_keep(Write(RowKind.EVENT, event_row(event)))

    async def record_many(self, events: Sequence[UsageEvent]) -> None:
        """Append many events (an import); returns once all are committed (no spool: an import
        is repeated instead)."""
        writes = [Write(RowKind.EVENT, event_row(e), Waiter()) for e in events]
        for write in writes:
            self._put(write)
        await asyncio.gather(*[w.waiter.future for w in writes if w.waiter is not None])

    async def record_rejection(self, rejection: Rejection) -> None:
        """Append a refused call, like ``record``. An existing id is left as it is."""
        await self._commit_or_keep(Write(RowKind.REJECTION, rejection_row(rejection)))

    def _commit_or_keep(self, write: Write) -> Awaitable[None]:
        """Queue ``write`` at once; the awaitable commits it or, if the database fails it or
        overruns the deadline, spools it."""
        if self._closed:
            raise StorageError("ledger is closed")
        if not self._outage.available:  # known down: do not wait for the database
            child = self._child
            if child is not None and child.loop is _running_loop():
                child.forget([write])  # its call, begun there, ended here
            return self._outage.keep([(write.kind, write.row)])
        write.waiter = waiter = Waiter()
        self._put(write, waiter.loop)  # the running loop, which the waiter has looked up
        return self._committed(write, waiter)

    async def _committed(self, write: Write, waiter: Waiter) -> None:
        future = waiter.future
        deadlines = self._deadlines
        if deadlines is None or deadlines.loop is not waiter.loop:
            deadlines = self._deadlines = CommitDeadlines(waiter.loop, COMMIT_DEADLINE_S, _overdue)
        deadlines.watch(future)
        try:
            await future
            return
        except RowRefused:
            raise
        except StorageError as exc:
            reason = exc.message
        finally:
            deadlines.forget(future)
        self._outage.mark_down(reason)
        await self._outage.keep([(write.kind, write.row)])

    def _put(self, write: Write, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Queue a hot-path row: to the running loop's writer process (``loop``: that loop, when
        the caller has it), else to the thread."""
        if self._closed:
            raise StorageError("ledger is closed")
        if loop is None:
            loop = _running_loop()
        if loop is not None:
            self._outage.attach(loop)
        child = self._writer_process(loop)
        if child is not None and child.usable:
            child.put(write)
            return
        self._writer.put(write)

    def _writer_process(self, loop: asyncio.AbstractEventLoop | None) -> WriterProcessClient | None:
        """The writer process of ``loop`` (the running one), started on first use; None: rows go
        to the writer thread (no loop, another loop, or a URL the process does not take)."""
        if loop is None or self._program is None:
            return None
        if self._child is None:
            self._child = WriterProcessClient(self._program, loop, self._writer.put, self._lost_on_loop)
            self._child.start()
        return self._child if self._child.loop is loop else None

    def _lost_on_loop(self, writes: list[Write]) -> None:
        """Write-ahead rows the writer process could not commit."""
        self._outage.mark_down("a write-ahead row could not be committed")
        self._outage.keep_soon([(write.kind, write.row) for write in writes])

    def _lost_in_thread(self, writes: list[Write]) -> None:
        """Write-ahead rows the writer thread could not commit (called on that thread)."""
        self._outage.keep_from_thread([(write.kind, write.row) for write in writes],
                                      "a write-ahead row could not be committed")

    async def _probe(self) -> None:
        """Raise StorageError unless the database could take a write now (cheap)."""
        path = self._child_path
        if path is None:
            await self.ping()
            return
        await asyncio.to_thread(_probe_sqlite, path)

    async def _replay(self, rows: list[SpooledRow]) -> None:
        """Insert spooled rows; a row the database refuses by itself is reported and dropped,
        never retried forever."""
        if not rows:
            return

        def job(conn: Connection) -> None:
            try:
                replay(conn, rows)
            except (IntegrityError, DataError) as exc:
                raise RowRefused(f"ledger: a spooled row was refused: {exc.orig}") from exc

        try:
            await self._write(job)
        except RowRefused as exc:
            if len(rows) > 1:
                for row in rows:
                    await self._replay([row])
                return
            log.error("%s; dropped from the spool: %r", exc, rows[0])

    async def recover_interrupted(self, now: datetime, older_than: datetime | None = None,
                                  ids: Collection[str] | None = None) -> list[UsageEvent]:
        """Settle every write-ahead row that has no final event at its estimate, as an
        ``interrupted`` event finished at ``now``; returns those events.

        Run at start-up. With replicas sharing one database, pass ``older_than`` (now minus the
        longest a call may run) so that calls still in flight on another replica are left alone,
        or ``ids``: the calls of a replica that died (its reservations name them).
        """
        at, cutoff = utc(now), None if older_than is None else utc(older_than)
        chosen = None if ids is None else sorted(ids)

        def recover(conn: Connection) -> list[UsageEvent]:
            query = select(inflight).order_by(inflight.c.admitted_at, inflight.c.id)
            if cutoff is not None:
                query = query.where(inflight.c.admitted_at < cutoff)
            if chosen is not None:
                query = query.where(inflight.c.id.in_(chosen))
            rows = list(conn.execute(query).mappings())
            if not rows:
                return []
            ids = [row["id"] for row in rows]
            settled = set(conn.execute(select(usage_events.c.id).where(usage_events.c.id.in_(ids))).scalars())
            events = [interrupted_event(row, at) for row in rows if row["id"] not in settled]
            if events:
                insert_events(conn, [event_row(e) for e in events])  # and their rollups
            conn.execute(delete(inflight).where(inflight.c.id.in_(ids)))
            return events

        result: list[UsageEvent] = await self._write(recover)
        return result

    # -- queries ---------------------------------------------------------------------------

    async def totals(self, since: datetime | None, until: datetime | None, group_by: Sequence[str] = (),
                     where: Mapping[str, WhereValue] | None = None,
                     bucket_seconds: int | None = None) -> list[TotalsRow]:
        """Exact sums of events admitted in [since, until), per group.

        ``group_by``: department, team, key_id, user, model_served, model_requested, provider,
        endpoint, status, decision, price_version, day (UTC date), tag:<name>. ``where`` maps
        the same names to a value, None (absent) or a list of values. With ``bucket_seconds``
        each row also has ``bucket`` = floor(epoch(admitted_at) / bucket_seconds).
        """
        return await self._read(
            lambda conn: queries.totals(conn, since, until, group_by, where, bucket_seconds)
        )

    async def rejection_totals(self, since: datetime | None, until: datetime | None,
                               group_by: Sequence[str] = (),
                               where: Mapping[str, WhereValue] | None = None) -> list[TotalsRow]:
        """Refused calls counted per group (in ``requests``); group by department, team, key_id,
        user, model_requested, endpoint, code, day or tag:<name>."""
        return await self._read(
            lambda conn: queries.totals(conn, since, until, group_by, where, None, table=rejections)
        )

    async def iter_events(self, since: datetime | None = None, until: datetime | None = None,
                          department: str | None = None,
                          include_rejections: bool = False,
                          customer: str | None = None) -> AsyncIterator[UsageEvent | Rejection]:
        """Events in admission order, then (if asked) rejections in time order; paged, so any
        size streams in bounded memory. ``customer`` keeps the events of one business customer."""
        where: dict[str, WhereValue] | None = None if department is None else {"department": department}
        events_where = where if customer is None else {**(where or {}), "customer": customer}
        async for event in self._pages(queries.event_page, since, until, events_where,
                                       lambda e: (e.admitted_at, e.id)):
            yield event
        if include_rejections:
            async for rejection in self._pages(queries.rejection_page, since, until, where, lambda r: (r.at, r.id)):
                yield rejection

    async def _pages(self, page_query: Callable[..., list[R]], since: datetime | None, until: datetime | None,
                     where: Mapping[str, WhereValue] | None,
                     position: Callable[[R], tuple[datetime, str]]) -> AsyncIterator[R]:
        """Every row of a paged query, in its order, fetching PAGE rows at a time after the last one seen."""
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._read(partial(page_query, since=since, until=until, where=where, after=after, limit=PAGE))
            for row in page:
                yield row
            if len(page) < PAGE:
                return
            after = position(page[-1])

    async def list_events(self, since: datetime | None = None, until: datetime | None = None,
                          where: Mapping[str, WhereValue] | None = None, limit: int = 100,
                          offset: int = 0) -> list[UsageEvent]:
        """A page of events, newest first (for the admin API)."""
        return await self._read(lambda conn: queries.recent_events(conn, since, until, where, limit, offset))

    async def list_rejections(self, since: datetime | None = None, until: datetime | None = None,
                              where: Mapping[str, WhereValue] | None = None, limit: int = 100,
                              offset: int = 0) -> list[Rejection]:
        """A page of refused calls, newest first (for the admin API)."""
        return await self._read(lambda conn: queries.recent_rejections(conn, since, until, where, limit, offset))

    async def count_events(self) -> int:
        """How many usage events the ledger holds."""
        return await self._read(lambda conn: queries.count(conn, usage_events))

    async def count_rejections(self) -> int:
        """How many refused calls the ledger holds."""
        return await self._read(lambda conn: queries.count(conn, rejections))

    async def count_inflight(self) -> int:
        """How many write-ahead rows are waiting for their final event."""
        return await self._read(lambda conn: queries.count(conn, inflight))

    async def recorded(self, ids: Collection[str]) -> set[str]:
        """Which of ``ids`` have their final event committed in the database."""
        chosen = sorted(ids)

        def find(conn: Connection) -> set[str]:
            found: set[str] = set()
            for start in range(0, len(chosen), 500):  # SQLite's bound-parameter limit
                query = select(usage_events.c.id).where(usage_events.c.id.in_(chosen[start:start + 500]))
                found.update(conn.execute(query).scalars())
            return found

        return await self._read(find) if chosen else set()

    async def ping(self) -> None:
        """Raise StorageError unless the database answers (for /readyz)."""
        await self._read(lambda conn: conn.execute(select(1)).scalar())

    # -- keys and admin tokens -------------------------------------------------------------

    async def create_key(self, department: str | None, team: str | None = None, user: str | None = None,
                         name: str | None = None, now: datetime | None = None,
                         customer: str | None = None) -> tuple[KeyRecord, str]:
        """A new virtual key; returns its record and its secret (shown once, never stored)."""
        secret, at = credentials.new_secret(credentials.KEY_PREFIX), _now(now)
        record: KeyRecord = await self._write(
            lambda conn: credentials.insert_key(conn, secret, department, team, user, name, at, customer)
        )
        return record, secret

    async def list_keys(self, department: str | None = None, include_revoked: bool = True) -> list[KeyRecord]:
        """Keys in creation order, optionally of one department only."""
        return await self._read(lambda conn: credentials.list_keys(conn, department, include_revoked))

    async def load_keys(self) -> dict[str, KeyRecord]:
        """Active keys by the SHA-256 of their secret (polled by servers every few seconds)."""
        keys = await self._read(lambda conn: credentials.list_keys(conn, None, False))
        return {key.secret_hash: key for key in keys}

    async def revoke_key(self, ref: str, now: datetime | None = None) -> KeyRecord | None:
        """Revoke a key by id, display prefix or secret; None if no key matches."""
        at = _now(now)
        result: KeyRecord | None = await self._write(lambda conn: credentials.revoke_key(conn, ref, at))
        return result

    async def create_token(self, role: str, department: str | None = None, name: str | None = None,
                           now: datetime | None = None, customer: str | None = None) -> tuple[TokenRecord, str]:
        """A new admin token (role admin, finance, manager of ``department``, or customer reading
        ``customer``) and its secret."""
        credentials.check_role(role, department, customer)
        secret, at = credentials.new_secret(credentials.TOKEN_PREFIX), _now(now)
        record: TokenRecord = await self._write(
            lambda conn: credentials.insert_token(conn, secret, role, department, name, at, customer)
        )
        return record, secret

    async def list_tokens(self, include_revoked: bool = True) -> list[TokenRecord]:
        """Admin tokens in creation order."""
        return await self._read(lambda conn: credentials.list_tokens(conn, include_revoked))

    async def load_tokens(self) -> dict[str, TokenRecord]:
        """Active admin tokens by the SHA-256 of their secret."""
        tokens = await self._read(lambda conn: credentials.list_tokens(conn, False))
        return {token.secret_hash: token for token in tokens}

    async def revoke_token(self, ref: str, now: datetime | None = None) -> TokenRecord | None:
        """Revoke an admin token by id, display prefix or secret; None if none matches."""
        at = _now(now)
        result: TokenRecord | None = await self._write(lambda conn: credentials.revoke_token(conn, ref, at))
        return result

    # -- policy versions, alerts, closed periods -------------------------------------------

    async def store_policy(self, yaml_text: str, now: datetime | None = None) -> int:
        """Keep a loaded policy file for audit; returns its version id (the latest one's when
        the text is unchanged)."""
        at = _now(now)
        version: int = await self._write(lambda conn: audit.store_policy(conn, yaml_text, at))
        return version

    async def latest_policy(self) -> str | None:
        """The text of the policy most recently stored, if any."""
        version = await self.latest_policy_version()
        return None if version is None else version.yaml

    async def policy_versions(self) -> list[PolicyVersion]:
        """Every policy stored, oldest first, with the time each was loaded."""
        return await self._read(audit.list_policies)

    async def latest_policy_version(self) -> PolicyVersion | None:
        """The policy most recently stored, with its id, time and hash."""
        return await self._read(audit.latest_policy)

    async def record_department_metadata(self, versions: Sequence[MetadataVersion],
                                         now: datetime | None = None) -> None:
        """Keep departments' names and codes by the day they took effect (the same version again is a no-op)."""
        at = _now(now)
        await self._write(lambda conn: department_metadata.record(conn, versions, at))

    async def department_metadata(self) -> list[MetadataVersion]:
        """Every recorded version of departments' names and codes."""
        return await self._read(department_metadata.history)

    async def record_alert(self, alert: AlertRecord) -> bool:
        """Record an alert; False (and nothing written) if its dedupe key was recorded before."""
        inserted: bool = await self._write(lambda conn: audit.insert_alert(conn, alert))
        return inserted

    async def list_alerts(self, since: datetime | None = None, department: str | None = None,
                          kind: str | None = None, limit: int = 100) -> list[AlertRecord]:
        """Alerts, newest first."""
        return await self._read(lambda conn: audit.list_alerts(conn, since, department, kind, limit))

    async def close_period(self, period: str, now: datetime | None = None) -> bool:
        """Close billing period ``YYYY-MM``; False if it was closed already."""
        at = _now(now)
        closed: bool = await self._write(lambda conn: audit.close_period(conn, period, at))
        return closed

    async def closed_periods(self) -> dict[str, datetime]:
        """Closed billing periods and when each was closed."""
        return await self._read(audit.list_closed_periods)

    async def freeze_statement(self, period: str, body: str, now: datetime | None = None, *,
                               closed_by: str | None = None, policy_version: int | None = None,
                               summary: str | None = None) -> datetime | None:
        """Close billing period ``YYYY-MM`` (unless it is closed already) and store its statement
        ``body`` with who closed it, the policy version and its checksum, in one transaction.
        Returns the period's close time, or None (and nothing is written) when a statement of the
        period is stored already: a frozen statement never changes (it may be reopened)."""
        at = _now(now)
        result: datetime | None = await self._write(
            lambda conn: closings.freeze(conn, period, body, at, closed_by, policy_version, summary))
        return result

    async def statement_summaries(self, periods: Sequence[str]) -> dict[str, str | None]:
        """What the frozen statements of ``periods`` billed, as stored at their close (None:
        frozen without a summary); periods without a frozen statement are left out."""
        return await self._read(lambda conn: closings.summaries(conn, periods))

    async def frozen_statement(self, period: str) -> tuple[datetime, str] | None:
        """The statement stored when ``period`` was closed, with its close time; None if there is
        none. Raises StorageError when the stored text no longer matches its checksum."""
        return await self._read(lambda conn: closings.frozen(conn, period))

    async def statement_closing(self, period: str) -> closings.Closing | None:
        """Who closed the period's statement, when, under which policy version, and its checksum."""
        return await self._read(lambda conn: closings.closing(conn, period))

    async def statement_history(self, period: str) -> list[closings.Closing]:
        """The period's reopened statements, oldest first."""
        return await self._read(lambda conn: closings.history(conn, period))

    async def reopen_statement(self, period: str, by: str, reason: str,
                               now: datetime | None = None) -> closings.Closing | None:
        """Move the period's frozen statement to its history and open the period again; None if
        it has no frozen statement."""
        at = _now(now)
        result: closings.Closing | None = await self._write(
            lambda conn: closings.reopen(conn, period, at, by, reason))
        return result

    # -- audit log -------------------------------------------------------------------------

    async def record_audit(self, entries: Sequence[AuditEntry], once: str | None = None) -> bool:
        """Append audit entries in one transaction. ``once`` names a change several processes
        record (a policy version's adoption): only the first writes, and none when the version
        was reloaded through the admin API. Returns whether anything was written."""
        written: bool = await self._write(lambda conn: audit_log.insert_entries(conn, entries, once))
        return written

    async def list_audit(self, since: datetime | None = None, until: datetime | None = None,
                         department: str | None = None, action: str | None = None, limit: int = 100,
                         offset: int = 0) -> list[AuditEntry]:
        """A page of audit entries, newest first."""
        return await self._read(
            lambda conn: audit_log.list_entries(conn, since, until, department, action, limit, offset))

    # -- plumbing --------------------------------------------------------------------------

    async def write_with(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one write transaction on the writer, after the rows queued before it
        (an import streaming its batches); an exception it raises rolls the transaction back."""
        result: T = await self._write(fn)
        return result

    async def read_with(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a reading connection in a worker thread (an export streaming its rows)."""
        return await self._read(fn)

    async def _write(self, fn: Callable[[Connection], Any]) -> Any:
        if self._child is not None and _running_loop() is self._child.loop:
            await self._child.drain()  # rows queued before this write land before it
        return await self._writer.submit(Job(fn, Waiter()))

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a reader connection in a worker thread (reports that read in bulk)."""
        return await self._read(fn)

    async def _read(self, fn: Callable[[Connection], T]) -> T:
        return await asyncio.to_thread(self._read_sync, fn)

    def _read_sync(self, fn: Callable[[Connection], T]) -> T:
        try:
            with self._reader_engine.connect() as conn:
                return fn(conn)
        except SQLAlchemyError as exc:
            raise storage_error(exc, "reading the ledger") from exc



def _overdue() -> CommitOverdue:
    return CommitOverdue(f"a commit took longer than {COMMIT_DEADLINE_S:g} s")


def _probe_sqlite(path: str) -> None:
    """Take and give back the write lock of a SQLite file, waiting at most briefly."""
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=0.1)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("ROLLBACK")
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StorageError(f"ledger: probing {path} failed: {type(exc).__name__}: {exc}") from exc


def spool_directory(url: URL, spool_dir: str | Path | None) -> Path:
    """The spool of the database at ``url``: a subdirectory, named after the database, of
    ``spool_dir`` (default: beside a SQLite file, else ``./costwarden-spool``), so that rows are
    only ever replayed into the database they were meant for."""
    path = _sqlite_path(url)
    identity = path if path is not None else url.render_as_string(hide_password=True)
    if spool_dir is None:
        spool_dir = f"{path}-spool" if path is not None else PG_SPOOL_DIR
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path(spool_dir).absolute() / f"ledger-{digest}"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _writer_program(engine: Engine, sqlite_file: str | None) -> Program | None:
    """The writer process of the hot path's rows; None: the writer thread takes them (a SQLite
    URL with options)."""
    if sqlite_file is not None:
        return sqlite_program(sqlite_file, engine.dialect)
    if engine.dialect.name == "postgresql":
        return postgres_program(engine.url.set(drivername="postgresql").render_as_string(hide_password=False),
                                engine.dialect)
    return None


def _sqlite_file(engine: Engine) -> str | None:
    """The absolute path of a plain SQLite database file (no URL options), else None."""
    return _sqlite_path(engine.url)


def _sqlite_path(url: URL) -> str | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.query:
        return None
    return os.path.abspath(url.database)


__all__ = ["Ledger", "StorageError", "WhenDown"]


MIGRATE_ATTEMPTS = 5


async def _migrate(engine: Engine) -> None:
    """Bring the schema up to date. SQLite answers "database is locked" at once, without waiting,
    to a connection that switches a new file to WAL while another process is creating or migrating
    it; the migration is then tried again, a few times, after a short pause."""
    for attempt in range(1, MIGRATE_ATTEMPTS + 1):
        try:
            await asyncio.to_thread(migrate, engine)
            return
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == MIGRATE_ATTEMPTS:
                raise
            await asyncio.sleep(0.1 * attempt)  # a back-off before trying again, not a synchronization
