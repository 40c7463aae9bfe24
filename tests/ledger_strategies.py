"""Hypothesis strategies of the ledger's hot-path rows' sources: usage events, write-ahead calls
and rejections, with any text PostgreSQL stores (no NUL), times of any offset with microseconds,
tags, and absent team, key and user."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.kinds import CallStatus

# Any character but NUL (PostgreSQL text refuses it) and lone surrogates (no UTF-8 for them).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
maybe_texts = st.none() | texts
tokens = st.integers(0, 2**52)  # BIGINT, and rollups adding up thousands of them stay within one
zones = st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=45)),
                         timezone(timedelta(hours=-23, minutes=-59))])
times = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones)
tags = st.dictionaries(texts, texts, max_size=3)
ids = st.builds(lambda: f"req_{uuid.uuid4().hex}")  # fresh per example: rows from earlier ones stay


events = st.builds(
    UsageEvent, id=ids, admitted_at=times, finished_at=times, department=texts, model_requested=texts,
    model_served=texts, provider=texts, endpoint=texts, team=maybe_texts, key_id=maybe_texts, user=maybe_texts,
    tags=tags, input_tokens=tokens, cached_input_tokens=tokens, output_tokens=tokens, cost_nanos=tokens,
    estimate_nanos=tokens, price_version=texts, decision=texts, status=st.sampled_from(CallStatus),
    http_status=st.integers(0, 599), latency_ms=tokens, overrun_tokens=tokens, interrupted=st.booleans(),
    shadow=st.lists(texts, max_size=2).map(tuple), stream=st.booleans(), model_sent=texts,
    cache_write_5m_tokens=tokens, cache_write_1h_tokens=tokens, reasoning_tokens=tokens,
    audio_input_tokens=tokens, service_tier=texts, tool_calls=st.dictionaries(texts, st.integers(0, 2**31), max_size=2),
    usage_malformed=st.booleans(), customer=texts, trimmed_tokens=tokens)

calls = st.builds(
    InflightCall, id=ids, admitted_at=times, department=texts, model_requested=texts, model_served=texts,
    provider=texts, endpoint=texts, estimate_input_tokens=tokens, estimate_output_tokens=tokens,
    estimate_nanos=tokens, price_version=texts, team=maybe_texts, key_id=maybe_texts, user=maybe_texts,
    tags=tags, decision=texts, stream=st.booleans(), replica=texts, model_sent=texts, customer=texts)

rejections = st.builds(
    Rejection, id=ids, at=times, department=maybe_texts, model_requested=maybe_texts, code=texts, message=texts,
    http_status=st.integers(0, 599), endpoint=texts, team=maybe_texts, key_id=maybe_texts, user=maybe_texts,
    tags=tags, shadow=st.lists(texts, max_size=2).map(tuple))
