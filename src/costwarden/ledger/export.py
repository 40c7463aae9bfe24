"""Export the ledger as JSON Lines or CSV, and read a JSON Lines export back (for import).

Both formats carry the same fields, in ``FIELDS`` order. ``record`` is ``event`` or ``rejection``;
a rejection's decision time is in ``admitted_at``, its ``status`` is ``rejected`` and its cost 0.
Money is given twice: as an exact decimal USD string (``cost_usd``) and as integer nano-dollars
(``cost_nanos``, authoritative). Times are ISO 8601 in UTC. In CSV, tags and shadow decisions are
JSON text and booleans are ``true``/``false``; a text cell a spreadsheet would run as a formula
(``=HYPERLINK(...)``) starts with a single quote (see ``core.csvsafe``).
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from costwarden.core.csvsafe import safe_cell
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.core.money import usd_to_nanos
from costwarden.ledger.ledger import Ledger
from costwarden.ledger.rows import rejection_from_row, utc
from costwarden.ledger.schema import rejections, usage_events
from costwarden.ledger.sqlite_statements import utc_text

FORMATS = ("jsonl", "csv")
FIELDS = (
    "record", "id", "admitted_at", "finished_at", "department", "team", "key_id", "user",
    "model_requested", "model_served", "provider", "endpoint", "input_tokens", "cached_input_tokens",
    "output_tokens", "cost_usd", "cost_nanos", "estimate_usd", "estimate_nanos", "price_version",
    "decision", "status", "http_status", "latency_ms", "overrun_tokens", "interrupted", "stream",
    "tags", "shadow", "code", "message", "model_sent", "cache_write_5m_tokens", "cache_write_1h_tokens",
    "reasoning_tokens", "audio_input_tokens", "service_tier", "tool_calls", "usage_malformed",
    "customer", "trimmed_tokens",
)
# Parts of the token totals billed at their own rates (SPEC §9), exported and imported as they are.
BILLED_PARTS = ("cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens", "audio_input_tokens")


class RawJson(str):
    """JSON text stored in the ledger (tags, shadow decisions, tool calls), written as it is: the
    ledger stores it compact, with sorted keys and without escaping non-ASCII text, as exported."""

    __slots__ = ()


def event_fields(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The export record of a usage_events row (as the driver or SQLAlchemy reads it)."""
    tool_calls = row["tool_calls"] or "{}"
    return {
        "record": "event", "id": row["id"], "admitted_at": iso_utc(row["admitted_at"]),
        "finished_at": iso_utc(row["finished_at"]), "department": row["department"],
        "team": row["team"], "key_id": row["key_id"], "user": row["user"],
        "model_requested": row["model_requested"], "model_served": row["model_served"],
        "provider": row["provider"], "endpoint": row["endpoint"], "input_tokens": row["input_tokens"],
        "cached_input_tokens": row["cached_input_tokens"], "output_tokens": row["output_tokens"],
        "cost_usd": usd_text(row["cost_nanos"]), "cost_nanos": row["cost_nanos"],
        "estimate_usd": usd_text(row["estimate_nanos"]), "estimate_nanos": row["estimate_nanos"],
        "price_version": row["price_version"], "decision": row["decision"], "status": row["status"],
        "http_status": row["http_status"], "latency_ms": row["latency_ms"],
        "overrun_tokens": row["overrun_tokens"], "interrupted": bool(row["interrupted"]),
        "stream": bool(row["stream"]), "tags": RawJson(row["tags"] or "{}"), "shadow": RawJson(row["shadow"] or "[]"),
        "code": None, "message": None, "model_sent": row["model_sent"] or "",
        **{name: row[name] for name in BILLED_PARTS}, "service_tier": row["service_tier"] or "",
        "tool_calls": RawJson(tool_calls) if tool_calls.isascii() else json.loads(tool_calls),
        "usage_malformed": bool(row["usage_malformed"]), "customer": row["customer"] or None,
        "trimmed_tokens": row["trimmed_tokens"],
    }


def iso_utc(value: datetime | str) -> str:
    """A stored UTC time as ``datetime.isoformat`` writes it: SQLite's naive text, or an aware datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    text = value.replace(" ", "T", 1)
    return (text[:-7] if text.endswith(".000000") else text) + "+00:00"


def usd_text(nanos: int) -> str:
    """``format_usd`` in integer arithmetic (an export writes two per event)."""
    whole, fraction = divmod(abs(nanos), 1_000_000_000)
    text = f"{whole}.{fraction:09d}".rstrip("0").rstrip(".") if fraction else str(whole)
    return "-" + text if nanos < 0 else text


def rejection_fields(rejection: Rejection) -> dict[str, Any]:
    """The export record of a refused call (zero cost)."""
    return {
        "record": "rejection", "id": rejection.id, "admitted_at": rejection.at.isoformat(),
        "finished_at": None, "department": rejection.department, "team": rejection.team,
        "key_id": rejection.key_id, "user": rejection.user, "model_requested": rejection.model_requested,
        "model_served": None, "provider": None, "endpoint": rejection.endpoint, "input_tokens": 0,
        "cached_input_tokens": 0, "output_tokens": 0, "cost_usd": "0", "cost_nanos": 0,
        "estimate_usd": "0", "estimate_nanos": 0, "price_version": None, "decision": "reject",
        "status": "rejected", "http_status": rejection.http_status, "latency_ms": 0,
        "overrun_tokens": 0, "interrupted": False, "stream": False, "tags": dict(rejection.tags),
        "shadow": list(rejection.shadow), "code": rejection.code, "message": rejection.message,
        "model_sent": None, **dict.fromkeys(BILLED_PARTS, 0), "service_tier": None, "tool_calls": {},
        "usage_malformed": False, "customer": None, "trimmed_tokens": 0,
    }


# Columns whose plain numbers (negative ones included) stay numbers in a spreadsheet.
NUMERIC = frozenset({"input_tokens", "cached_input_tokens", "output_tokens", "cost_usd", "cost_nanos",
                     "estimate_usd", "estimate_nanos", "http_status", "latency_ms", "overrun_tokens", "trimmed_tokens",
                     *BILLED_PARTS})


def _csv_value(name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, RawJson):
        return safe_cell(str(value))
    if isinstance(value, dict | list):
        return safe_cell(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return safe_cell(str(value), numeric=name in NUMERIC)


def jsonl_line(fields: Mapping[str, Any]) -> bytes:
    """One JSON Lines record, as ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``."""
    return orjson.dumps(fields, default=_raw, option=orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_APPEND_NEWLINE)


def _raw(value: Any) -> Any:
    if isinstance(value, RawJson):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot export {type(value).__name__}")


def csv_line(writer: Any, fields: Mapping[str, Any]) -> None:
    """One CSV record through ``writer`` (a ``csv.writer``), in ``FIELDS`` order."""
    writer.writerow([_csv_value(name, fields[name]) for name in FIELDS])


async def write_export(ledger: Ledger, out: TextIO, fmt: str = "jsonl", since: datetime | None = None,
                       until: datetime | None = None, department: str | None = None,
                       include_rejections: bool = True, progress: Callable[[int], None] | None = None) -> int:
    """Write the events (and refused calls) admitted in [since, until) to ``out``, streamed from
    one read in batches; returns how many records were written. ``progress`` is told the
    number of records written so far after each batch."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    return await ledger.read_with(lambda conn: export_records(conn, out, fmt, since, until, department,
                                                              include_rejections, progress))


EXPORT_BATCH = 10_000  # records read and written at a time


def export_records(conn: Connection, out: TextIO, fmt: str, since: datetime | None, until: datetime | None,
                   department: str | None, include_rejections: bool,
                   progress: Callable[[int], None] | None = None) -> int:
    """``write_export`` on one reading connection: events through the driver's cursor, in batches."""
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(FIELDS)
    written = 0
    batches: Iterator[list[dict[str, Any]] | list[dict[str, Any] | str]] = _event_batches(
        conn, since, until, department, lines=writer is None)
    if include_rejections:
        batches = itertools.chain(batches, _rejection_batches(conn, since, until, department))
    for records in batches:
        if writer is not None:
            for fields in records:
                assert not isinstance(fields, str)  # lines come only for JSON Lines
                csv_line(writer, fields)
        else:
            out.write("".join([fields if isinstance(fields, str) else jsonl_line(fields).decode()
                               for fields in records]))
        written += len(records)
        if progress is not None:
            progress(written)
    return written


def _event_batches(conn: Connection, since: datetime | None, until: datetime | None, department: str | None,
                   lines: bool = False) -> Iterator[list[dict[str, Any] | str]]:
    """Export records of the events in admission order. On SQLite the rows come from the driver
    as they are stored (SQLAlchemy's row processing would cost more than the rest of the export),
    and with ``lines`` most come as their JSON line already written by SQLite (``export_sqlite``)."""
    names = [column.name for column in usage_events.c]
    if conn.dialect.name != "sqlite":
        query = select(usage_events).order_by(usage_events.c.admitted_at, usage_events.c.id)
        query = _where(query, usage_events.c.admitted_at, usage_events.c.department, since, until, department)
        for part in conn.execution_options(yield_per=EXPORT_BATCH).execute(query).mappings().partitions():
            yield [event_fields(row) for row in part]
        return
    clauses, params = [], []
    for clause, value in (("admitted_at >= ?", since), ("admitted_at < ?", until)):
        if value is not None:
            clauses.append(clause)
            params.append(utc_text(utc(value)))
    if department is not None:
        clauses.append("department = ?")
        params.append(department)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    columns = ", ".join(f'"{name}"' for name in names)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if lines:
            cursor.execute(f"SELECT {_LINE_COLUMNS}, {_COLUMNS_INTEGER}, rowid FROM usage_events{where} "
                           "ORDER BY admitted_at, id", params)
            while rows := cursor.fetchmany(EXPORT_BATCH):
                yield [_event_line(row, conn, names) for row in rows]
            return
        cursor.execute(f"SELECT {columns} FROM usage_events{where} ORDER BY admitted_at, id", params)
        while rows := cursor.fetchmany(EXPORT_BATCH):
            yield [event_fields(dict(zip(names, row, strict=True))) for row in rows]
    finally:
        cursor.close()


# -- JSON lines of SQLite rows, written directly -------------------------------------------------
# ``jsonl_line(event_fields(row))`` builds a dictionary and calls back into Python for each stored
# JSON text; an export of millions of events spends most of its time there. ``_event_line`` writes
# the same bytes from the row tuple with one format, for the rows whose values need no escaping
# (text of printable ASCII without quotes or backslashes, integers where numbers go), and leaves
# any other row to ``event_fields``.

# Columns read for a line, in ``_event_line``'s order (its FIELDS without record, code and message).
_LINE_NAMES = ("id", "admitted_at", "finished_at", "department", "team", "key_id", "user", "model_requested",
               "model_served", "provider", "endpoint", "input_tokens", "cached_input_tokens", "output_tokens",
               "cost_nanos", "estimate_nanos", "price_version", "decision", "status", "http_status", "latency_ms",
               "overrun_tokens", "interrupted", "stream", "tags", "shadow", "model_sent", *BILLED_PARTS,
               "service_tier", "tool_calls", "usage_malformed", "customer", "trimmed_tokens")
_LINE_COLUMNS = ", ".join(f'"{name}"' for name in _LINE_NAMES)
_INTEGERS = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_nanos", "estimate_nanos", "http_status",
             "latency_ms", "overrun_tokens", *BILLED_PARTS, "trimmed_tokens")
# 1 when every number column holds an integer: a NULL or a REAL makes the sum NULL or REAL (text in
# them fails the line's %d instead), and so does an overflowing sum, which only sends the row to
# the general path.
_COLUMNS_INTEGER = f"typeof({' + '.join(f'{chr(34)}{name}{chr(34)}' for name in _INTEGERS)}) = 'integer'"
_QUOTED = '"%s"'
_FORMATS = {"record": '"event"', "code": "null", "message": "null", **dict.fromkeys(_INTEGERS, "%d"),
            **dict.fromkeys(("team", "key_id", "user", "interrupted", "stream", "tags", "shadow", "tool_calls",
                             "usage_malformed", "customer"), "%s")}
_LINE = "{" + ",".join(f'"{name}":{_FORMATS.get(name, _QUOTED)}' for name in FIELDS) + "}\n"


def _event_line(row: tuple[Any, ...], conn: Connection, names: list[str]) -> dict[str, Any] | str:
    """A row of ``_LINE_COLUMNS`` as its JSON line, or its export record when it needs escaping."""
    (ident, admitted, finished, department, team, key_id, user, requested, served, provider, endpoint,
     input_tokens, cached, output, cost, estimate, label, decision, status, http_status, latency, overrun,
     interrupted, stream, tags, shadow, model_sent, write_5m, write_1h, reasoning, audio, tier, tool_calls,
     malformed, customer, trimmed, integers, rowid) = row
    try:
        text = "".join((ident, department, team or "", key_id or "", user or "", requested, served, provider,
                        endpoint, label, decision, status, model_sent or "", tier or "", customer or ""))
        tool_calls = tool_calls or "{}"
        if integers and text.isascii() and text.isprintable() and '"' not in text and "\\" not in text \
                and tool_calls.isascii():
            return _LINE % (
                ident, iso_utc(admitted), iso_utc(finished), department, "null" if team is None else f'"{team}"',
                "null" if key_id is None else f'"{key_id}"', "null" if user is None else f'"{user}"', requested,
                served, provider, endpoint, input_tokens, cached, output, usd_text(cost), cost, usd_text(estimate),
                estimate, label, decision, status, http_status, latency, overrun, "true" if interrupted else "false",
                "true" if stream else "false", _raw_text(tags or "{}"), _raw_text(shadow or "[]"), model_sent or "",
                write_5m, write_1h, reasoning, audio, tier or "", _raw_text(tool_calls),
                "true" if malformed else "false", f'"{customer}"' if customer else "null", trimmed)
    except (TypeError, AttributeError):  # not text or not numbers where the export expects them
        pass
    return event_fields(_row_at(conn, rowid, names))


def _raw_text(value: Any) -> str:
    """Stored JSON text, which the line takes as it is (as ``RawJson``); anything else is refused."""
    if type(value) is not str:
        raise TypeError("not text")
    return value


def _row_at(conn: Connection, rowid: int, names: list[str]) -> dict[str, Any]:
    """The usage_events row stored at ``rowid``, as the driver reads it."""
    columns = ", ".join(f'"{name}"' for name in names)
    row = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
        f"SELECT {columns} FROM usage_events WHERE rowid = ?", (rowid,)).fetchone()
    return dict(zip(names, row, strict=True))


def _rejection_batches(conn: Connection, since: datetime | None, until: datetime | None,
                       department: str | None) -> Iterator[list[dict[str, Any]]]:
    query = _where(select(rejections).order_by(rejections.c.at, rejections.c.id), rejections.c.at,
                   rejections.c.department, since, until, department)
    for part in conn.execution_options(yield_per=EXPORT_BATCH).execute(query).mappings().partitions():
        yield [rejection_fields(rejection_from_row(row)) for row in part]


def _where(query: Select[Any], when: Any, department_column: Any, since: datetime | None, until: datetime | None,
           department: str | None) -> Select[Any]:
    if since is not None:
        query = query.where(when >= utc(since))
    if until is not None:
        query = query.where(when < utc(until))
    if department is not None:
        query = query.where(department_column == department)
    return query


def read_jsonl(lines: Iterable[str]) -> Iterator[UsageEvent | Rejection]:
    """The records of a JSON Lines export, in order; blank lines are skipped."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield parse_record(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number}: {exc}") from exc


def parse_record(obj: Mapping[str, Any]) -> UsageEvent | Rejection:
    """An event or rejection from one export record (``cost_nanos`` wins over ``cost_usd``)."""
    tags = {str(k): str(v) for k, v in (obj.get("tags") or {}).items()}
    shadow = tuple(str(s) for s in obj.get("shadow") or ())
    if obj.get("record", "event") == "rejection":
        return Rejection(
            id=obj["id"], at=_time(obj["admitted_at"]), department=obj.get("department"),
            model_requested=obj.get("model_requested"), code=obj["code"], message=obj.get("message") or "",
            http_status=int(obj["http_status"]), endpoint=obj.get("endpoint") or "", team=obj.get("team"),
            key_id=obj.get("key_id"), user=obj.get("user"), tags=tags, shadow=shadow,
        )
    return UsageEvent(
        id=obj["id"], admitted_at=_time(obj["admitted_at"]), finished_at=_time(obj["finished_at"]),
        department=obj["department"], model_requested=obj["model_requested"],
        model_served=obj["model_served"], provider=obj["provider"], endpoint=obj["endpoint"],
        team=obj.get("team"), key_id=obj.get("key_id"), user=obj.get("user"), tags=tags,
        input_tokens=int(obj.get("input_tokens", 0)), cached_input_tokens=int(obj.get("cached_input_tokens", 0)),
        output_tokens=int(obj.get("output_tokens", 0)), cost_nanos=_nanos(obj, "cost"),
        estimate_nanos=_nanos(obj, "estimate"), price_version=obj.get("price_version") or "",
        decision=obj.get("decision") or "allow", status=CallStatus(obj.get("status") or "ok"),
        http_status=int(obj.get("http_status", 200)), latency_ms=int(obj.get("latency_ms", 0)),
        overrun_tokens=int(obj.get("overrun_tokens", 0)), interrupted=bool(obj.get("interrupted", False)),
        shadow=shadow, stream=bool(obj.get("stream", False)),
        model_sent=str(obj.get("model_sent") or ""),
        cache_write_5m_tokens=int(obj.get("cache_write_5m_tokens") or 0),
        cache_write_1h_tokens=int(obj.get("cache_write_1h_tokens") or 0),
        reasoning_tokens=int(obj.get("reasoning_tokens") or 0), audio_input_tokens=int(obj.get("audio_input_tokens") or 0),
        service_tier=str(obj.get("service_tier") or ""), tool_calls=_counts(obj.get("tool_calls")),
        usage_malformed=_flag(obj.get("usage_malformed")), customer=str(obj.get("customer") or ""),
        trimmed_tokens=int(obj.get("trimmed_tokens") or 0),
    )


def _counts(value: Any) -> dict[str, int]:
    """Tool calls as exported: a JSON object (JSON lines) or its text (CSV)."""
    loaded = json.loads(value) if isinstance(value, str) and value else value
    return {str(k): int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _nanos(obj: Mapping[str, Any], name: str) -> int:
    nanos = obj.get(f"{name}_nanos")
    if nanos is not None:
        if isinstance(nanos, float):  # money is never a binary float
            raise ValueError(f"{name}_nanos must be an integer, not {nanos!r}")
        return int(nanos)
    usd = obj.get(f"{name}_usd")
    return 0 if usd is None else usd_to_nanos(str(usd))


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return value


# -- import: counted (records are checked and re-priced by ``import_rows``) ------------------------



@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did: records read, how many were new to the ledger, how many it already held."""

    events_read: int
    events_new: int
    rejections_read: int
    rejections_new: int
    repriced: int  # events whose cost or price label changed to the catalog's

    @property
    def events_present(self) -> int:
        return self.events_read - self.events_new

    @property
    def rejections_present(self) -> int:
        return self.rejections_read - self.rejections_new


