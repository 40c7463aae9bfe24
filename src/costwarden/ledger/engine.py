"""Engines for a ledger URL, and the one place backend exceptions become StorageError.

SQLite: WAL journal, ``synchronous=FULL`` (the WAL is synced before a commit returns, so a
committed transaction survives a power loss, not only a killed process; the writers' group commit
shares that sync among every row of a batch), a busy timeout, and transactions the driver does not
manage itself so that DDL is transactional and writers take the lock up front (BEGIN IMMEDIATE).
PostgreSQL: ``postgresql://`` URLs use psycopg 3.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from costwarden.errors import StorageError
from costwarden.ledger.writer_process import STATEMENT_CACHE

SQLITE_BUSY_TIMEOUT_MS = 30_000
DEFAULT_URL = "sqlite:///./costwarden.db"


def normalize_url(url: str) -> URL:
    """Parse a ledger URL; ``postgresql://`` and ``postgres://`` select the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"bad database URL {url!r}: use sqlite:///path.db or postgresql://...") from exc
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise StorageError("an in-memory SQLite ledger is not supported: give a file, e.g. sqlite:///./costwarden.db")
        return parsed
    raise StorageError(f"unsupported database {backend!r} in {url!r}: use sqlite:/// or postgresql://")


def create_engines(url: URL) -> tuple[Engine, Engine]:
    """The writer engine (one connection, used by the writer thread) and the reader engine."""
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, writer=True), _sqlite_engine(url, writer=False)
    writer = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)
    reader = create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True)
    return writer, reader


def _sqlite_engine(url: URL, *, writer: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                      "cached_statements": STATEMENT_CACHE},
        pool_size=1 if writer else 4,
        max_overflow=0 if writer else 4,
    )
    begin_sql = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (it would not wrap DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            if writer:  # its statement journals in memory, as the writer process's (writer_process.connect)
                cursor.execute("PRAGMA temp_store=MEMORY")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql(begin_sql)

    return engine


def storage_error(exc: SQLAlchemyError, doing: str) -> StorageError:
    """A StorageError naming what failed, with the driver's message (not the SQL) in it."""
    detail = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    error = StorageError(f"ledger: {doing} failed: {type(detail).__name__}: {detail}".strip())
    error.__cause__ = exc
    return error
