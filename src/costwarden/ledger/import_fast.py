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
from costwarden.ledger.export import BILLED_PARTS, usd_text
from costwarden.ledger.import_rows import ROUNDING_NANOS, Prices, stated_cost
from costwarden.ledger.schema import usage_events

COLUMNS = tuple(column.name for column in usage_events.c)
Row = tuple[Any, ...]

_STATUSES = frozenset(str(status) for status in CallStatus)
_TEXT_OR_NONE = (str, type(None))
_FLAG = (bool, type(None))
_TAGS: dict[tuple[tuple[str, str], ...], str] = {}  # tags as read -> stored text (few distinct sets)
_TAGS_KEPT = 4096


def fast_row(text: str | bytes, catalog: Prices) -> tuple[Row, bool] | None:
    """The stored row of an ordinary event record and whether re-pricing changed it, or None when
    the general path must decide (a rejection, an unusual or a bad record)."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("record", "event") != "event":
        return None
    try:
        return _event_row(obj, catalog)
    except (KeyError, ValueError, TypeError):  # a missing field, a malformed time: the general path says why
        return None


def _event_row(obj: dict[str, Any], catalog: Prices) -> tuple[Row, bool] | None:
    get = obj.get
    ident, department = obj["id"], obj["department"]
    requested, served, provider, endpoint = obj["model_requested"], obj["model_served"], obj["provider"], obj["endpoint"]
    team, key_id, user = get("team"), get("key_id"), get("user")
    if not (type(ident) is str and type(department) is str and type(requested) is str and type(served) is str
            and type(provider) is str and type(endpoint) is str and isinstance(team, _TEXT_OR_NONE)
            and isinstance(key_id, _TEXT_OR_NONE) and isinstance(user, _TEXT_OR_NONE)):
        return None
    admitted_text, admitted = _utc(obj["admitted_at"])
    finished_text, _ = _utc(obj["finished_at"])
    if finished_text < admitted_text:  # same fixed form: text order is time order
        return None
    input_tokens, cached, output = get("input_tokens", 0), get("cached_input_tokens", 0), get("output_tokens", 0)
    latency, overrun, http_status = get("latency_ms", 0), get("overrun_tokens", 0), get("http_status", 200)
    cost, estimate, trimmed = get("cost_nanos"), get("estimate_nanos"), get("trimmed_tokens") or 0
    if not (type(input_tokens) is int and type(cached) is int and type(output) is int and type(latency) is int
            and type(overrun) is int and type(http_status) is int and type(cost) is int and type(estimate) is int
            and type(trimmed) is int):
        return None
    if min(input_tokens, cached, output, latency, overrun, cost, estimate, trimmed) < 0 or cached > input_tokens:
        return None
    if any(get(name) for name in BILLED_PARTS) or get("tool_calls"):
        return None  # parts billed at their own rates: the catalog's full charge, on the general path
    tier, model_sent, customer = get("service_tier") or "", get("model_sent") or "", get("customer") or ""
    status, decision, label = get("status") or "ok", get("decision") or "allow", get("price_version") or ""
    if not (type(tier) is str and type(model_sent) is str and type(customer) is str and status in _STATUSES
            and type(decision) is str and type(label) is str) or service_tier_of(tier) is not ServiceTier.STANDARD:
        return None
    usd = get("cost_usd")
    if usd is not None and usd != usd_text(cost):
        return None
    interrupted, stream, malformed = get("interrupted", False), get("stream", False), get("usage_malformed")
    if not (type(interrupted) is bool and type(stream) is bool and isinstance(malformed, _FLAG)):
        return None
    tags, shadow = _tags(get("tags")), _shadow(get("shadow"))
    if tags is None or shadow is None:
        return None
    spec = catalog.resolve_at(served, admitted)
    if spec is None:
        return None
    expected = spec.cost(input_tokens, output, cached)
    stated = stated_cost(label, input_tokens, cached, output) if label else None
    if abs(cost - (expected if stated is None else stated)) > ROUNDING_NANOS:
        return None
    changed = cost != expected or label != spec.price_version
    return (ident, admitted_text, finished_text, department, team, key_id, user, requested, served, provider, endpoint,
            tags, input_tokens, cached, output, expected, estimate, spec.price_version, decision, status, http_status,
            latency, overrun, int(interrupted), shadow, int(stream), model_sent, 0, 0, 0, 0, tier, "{}",
            int(bool(malformed)), customer, trimmed), changed


def _utc(text: Any) -> tuple[str, datetime]:
    """A time as the export writes it (``2026-11-01T10:00:00[.123456]+00:00``) as SQLite stores it,
    and as a datetime; raises ValueError for anything else."""
    if type(text) is not str or len(text) not in (25, 32) or text[-6:] != "+00:00" or text[10] != "T" \
            or text[4] != "-" or text[7] != "-" or text[13] != ":" or text[16] != ":" \
            or (len(text) == 32 and text[19] != "."):
        raise ValueError("not the export's UTC form")
    when = datetime.fromisoformat(text)  # checks the digits make a real time
    return f"{text[:10]} {text[11:19]}{text[19:26] if len(text) == 32 else '.000000'}", when


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
