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
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from costwarden.core.csvsafe import safe_cell
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.core.money import format_usd, usd_to_nanos
from costwarden.ledger.ledger import Ledger

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


def event_fields(event: UsageEvent) -> dict[str, Any]:
    """The export record of an event."""
    return {
        "record": "event", "id": event.id, "admitted_at": event.admitted_at.isoformat(),
        "finished_at": event.finished_at.isoformat(), "department": event.department,
        "team": event.team, "key_id": event.key_id, "user": event.user,
        "model_requested": event.model_requested, "model_served": event.model_served,
        "provider": event.provider, "endpoint": event.endpoint, "input_tokens": event.input_tokens,
        "cached_input_tokens": event.cached_input_tokens, "output_tokens": event.output_tokens,
        "cost_usd": format_usd(event.cost_nanos), "cost_nanos": event.cost_nanos,
        "estimate_usd": format_usd(event.estimate_nanos), "estimate_nanos": event.estimate_nanos,
        "price_version": event.price_version, "decision": event.decision, "status": event.status,
        "http_status": event.http_status, "latency_ms": event.latency_ms,
        "overrun_tokens": event.overrun_tokens, "interrupted": event.interrupted, "stream": event.stream,
        "tags": dict(event.tags), "shadow": list(event.shadow), "code": None, "message": None,
        "model_sent": event.model_sent, **{name: getattr(event, name) for name in BILLED_PARTS},
        "service_tier": event.service_tier, "tool_calls": dict(event.tool_calls),
        "usage_malformed": event.usage_malformed, "customer": event.customer or None,
        "trimmed_tokens": event.trimmed_tokens,
    }


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
    if isinstance(value, dict | list):
        return safe_cell(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return safe_cell(str(value), numeric=name in NUMERIC)


async def write_export(ledger: Ledger, out: TextIO, fmt: str = "jsonl", since: datetime | None = None,
                       until: datetime | None = None, department: str | None = None,
                       include_rejections: bool = True) -> int:
    """Write the events (and refused calls) admitted in [since, until) to ``out``; returns how
    many records were written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    written = 0
    async for item in ledger.iter_events(since, until, department, include_rejections=include_rejections):
        fields = event_fields(item) if isinstance(item, UsageEvent) else rejection_fields(item)
        if writer is not None:
            writer.writerow({name: _csv_value(name, value) for name, value in fields.items()})
        else:
            out.write(json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n")
        written += 1
    return written


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

BATCH = 1000  # events written per batch


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


async def import_records(ledger: Ledger, records: list[UsageEvent | Rejection], repriced: int,
                         progress: Callable[[int], None] | None = None) -> ImportResult:
    """Write checked records in batches; ids the ledger holds already are left as they are. New
    records are counted by the ledger's row counts before and after (exact unless something else
    writes to the same ledger during the import)."""
    events_before, rejections_before = await ledger.count_events(), await ledger.count_rejections()
    events = [r for r in records if isinstance(r, UsageEvent)]
    rejections = [r for r in records if isinstance(r, Rejection)]
    for start in range(0, len(events), BATCH):
        await ledger.record_many(events[start:start + BATCH])
        if progress is not None:
            progress(min(start + BATCH, len(events)))
    for rejection in rejections:
        await ledger.record_rejection(rejection)
    return ImportResult(len(events), await ledger.count_events() - events_before, len(rejections),
                        await ledger.count_rejections() - rejections_before, repriced)
