"""On SQLite, ``ledger export`` formats JSON lines from row tuples: the bytes of ``event_fields``."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from costwarden.ledger.export import _event_batches, export_records, jsonl_line
from costwarden.ledger.schema import usage_events

ENGINE = create_engine("sqlite://")
usage_events.create(ENGINE)
NAMES = [column.name for column in usage_events.c]
NULLABLE = {"team", "key_id", "user"}
TEXT = {"id", "department", "team", "key_id", "user", "model_requested", "model_served", "provider", "endpoint",
        "price_version", "decision", "status", "model_sent", "service_tier", "customer"}
TIMES = {"admitted_at", "finished_at"}
JSON_TEXT = {"tags": ['{}', '{"project":"atlas"}', '{"é":"ü"}', ""], "shadow": ['[]', '["x"]', ""],
             "tool_calls": ['{}', '{"web_search":2}', '{"recherche_é":1}', ""]}

texts = st.sampled_from(["HR", "gpt-4o", "", "a b", "x-1"])  # text JSON writes as it is
# text it escapes, or that is not ASCII (one field of a row at most, so that most rows are plain)
odd_texts = st.one_of(st.text(max_size=4), st.text(st.sampled_from('a "\\\n\x00\x1f\x7fé\u2028'), max_size=3))
numbers = st.one_of(st.integers(-(10**12), 10**12), st.sampled_from([0, -1_000_000_000, 1_500_000_000]))


@st.composite
def rows(draw: st.DrawFn, number: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for name in NAMES:
        if name == "id":
            row[name] = f"ev-{number}-" + draw(texts)
        elif name in TIMES:
            second = draw(st.integers(0, 59))
            row[name] = draw(st.sampled_from([f"2026-11-03 15:00:{second:02d}.000000",
                                              f"2026-11-03 15:00:{second:02d}.250000"]))
        elif name in NULLABLE:
            row[name] = draw(st.one_of(st.none(), texts))
        elif name in TEXT:
            row[name] = draw(texts)
        elif name in JSON_TEXT:
            row[name] = draw(st.sampled_from(JSON_TEXT[name]))
        elif name in ("interrupted", "stream", "usage_malformed"):
            row[name] = draw(st.sampled_from([0, 1]))
        else:
            row[name] = draw(numbers)
    if draw(st.booleans()):
        row[draw(st.sampled_from(sorted(TEXT - {"id"})))] = draw(odd_texts)
    odd = draw(st.integers(0, 9))
    if odd == 0:  # a REAL where the export writes an integer
        row[draw(st.sampled_from(["input_tokens", "latency_ms", "trimmed_tokens"]))] = 1.5
    elif odd == 1:  # the extremes of a 64-bit integer
        row[draw(st.sampled_from(["cost_nanos", "estimate_nanos", "output_tokens"]))] = draw(
            st.sampled_from([-(2**63), 2**63 - 1]))
    return row


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(*(rows(i) for i in range(n)))))
def test_lines_from_row_tuples_are_the_bytes_of_event_fields(batch: tuple[dict[str, Any], ...]) -> None:
    with ENGINE.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        driver.executemany(f"INSERT INTO usage_events ({', '.join(repr(n).replace(chr(39), chr(34)) for n in NAMES)}) "
                           f"VALUES ({', '.join('?' * len(NAMES))})", [[row[n] for n in NAMES] for row in batch])
        out = io.StringIO()
        written = export_records(conn, out, "jsonl", None, None, None, False)
        general = b"".join(jsonl_line(fields) for part in _event_batches(conn, None, None, None)
                           for fields in part if not isinstance(fields, str)).decode()
        conn.rollback()
    assert written == len(batch)
    assert out.getvalue() == general


def test_rows_needing_escapes_are_written_by_event_fields() -> None:
    plain = {name: 0 for name in NAMES} | dict.fromkeys(TEXT, "x") | dict.fromkeys(TIMES, "2026-11-03 15:00:00.000000")
    plain |= {"tags": "{}", "shadow": "[]", "tool_calls": "{}"}
    odd = ['a"b', "a\\b", "a\nb", "a\x00b", "a\x7fb", "é", "\u2028"]
    batch = [plain | {"id": f"ev-{i}", "team": text} for i, text in enumerate(odd)]
    batch += [plain | {"id": "ev-tools", "tool_calls": '{"recherche_é":1}'}, plain | {"id": "ev-plain"}]
    test_lines_from_row_tuples_are_the_bytes_of_event_fields.hypothesis.inner_test(tuple(batch))  # type: ignore[attr-defined]
