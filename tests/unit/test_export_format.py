"""The export's fast formatting writes what the standard library would: money as ``format_usd``,
times as ``datetime.isoformat``, records as ``json.dumps(..., ensure_ascii=False)``."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from costwarden.core.money import format_usd
from costwarden.ledger.export import RawJson, iso_utc, jsonl_line, usd_text
from costwarden.ledger.rows import dump_tags
from costwarden.ledger.sqlite_statements import utc_text

INSTANTS = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(st.integers(-(10**20), 10**20))
def test_usd_text_is_format_usd(nanos: int) -> None:
    assert usd_text(nanos) == format_usd(nanos)


@given(INSTANTS)
def test_a_stored_time_reads_back_as_isoformat(at: datetime) -> None:
    assert iso_utc(utc_text(at)) == iso_utc(at) == at.isoformat()


@given(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4), st.integers(0, 10**15))
def test_a_record_is_written_as_json_dumps_writes_it(tags: dict[str, str], cost: int) -> None:
    stored = dump_tags(tags)
    expected = json.dumps({"id": "é", "tags": json.loads(stored), "cost_nanos": cost},
                          ensure_ascii=False, separators=(",", ":")) + "\n"
    assert jsonl_line({"id": "é", "tags": RawJson(stored), "cost_nanos": cost}).decode() == expected
