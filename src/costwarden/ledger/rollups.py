"""Daily rollups of the usage ledger, kept in the transaction that inserts the events.

Only the events an INSERT actually stored are added: the ledger inserts ignoring duplicate ids (a
replayed spool, a re-import, a batch retried after a lost answer), and a duplicate must add
nothing. Through SQLAlchemy (``insert_events``) the insert returns the ids it stored, and the
batch's rows of those ids are summed per group in Python and upserted once per group (INSERT ...
ON CONFLICT DO UPDATE, the same text on SQLite and PostgreSQL). The SQLite writer's statements
get no results back from the writer process, so each INSERT into usage_events is followed by one
statement that sums, in SQL, exactly the rows that INSERT stored (``SQLITE_AFTER_INSERT``); the
PostgreSQL writer process's INSERT returns the rows it stored to a rollup upsert in the same
statement (``after_insert_postgres``). The migration fills the table from the events already there the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from costwarden.ledger.queue_items import Row, insert_ignoring_duplicates
from costwarden.ledger.schema import ROLLUP_DIMENSIONS, ROLLUP_MEASURES, usage_events, usage_rollups

KEY = ("day", *ROLLUP_DIMENSIONS)
COLUMNS = (*KEY, "requests", *ROLLUP_MEASURES)
NULLABLE = frozenset({"team", "key_id", "user"})  # stored as '' in the rollup: key columns are NOT NULL

Statement = tuple[str, list[Any]]  # as writer_process.Statement


def _q(name: str) -> str:
    return f'"{name}"'  # "user" is a reserved word in PostgreSQL


_CONFLICT = (
    f" ON CONFLICT ({', '.join(_q(k) for k in KEY)}) DO UPDATE SET "
    + ", ".join(f"{_q(m)} = {usage_rollups.name}.{_q(m)} + excluded.{_q(m)}" for m in ("requests", *ROLLUP_MEASURES))
)
_INSERT = f"INSERT INTO {usage_rollups.name} ({', '.join(_q(c) for c in COLUMNS)}) "
UPSERT = _INSERT + f"VALUES ({', '.join(f':c{i}' for i in range(len(COLUMNS)))})" + _CONFLICT


def _key_values(dialect: str) -> list[str]:
    """The rollup key of a usage_events row, in ``KEY`` order, as SQL expressions of its columns."""
    day = ("substr(admitted_at, 1, 10)" if dialect == "sqlite"
           else "to_char(admitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
    return [day, *(f"coalesce({_q(n)}, '')" if n in NULLABLE else _q(n) for n in ROLLUP_DIMENSIONS)]


_SUMS = ("count(*)", *(f"sum({_q(m)})" for m in ROLLUP_MEASURES))
_GROUPS = ", ".join(str(i) for i in range(1, len(KEY) + 1))


def from_events(dialect: str, where: str, source: str = usage_events.name) -> str:
    """INSERT ... SELECT adding the events of ``source`` (a table) matching ``where`` (SQL) to the
    rollups."""
    return (_INSERT + f"SELECT {', '.join([*_key_values(dialect), *_SUMS])} FROM {source} WHERE {where} "
            f"GROUP BY {_GROUPS}" + _CONFLICT)


# Right after each INSERT into usage_events on SQLite: the rows it stored are the last ``changes()``
# rowids up to ``last_insert_rowid()`` (a new row takes the largest rowid plus one, and nothing is
# deleted from the table), and none when it stored nothing (the range is then empty, whatever
# table ``last_insert_rowid()`` speaks of). This statement's own writes change neither value:
# ``changes()`` is that of the last completed statement, and usage_rollups has no rowid on SQLite.
SQLITE_AFTER_INSERT: Statement = (
    from_events("sqlite", "rowid > last_insert_rowid() - changes() AND rowid <= last_insert_rowid()"), [])


# What the INSERT into usage_events returns to the rollups: each stored row's rollup key, computed
# once there, and its measures; not the whole row (RETURNING * made every execution build, copy and
# scan rows of 36 columns that the rollups never read).
_RETURNING = ", ".join([*(f"{value} AS {_q(k)}" for k, value in zip(KEY, _key_values("postgresql"), strict=True)),
                        *(_q(m) for m in ROLLUP_MEASURES)])
# The rows it stored, summed per group: the upsert must meet each rollup row once, and a batch's
# events may share a group. An insert of one row stores at most one, which needs no grouping: a
# GROUP BY's hash table (15 keys and 12 aggregates to set up on every execution) was a sixth of the
# server's time for a call's event.
_GROUPED = f"SELECT {', '.join([*map(_q, KEY), *_SUMS])} FROM stored GROUP BY {_GROUPS}"
_ONE = f"SELECT {', '.join([*map(_q, KEY), '1', *map(_q, ROLLUP_MEASURES)])} FROM stored"


def after_insert_postgres(insert: str, before: Sequence[str] = (), one_row: bool = False) -> str:
    """``insert`` (an INSERT into usage_events ... ON CONFLICT DO NOTHING) as one PostgreSQL
    statement that also adds the rows it stored, which it returns, to the rollups. ``before``:
    data-modifying statements run as part of it, their parameters first (common table
    expressions, which run whether or not anything reads them, on the statement's one snapshot:
    none sees another's rows). ``one_row``: ``insert`` inserts one row at most (a text of its own,
    without the grouping that a batch of several needs)."""
    first = "".join(f"done{i} AS ({sql}), " for i, sql in enumerate(before))
    select = _ONE if one_row else _GROUPED
    return f"WITH {first}stored AS ({insert} RETURNING {_RETURNING}) {_INSERT}{select}{_CONFLICT}"


def aggregate(rows: Iterable[Row]) -> list[list[Any]]:
    """The rollup rows (in ``COLUMNS`` order) adding up usage_events ``rows``."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row in rows:
        key = (row["admitted_at"].date().isoformat(),
               *("" if row[n] is None else row[n] for n in ROLLUP_DIMENSIONS))
        sums = groups.get(key)
        if sums is None:
            sums = groups[key] = [0] * (1 + len(ROLLUP_MEASURES))
        sums[0] += 1
        for i, name in enumerate(ROLLUP_MEASURES, 1):
            sums[i] += row[name]
    return [[*key, *sums] for key, sums in groups.items()]


def apply_rollups(conn: Connection, rows: Sequence[Row]) -> None:
    """Add usage_events ``rows`` (all newly stored) to the rollups, one upsert per group."""
    values = aggregate(rows)
    if values:
        conn.execute(text(UPSERT), [{f"c{i}": v for i, v in enumerate(row)} for row in values])


def insert_events(conn: Connection, rows: Sequence[Row]) -> int:
    """Insert usage_events ``rows``, ignoring ids already stored, and add the stored ones to the
    rollups in the same transaction; returns how many were stored."""
    if not rows:
        return 0
    stored = set(conn.execute(insert_ignoring_duplicates(conn, usage_events).returning(usage_events.c.id),
                              list(rows)).scalars())
    fresh: list[Row] = []
    for row in rows:
        if row["id"] in stored:
            stored.discard(row["id"])  # a repeated id within the batch was stored once
            fresh.append(row)
    apply_rollups(conn, fresh)
    return len(fresh)


def backfill(conn: Connection) -> None:
    """Fill the rollups from every stored event (run once, by the migration that adds them)."""
    conn.execute(text(from_events(conn.dialect.name, "1 = 1")))


__all__ = ["COLUMNS", "SQLITE_AFTER_INSERT", "UPSERT", "after_insert_postgres", "aggregate", "apply_rollups",
           "backfill", "insert_events"]
