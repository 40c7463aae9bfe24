"""The common record of ``ledger import`` read straight into its SQLite row, without the event type.

``fast_row`` takes one JSON Lines record and returns the ``usage_events`` row (in ``COLUMNS``
order, as SQLite stores it: UTC times as naive text, booleans as 0/1) that the general path
(``import_rows.validated_record``, then ``rows.event_row`` and the driver's bind processing) would
store, and whether re-pricing changed it. It only takes records it can check on plain values: an
event with every field of its plain type, times in the export's own UTC form, no parts billed at
other rates, consistent amounts and a known model. For anything else it returns None and the
caller runs the general path, which then stores the record or refuses it with its reason: so
refusals and their messages are the general path's by construction.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson

from costwarden.core.kinds import CallStatus
from costwarden.core.pricing import ServiceTier, service_tier_of
from costwarden.ledger.export import FIELDS, usd_text
from costwarden.ledger.import_rows import ROUNDING_NANOS, Prices, stated_cost
from costwarden.ledger.schema import usage_events

COLUMNS = tuple(column.name for column in usage_events.c)
_FIELDS = list(FIELDS)
Row = tuple[Any, ...]

_STATUSES = frozenset(str(status) for status in CallStatus)
_TEXT_OR_NONE = (str, type(None))
_FLAG = (bool, type(None))
_TAGS: dict[tuple[tuple[str, str], ...], str] = {}  # tags as read -> stored text (few distinct sets)
_TAGS_KEPT = 4096


def fast_row(text: str | bytes, catalog: Prices) -> tuple[Row, bool] | None:
    """The stored row of an ordinary event record and whether re-pricing changed it, or None when
    the general path must decide (a rejection, another layout than ``export.FIELDS``, an unusual
    or a bad record)."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or list(obj) != _FIELDS:
        return None
    try:
        return _event_row(*obj.values(), catalog=catalog)
    except (ValueError, TypeError):  # a malformed time, an unhashable status: the general path says why
        return None


def _event_row(record: Any, ident: Any, admitted_at: Any, finished_at: Any, department: Any, team: Any, key_id: Any,
               user: Any, requested: Any, served: Any, provider: Any, endpoint: Any, input_tokens: Any, cached: Any,
               output: Any, cost_usd: Any, cost: Any, _estimate_usd: Any, estimate: Any, label: Any, decision: Any,
               status: Any, http_status: Any, latency: Any, overrun: Any, interrupted: Any, stream: Any, tags: Any,
               shadow: Any, _code: Any, _message: Any, model_sent: Any, write_5m: Any, write_1h: Any, reasoning: Any,
               audio: Any, tier: Any, tool_calls: Any, malformed: Any, customer: Any, trimmed: Any, *,
               catalog: Prices) -> tuple[Row, bool] | None:
    """``fast_row`` of a record's values in ``export.FIELDS`` order."""
    if record != "event" or write_5m or write_1h or reasoning or audio or tool_calls:
        return None  # parts billed at their own rates: the catalog's full charge, on the general path
    if not (type(ident) is str and type(department) is str and type(requested) is str and type(served) is str
            and type(provider) is str and type(endpoint) is str and isinstance(team, _TEXT_OR_NONE)
            and isinstance(key_id, _TEXT_OR_NONE) and isinstance(user, _TEXT_OR_NONE)):
        return None
    trimmed = trimmed or 0
    if not (type(input_tokens) is int and type(cached) is int and type(output) is int and type(latency) is int
            and type(overrun) is int and type(http_status) is int and type(cost) is int and type(estimate) is int
            and type(trimmed) is int):
        return None
    if min(input_tokens, cached, output, latency, overrun, cost, estimate, trimmed) < 0 or cached > input_tokens:
        return None
    tier, model_sent, customer = tier or "", model_sent or "", customer or ""
    status, decision, label = status or "ok", decision or "allow", label or ""
    if not (type(tier) is str and type(model_sent) is str and type(customer) is str and status in _STATUSES
            and type(decision) is str and type(label) is str and type(interrupted) is bool and type(stream) is bool
            and isinstance(malformed, _FLAG)) or (tier and service_tier_of(tier) is not ServiceTier.STANDARD):
        return None
    if cost_usd is not None and cost_usd != usd_text(cost):
        return None
    admitted = datetime.fromisoformat(admitted_at)
    finished = datetime.fromisoformat(finished_at)
    if admitted.isoformat() != admitted_at or finished.isoformat() != finished_at or finished < admitted:
        return None  # not the export's own UTC form, or inconsistent
    stored_tags, stored_shadow = _tags(tags), _shadow(shadow)
    if stored_tags is None or stored_shadow is None:
        return None
    spec = catalog.resolve_at(served, admitted)
    if spec is None:
        return None
    expected = spec.cost(input_tokens, output, cached)
    stated = stated_cost(label, input_tokens, cached, output) if label else None
    if abs(cost - (expected if stated is None else stated)) > ROUNDING_NANOS:
        return None
    changed = cost != expected or label != spec.price_version
    return (ident, _stored(admitted_at), _stored(finished_at), department, team, key_id, user, requested, served,
            provider, endpoint, stored_tags, input_tokens, cached, output, expected, estimate, spec.price_version,
            decision, status, http_status, latency, overrun, int(interrupted), stored_shadow, int(stream), model_sent,
            0, 0, 0, 0, tier, "{}", int(bool(malformed)), customer, trimmed), changed


def _stored(text: str) -> str:
    """A time in the export's form (``2026-11-01T10:00:00[.123456]+00:00``, checked) as SQLite stores it."""
    return f"{text[:10]} {text[11:26]}" if len(text) == 32 else f"{text[:10]} {text[11:19]}.000000"


def _tags(value: Any) -> str | None:
    """Tags as ``rows.dump_tags`` stores them, when they are text to text."""
    if not value:
        return "{}" if value is None or type(value) is dict else None
    if type(value) is not dict:
        return None
    key = tuple(value.items())
    stored = _TAGS.get(key)
    if stored is None:
        if not all(type(k) is str and type(v) is str for k, v in key):
            return None
        if len(_TAGS) >= _TAGS_KEPT:
            _TAGS.clear()
        stored = _TAGS[key] = _dump(value)
    return stored


def _shadow(value: Any) -> str | None:
    if not value:
        return "[]" if value is None or type(value) is list else None
    if type(value) is not list or not all(type(item) is str for item in value):
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


_dump: Callable[[dict[str, str]], str] = lambda tags: json.dumps(  # noqa: E731 - as rows.dump_tags
    tags, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


__all__ = ["COLUMNS", "fast_row"]
