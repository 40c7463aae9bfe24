"""Conversions between the core's event types and table rows.

Rows are built in the caller's thread, so a malformed value (a naive datetime) fails the one call
that carries it rather than the writer's whole batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from costwarden.core.events import INTERRUPTED, InflightCall, Rejection, UsageEvent


def utc(value: datetime) -> datetime:
    """``value`` in UTC; refuses naive datetimes, whose instant is unknown."""
    if value.tzinfo is UTC:
        return value  # the usual case, and what astimezone(UTC) would return
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass an aware datetime (UTC)")
    return value.astimezone(UTC)


def dump_tags(tags: Mapping[str, str]) -> str:
    if not tags:
        return "{}"  # most calls carry no tags: skip the encoder on the hot path
    return json.dumps(dict(tags), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load_tags(text: str) -> dict[str, str]:
    loaded = json.loads(text) if text else {}
    return {str(k): str(v) for k, v in loaded.items()}


def dump_shadow(shadow: tuple[str, ...]) -> str:
    if not shadow:
        return "[]"
    return json.dumps(list(shadow), separators=(",", ":"), ensure_ascii=False)


def load_shadow(text: str) -> tuple[str, ...]:
    return tuple(str(item) for item in json.loads(text)) if text else ()


def event_row(event: UsageEvent) -> dict[str, Any]:
    """The usage_events row of an event."""
    return {
        "id": event.id,
        "admitted_at": utc(event.admitted_at),
        "finished_at": utc(event.finished_at),
        "department": event.department,
        "team": event.team,
        "key_id": event.key_id,
        "user": event.user,
        "model_requested": event.model_requested,
        "model_served": event.model_served,
        "provider": event.provider,
        "endpoint": event.endpoint,
        "tags": dump_tags(event.tags),
        "input_tokens": event.input_tokens,
        "cached_input_tokens": event.cached_input_tokens,
        "output_tokens": event.output_tokens,
        "cost_nanos": event.cost_nanos,
        "estimate_nanos": event.estimate_nanos,
        "price_version": event.price_version,
        "decision": str(event.decision),
        "status": str(event.status),  # a plain str: the writer process takes builtin types only
        "http_status": event.http_status,
        "latency_ms": event.latency_ms,
        "overrun_tokens": event.overrun_tokens,
        "interrupted": event.interrupted,
        "shadow": dump_shadow(event.shadow),
        "stream": event.stream,
        "model_sent": event.model_sent,
        "cache_write_5m_tokens": event.cache_write_5m_tokens,
        "cache_write_1h_tokens": event.cache_write_1h_tokens,
        "reasoning_tokens": event.reasoning_tokens,
        "audio_input_tokens": event.audio_input_tokens,
        "service_tier": event.service_tier,
        "tool_calls": dump_counts(event.tool_calls),
        "usage_malformed": event.usage_malformed,
        "customer": event.customer,
        "trimmed_tokens": event.trimmed_tokens,
    }


def dump_counts(counts: Mapping[str, int]) -> str:
    return json.dumps(dict(counts), sort_keys=True, separators=(",", ":")) if counts else "{}"


def load_counts(text: str | None) -> dict[str, int]:
    loaded = json.loads(text) if text else {}
    return {str(k): int(v) for k, v in loaded.items()}


def event_from_row(row: Mapping[Any, Any]) -> UsageEvent:
    """The event a usage_events row holds."""
    return UsageEvent(
        id=row["id"],
        admitted_at=row["admitted_at"],
        finished_at=row["finished_at"],
        department=row["department"],
        team=row["team"],
        key_id=row["key_id"],
        user=row["user"],
        model_requested=row["model_requested"],
        model_served=row["model_served"],
        provider=row["provider"],
        endpoint=row["endpoint"],
        tags=load_tags(row["tags"]),
        input_tokens=int(row["input_tokens"]),
        cached_input_tokens=int(row["cached_input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cost_nanos=int(row["cost_nanos"]),
        estimate_nanos=int(row["estimate_nanos"]),
        price_version=row["price_version"],
        decision=row["decision"],
        status=row["status"],
        http_status=int(row["http_status"]),
        latency_ms=int(row["latency_ms"]),
        overrun_tokens=int(row["overrun_tokens"]),
        interrupted=bool(row["interrupted"]),
        shadow=load_shadow(row["shadow"]),
        stream=bool(row["stream"]),
        model_sent=row.get("model_sent") or "",
        cache_write_5m_tokens=int(row.get("cache_write_5m_tokens") or 0),
        cache_write_1h_tokens=int(row.get("cache_write_1h_tokens") or 0),
        reasoning_tokens=int(row.get("reasoning_tokens") or 0),
        audio_input_tokens=int(row.get("audio_input_tokens") or 0),
        service_tier=row.get("service_tier") or "",
        tool_calls=load_counts(row.get("tool_calls")),
        usage_malformed=bool(row.get("usage_malformed") or False),
        customer=row.get("customer") or "",
        trimmed_tokens=int(row.get("trimmed_tokens") or 0),
    )


def rejection_row(rejection: Rejection) -> dict[str, Any]:
    """The rejections row of a refused call."""
    return {
        "id": rejection.id,
        "at": utc(rejection.at),
        "department": rejection.department,
        "team": rejection.team,
        "key_id": rejection.key_id,
        "user": rejection.user,
        "model_requested": rejection.model_requested,
        "endpoint": rejection.endpoint,
        "code": rejection.code,
        "message": rejection.message,
        "http_status": rejection.http_status,
        "tags": dump_tags(rejection.tags),
        "shadow": dump_shadow(rejection.shadow),
    }


def rejection_from_row(row: Mapping[Any, Any]) -> Rejection:
    """The refused call a rejections row holds."""
    return Rejection(
        id=row["id"],
        at=row["at"],
        department=row["department"],
        model_requested=row["model_requested"],
        code=row["code"],
        message=row["message"],
        http_status=int(row["http_status"]),
        endpoint=row["endpoint"],
        team=row["team"],
        key_id=row["key_id"],
        user=row["user"],
        tags=load_tags(row["tags"]),
        shadow=load_shadow(row["shadow"]),
    )


def inflight_row(call: InflightCall) -> dict[str, Any]:
    """The write-ahead row of a call about to be forwarded."""
    return {
        "id": call.id,
        "admitted_at": utc(call.admitted_at),
        "department": call.department,
        "team": call.team,
        "key_id": call.key_id,
        "user": call.user,
        "model_requested": call.model_requested,
        "model_served": call.model_served,
        "provider": call.provider,
        "endpoint": call.endpoint,
        "tags": dump_tags(call.tags),
        "estimate_input_tokens": call.estimate_input_tokens,
        "estimate_output_tokens": call.estimate_output_tokens,
        "estimate_nanos": call.estimate_nanos,
        "price_version": call.price_version,
        "decision": call.decision,
        "stream": call.stream,
        "replica": call.replica,
        "model_sent": call.model_sent,
        "customer": call.customer,
    }


def interrupted_event(row: Mapping[Any, Any], now: datetime) -> UsageEvent:
    """The event of a call that was in flight during a crash: settled at its estimate.

    ``http_status`` is 0 because no response status reached the client.
    """
    admitted_at: datetime = row["admitted_at"]
    latency = max(now - admitted_at, timedelta(0))
    return UsageEvent(
        id=row["id"],
        admitted_at=admitted_at,
        finished_at=now,
        department=row["department"],
        model_requested=row["model_requested"],
        model_served=row["model_served"],
        provider=row["provider"],
        endpoint=row["endpoint"],
        team=row["team"],
        key_id=row["key_id"],
        user=row["user"],
        tags=load_tags(row["tags"]),
        input_tokens=int(row["estimate_input_tokens"]),
        output_tokens=int(row["estimate_output_tokens"]),
        cost_nanos=int(row["estimate_nanos"]),
        estimate_nanos=int(row["estimate_nanos"]),
        price_version=row["price_version"],
        decision=row["decision"],
        status=INTERRUPTED,
        http_status=0,
        latency_ms=latency // timedelta(milliseconds=1),
        interrupted=True,
        stream=bool(row["stream"]),
        model_sent=row.get("model_sent") or "",
        customer=row.get("customer") or "",
    )
