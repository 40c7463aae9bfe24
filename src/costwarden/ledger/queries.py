"""Read queries over the usage ledger: grouped totals and paged event listing.

Grouping is done in SQL with dialect-specific expressions for the UTC day, the epoch bucket and
JSON tags, so that totals over millions of events never leave the database; sums are integers.
Event totals without buckets read the daily rollups (``usage_rollups``, see ``rollups.py``) for
the whole UTC days of their window and the events only for the hours before the first and after
the last UTC midnight (a month in a policy timezone other than UTC begins and ends mid-day), so
that they cost in proportion to their groups and days, not to events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import BigInteger, Date, Integer, and_, cast, false, func, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.schema import Table

from costwarden.core.events import Rejection, UsageEvent
from costwarden.ledger.rows import event_from_row, rejection_from_row, utc
from costwarden.ledger.schema import rejections, usage_events, usage_rollups

GroupValue = str | date | None
WhereValue = str | None | Sequence[str | None]

EVENT_DIMENSIONS = ("department", "team", "key_id", "user", "model_served", "model_requested",
                    "provider", "endpoint", "status", "decision", "price_version", "customer")
REJECTION_DIMENSIONS = ("department", "team", "key_id", "user", "model_requested", "endpoint", "code")
_TAG_NAME = re.compile(r"^[^\"\\]{1,128}$")
_SUMS = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_nanos", "cache_write_5m_tokens",
         "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens", "trimmed_tokens")


@dataclass(frozen=True, slots=True)
class TotalsRow:
    """One group of a totals query. ``groups`` maps each requested group_by name to its value
    (``day`` to a UTC ``date``, ``tag:<name>`` to the tag's value or None); ``bucket`` is
    floor(epoch seconds of admitted_at / bucket_seconds) when buckets were asked for."""

    groups: Mapping[str, GroupValue]
    requests: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    cache_write_5m_tokens: int = 0  # parts of input_tokens and output_tokens billed at their own rates
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0
    trimmed_tokens: int = 0  # input removed by a plan's thin_context before forwarding
    bucket: int | None = None

    def __getitem__(self, name: str) -> GroupValue | int:
        """Row-like access: a group value, ``requests``, a token or cost sum, or ``bucket``."""
        if name in self.groups:
            return self.groups[name]
        if name == "requests" or name in _SUMS:
            value: int = getattr(self, name)
            return value
        if name == "bucket" and self.bucket is not None:
            return self.bucket
        raise KeyError(name)


_ROLLUP_NULLABLE = ("team", "key_id", "user")  # stored as '' in the rollups


def _time_column(table: Table) -> Any:
    return table.c.admitted_at if table is usage_events else table.c.at


def _dimension(conn: Connection, table: Table, name: str) -> ColumnElement[Any]:
    dimensions = REJECTION_DIMENSIONS if table is rejections else EVENT_DIMENSIONS
    if name in dimensions:
        column: ColumnElement[Any] = table.c[name]
        if table is usage_rollups and name in _ROLLUP_NULLABLE:
            return func.nullif(column, "")
        return column
    if name == "day" and table is usage_rollups:
        day: ColumnElement[Any] = table.c.day
        return day
    if name == "day":
        when = _time_column(table)
        if conn.dialect.name == "postgresql":
            return cast(func.timezone("UTC", when), Date)
        return func.date(when)
    if name.startswith("tag:") and _TAG_NAME.match(name[4:]):
        tag = name[4:]
        if conn.dialect.name == "postgresql":
            return func.jsonb_extract_path_text(cast(table.c.tags, JSONB), tag)
        return func.json_extract(table.c.tags, f'$."{tag}"')
    raise ValueError(f"cannot group or filter by {name!r}: use one of {', '.join(dimensions)}, day, tag:<name>")


def _epoch_seconds(conn: Connection, table: Table) -> ColumnElement[int]:
    when = _time_column(table)
    if conn.dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", when)), BigInteger)
    return cast(func.strftime("%s", when), Integer)


def _window(query: Select[Any], table: Table, since: datetime | None, until: datetime | None) -> Select[Any]:
    if table is usage_rollups:  # whole UTC days: [since's day, until's day)
        if since is not None:
            query = query.where(table.c.day >= utc(since).date().isoformat())
        if until is not None:
            query = query.where(table.c.day < utc(until).date().isoformat())
        return query
    when = _time_column(table)
    if since is not None:
        query = query.where(when >= utc(since))
    if until is not None:
        query = query.where(when < utc(until))
    return query


def _filters(conn: Connection, query: Select[Any], table: Table,
             where: Mapping[str, WhereValue] | None) -> Select[Any]:
    for name, wanted in (where or {}).items():
        column = _dimension(conn, table, name)
        if wanted is None:
            query = query.where(column.is_(None))
        elif isinstance(wanted, str):
            query = query.where(column == wanted)
        else:
            values = [v for v in wanted if v is not None]
            clauses = [column.in_(values)] if values else []
            if len(values) < len(wanted):
                clauses.append(column.is_(None))
            query = query.where(or_(*clauses) if clauses else false())
    return query


def totals(conn: Connection, since: datetime | None, until: datetime | None, group_by: Sequence[str],
           where: Mapping[str, WhereValue] | None, bucket_seconds: int | None,
           table: Table = usage_events, use_rollups: bool = True) -> list[TotalsRow]:
    """Exact sums per group over [since, until); rejections count in ``requests`` only.
    ``use_rollups=False`` sums the events themselves (the rollups give the same rows)."""
    if bucket_seconds is not None and bucket_seconds < 1:
        raise ValueError("bucket_seconds must be a positive number of seconds")
    if table is usage_events and bucket_seconds is None and use_rollups:
        split = whole_days(since, until)
        if split is not None:
            first, end, edges = split
            parts = [_totals(conn, first, end, group_by, where, None, usage_rollups)]
            parts += [_totals(conn, start, stop, group_by, where, None, usage_events) for start, stop in edges]
            return parts[0] if len(parts) == 1 else _merge(conn, parts, group_by)
    return _totals(conn, since, until, group_by, where, bucket_seconds, table)


def whole_days(since: datetime | None, until: datetime | None
               ) -> tuple[datetime | None, datetime | None, list[tuple[datetime, datetime]]] | None:
    """[since, until) as the UTC midnights bounding its whole days and the windows before the
    first and after the last (empty windows left out); None if it holds no whole UTC day."""
    first = end = None
    edges = []
    if since is not None:
        since = utc(since)
        first = datetime.combine(since.date(), time(), UTC)
        if first < since:
            first += timedelta(days=1)
            edges.append((since, first))
    if until is not None:
        until = utc(until)
        end = datetime.combine(until.date(), time(), UTC)
        if end < until:
            edges.append((end, until))
    if first is not None and end is not None and first >= end:
        return None
    return first, end, edges


def _merge(conn: Connection, parts: list[list[TotalsRow]], group_by: Sequence[str]) -> list[TotalsRow]:
    """The rows of ``parts`` (disjoint windows) summed per group, in the order SQL gives them."""
    merged: dict[tuple[GroupValue, ...], dict[str, int]] = {}
    groups: dict[tuple[GroupValue, ...], Mapping[str, GroupValue]] = {}
    for part in parts:
        for row in part:
            key = tuple(row.groups[name] for name in group_by)
            sums = merged.setdefault(key, dict.fromkeys(("requests", *_SUMS), 0))
            groups.setdefault(key, row.groups)
            for name in sums:
                sums[name] += getattr(row, name)
    nulls_first = conn.dialect.name == "sqlite"  # as each database orders NULL in ORDER BY

    def order(key: tuple[GroupValue, ...]) -> tuple[tuple[bool, str], ...]:
        return tuple(((value is not None) == nulls_first, "" if value is None else str(value)) for value in key)

    return [TotalsRow(groups=groups[key], **merged[key]) for key in sorted(merged, key=order)]


def _totals(conn: Connection, since: datetime | None, until: datetime | None, group_by: Sequence[str],
            where: Mapping[str, WhereValue] | None, bucket_seconds: int | None, table: Table) -> list[TotalsRow]:
    keys = [(f"g{i}", name, _dimension(conn, table, name)) for i, name in enumerate(group_by)]
    columns: list[Any] = [expr.label(label) for label, _, expr in keys]
    if bucket_seconds is not None:
        bucket = _epoch_seconds(conn, table) // literal(bucket_seconds, BigInteger)
        keys.append(("bucket", "bucket", bucket))
        columns.append(bucket.label("bucket"))
    if table is usage_rollups:
        columns.append(func.coalesce(func.sum(table.c.requests), 0).label("requests"))
    else:
        columns.append(func.count().label("requests"))
    if table is not rejections:
        columns += [func.coalesce(func.sum(table.c[m]), 0).label(m) for m in _SUMS]
    query = _filters(conn, _window(select(*columns), table, since, until), table, where)
    if keys:
        query = query.group_by(*[expr for _, _, expr in keys]).order_by(*[expr for _, _, expr in keys])
    rows = []
    for row in conn.execute(query).mappings():
        groups = {name: _group_value(name, row[label]) for label, name, _ in keys if label != "bucket"}
        sums = {m: int(row[m]) for m in _SUMS} if table is not rejections else {}
        bucket_value = None if bucket_seconds is None else int(row["bucket"])
        rows.append(TotalsRow(groups=groups, requests=int(row["requests"]), bucket=bucket_value, **sums))
    return rows


def _group_value(name: str, value: Any) -> GroupValue:
    if name == "day" and isinstance(value, str):
        return date.fromisoformat(value)
    if value is None or isinstance(value, date):
        return value
    return str(value)


def count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def event_page(conn: Connection, since: datetime | None, until: datetime | None,
               where: Mapping[str, WhereValue] | None, after: tuple[datetime, str] | None,
               limit: int) -> list[UsageEvent]:
    """Events in (admitted_at, id) order, strictly after the ``after`` cursor (keyset paging)."""
    query = _filters(conn, _window(select(usage_events), usage_events, since, until), usage_events, where)
    query = _after(query, usage_events, after).order_by(usage_events.c.admitted_at, usage_events.c.id)
    return [event_from_row(row) for row in conn.execute(query.limit(limit)).mappings()]


def rejection_page(conn: Connection, since: datetime | None, until: datetime | None,
                   where: Mapping[str, WhereValue] | None, after: tuple[datetime, str] | None,
                   limit: int) -> list[Rejection]:
    """Rejections in (at, id) order, strictly after the ``after`` cursor."""
    query = _filters(conn, _window(select(rejections), rejections, since, until), rejections, where)
    query = _after(query, rejections, after).order_by(rejections.c.at, rejections.c.id)
    return [rejection_from_row(row) for row in conn.execute(query.limit(limit)).mappings()]


def recent_events(conn: Connection, since: datetime | None, until: datetime | None,
                  where: Mapping[str, WhereValue] | None, limit: int, offset: int) -> list[UsageEvent]:
    """Newest first, for paged listings."""
    query = _filters(conn, _window(select(usage_events), usage_events, since, until), usage_events, where)
    query = query.order_by(usage_events.c.admitted_at.desc(), usage_events.c.id.desc())
    return [event_from_row(row) for row in conn.execute(query.limit(limit).offset(offset)).mappings()]


def recent_rejections(conn: Connection, since: datetime | None, until: datetime | None,
                      where: Mapping[str, WhereValue] | None, limit: int, offset: int) -> list[Rejection]:
    """Refused calls newest first, for paged listings."""
    query = _filters(conn, _window(select(rejections), rejections, since, until), rejections, where)
    query = query.order_by(rejections.c.at.desc(), rejections.c.id.desc())
    return [rejection_from_row(row) for row in conn.execute(query.limit(limit).offset(offset)).mappings()]


def _after(query: Select[Any], table: Table, after: tuple[datetime, str] | None) -> Select[Any]:
    if after is None:
        return query
    when, ident = _time_column(table), table.c.id
    at = utc(after[0])
    return query.where(or_(when > at, and_(when == at, ident > after[1])))
