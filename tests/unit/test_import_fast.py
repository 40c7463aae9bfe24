"""The import's direct path stores exactly the rows of the general path, and takes nothing it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from costwarden.core.catalog import CatalogTimeline
from costwarden.core.events import UsageEvent
from costwarden.ledger.export import FIELDS, usd_text
from costwarden.ledger.import_fast import COLUMNS, fast_row
from costwarden.ledger.import_rows import ImportRowError, validated_record
from costwarden.ledger.rows import event_row
from costwarden.ledger.schema import usage_events
from costwarden.ledger.sqlite_statements import SqliteInsert
from costwarden.policy import parse_policy

OLD = parse_policy("""
version: 1
models:
  gpt-4o: {provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25}
  claude-haiku-4-5: {provider: anthropic, tier: 1, input: 1.00, output: 5.00}
""").catalog
NEW = parse_policy("""
version: 1
models:
  gpt-4o: {provider: openai, tier: 3, input: 2.00, output: 8.00, cached_input: 1.00}
  claude-haiku-4-5: {provider: anthropic, tier: 1, input: 1.00, output: 5.00}
""").catalog
CHANGE = datetime(2026, 11, 15, tzinfo=UTC)
TIMELINE = CatalogTimeline([(datetime(2026, 1, 1, tzinfo=UTC), lambda: OLD), (CHANGE, lambda: NEW)])
INSERT = SqliteInsert(usage_events, COLUMNS, sqlite.dialect())

texts = st.text(max_size=8)
counts = st.integers(min_value=0, max_value=200_000)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """An export record in ``FIELDS`` order, valid or not, costed at one of the catalogs' prices."""
    admitted = CHANGE + timedelta(microseconds=draw(st.integers(-3 * 86_400_000_000, 3 * 86_400_000_000)))
    admitted = admitted.replace(microsecond=0) if draw(st.booleans()) else admitted
    finished = admitted + timedelta(milliseconds=draw(st.integers(0, 5000) | st.just(-1)))
    model = draw(st.sampled_from(["gpt-4o", "claude-haiku-4-5"] * 4 + ["unknown-model"]))
    catalog = draw(st.sampled_from([OLD, NEW]))
    spec = catalog.resolve(model) or OLD["gpt-4o"]
    input_tokens = draw(counts)
    cached = draw(st.integers(0, input_tokens) | st.just(input_tokens + 1))
    output = draw(counts)
    cost = spec.cost(input_tokens, output, cached) + draw(st.sampled_from([0] * 8 + [1, -1, 2, 1000]))
    label = draw(st.sampled_from([spec.price_version, "", "weird", "1.00/-/2.00@x"]))
    fields: dict[str, Any] = {
        "record": draw(st.sampled_from(["event"] * 9 + ["rejection"])), "id": "ev-" + draw(texts),
        "admitted_at": admitted.isoformat(), "finished_at": finished.isoformat(),
        "department": draw(st.sampled_from(["HR", "SALES"])), "team": draw(st.one_of(st.none(), texts)),
        "key_id": draw(st.one_of(st.none(), texts)), "user": draw(st.one_of(st.none(), texts)),
        "model_requested": model, "model_served": model, "provider": spec.provider,
        "endpoint": "/v1/chat/completions", "input_tokens": input_tokens, "cached_input_tokens": cached,
        "output_tokens": output, "cost_usd": usd_text(cost + draw(st.sampled_from([0] * 9 + [1]))), "cost_nanos": cost,
        "estimate_usd": usd_text(cost), "estimate_nanos": cost + draw(st.integers(-1, 100)),
        "price_version": label, "decision": draw(st.sampled_from(["allow", "clamp", ""])),
        "status": draw(st.sampled_from(["ok", "upstream_error", "", "ok"] * 3 + ["nonsense"])),
        "http_status": draw(st.sampled_from([200, 429, 0])), "latency_ms": draw(st.integers(0, 5000) | st.just(-1)),
        "overrun_tokens": draw(st.integers(0, 10) | st.just(-1)), "interrupted": draw(st.booleans()),
        "stream": draw(st.booleans()), "tags": draw(st.dictionaries(texts, texts, max_size=3)),
        "shadow": draw(st.lists(texts, max_size=2)), "code": None, "message": None, "model_sent": draw(texts),
        "cache_write_5m_tokens": draw(st.sampled_from([0, 0, 0, 5])), "cache_write_1h_tokens": 0,
        "reasoning_tokens": draw(st.sampled_from([0, 0, 0, 3])), "audio_input_tokens": 0,
        "service_tier": draw(st.sampled_from(["", "default", "flex", "priority"])),
        "tool_calls": draw(st.sampled_from([{}, {}, {"web_search": 1}])),
        "usage_malformed": draw(st.booleans()), "customer": draw(st.one_of(st.none(), texts)),
        "trimmed_tokens": draw(st.integers(0, 10) | st.just(-1)),
    }
    assert tuple(fields) == FIELDS
    # a value of another type than the export writes, now and then
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(FIELDS))
        fields[name] = draw(st.one_of(st.none(), st.integers(-5, 5), st.text(max_size=3), st.floats(),
                                      st.lists(st.integers(-2**63, 2**64 - 1), max_size=2)))
    return fields


def general(line: str) -> tuple[list[Any], bool] | str | None:
    """The general path's stored row and re-pricing, its refusal, or None for a rejection record."""
    try:
        checked = validated_record(line, 1, TIMELINE)
    except ImportRowError as exc:
        return str(exc)
    except (TypeError, AttributeError) as exc:  # a non-text model or tags the general path does not catch
        return repr(exc)
    if not isinstance(checked.record, UsageEvent):
        return None
    return [int(v) if isinstance(v, bool) else v for v in INSERT.values(event_row(checked.record))], checked.repriced


@settings(max_examples=400, deadline=None)
@given(records())
def test_the_direct_path_stores_the_general_paths_row_or_leaves_the_record_to_it(fields: dict[str, Any]) -> None:
    line = orjson.dumps(fields).decode()
    fast = fast_row(line, TIMELINE)
    expected = general(line)
    if fast is None:
        return  # the general path decides: stores, refuses or records a rejection
    assert not isinstance(expected, str), f"the direct path took a record the general path refuses: {expected}"
    assert expected is not None
    row, repriced = fast
    assert [type(v) for v in row] == [type(v) for v in expected[0]]
    assert list(row) == expected[0]
    assert repriced == expected[1]


def test_the_direct_path_takes_ordinary_records() -> None:
    """An export line of an ordinary event does not fall back (else the property above says little)."""
    admitted = datetime(2026, 11, 3, 15, 0, 0, 250000, tzinfo=UTC)
    spec = OLD["gpt-4o"]
    fields: dict[str, Any] = {name: None for name in FIELDS} | {
        "record": "event", "id": "ev-1", "admitted_at": admitted.isoformat(),
        "finished_at": (admitted + timedelta(seconds=1)).isoformat(), "department": "HR", "team": "HR-T1",
        "key_id": "key_1", "user": "ana", "model_requested": "gpt-4o", "model_served": "gpt-4o",
        "provider": "openai", "endpoint": "/v1/chat/completions", "input_tokens": 1000, "cached_input_tokens": 200,
        "output_tokens": 100, "cost_nanos": spec.cost(1000, 100, 200), "estimate_nanos": 9, "price_version": "",
        "decision": "allow", "status": "ok", "http_status": 200, "latency_ms": 1000, "overrun_tokens": 0,
        "interrupted": False, "stream": True, "tags": {"project": "atlas"}, "shadow": [], "model_sent": "gpt-4o",
        "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0, "reasoning_tokens": 0, "audio_input_tokens": 0,
        "service_tier": "", "tool_calls": {}, "usage_malformed": False, "customer": None, "trimmed_tokens": 0}
    fields["cost_usd"] = usd_text(fields["cost_nanos"])
    line = orjson.dumps({name: fields[name] for name in FIELDS}).decode()
    fast = fast_row(line, TIMELINE)
    assert fast is not None
    assert fast[0][1] == "2026-11-03 15:00:00.250000"
    assert fast[1] is True  # no label: labelled with the catalog's prices
    assert (list(fast[0]), fast[1]) == general(line)
