"""Reading a price file in LiteLLM's ``model_prices_and_context_window.json`` format into a
catalog overlay (SPEC section 9), offline.

LiteLLM quotes USD per token as JSON numbers (``2.5e-06``); they are read as ``Decimal`` straight
from the text, so ``2.5e-06 * 1,000,000`` is exactly ``2.5`` and never a float. Only the
providers the catalog knows are imported (OpenAI, Anthropic, and Google's Gemini API; Vertex AI
prices differ and are left out), and only text and embedding models. A dated id whose prices equal
those of the id it dates is folded into that entry's ``snapshots``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from costwarden.core.model_ids import base_ids

PROVIDERS = {"openai": "openai", "text-completion-openai": "openai", "anthropic": "anthropic", "gemini": "google"}
KINDS = {"chat": "chat", "completion": "chat", "responses": "chat", "embedding": "embedding"}
PER_TOKEN = {  # LiteLLM's per-token price keys and the catalog's price fields
    "input_cost_per_token": "input",
    "cache_read_input_token_cost": "cached_input",
    "cache_creation_input_token_cost": "cache_write_5m",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "output_cost_per_token": "output",
    "input_cost_per_audio_token": "audio",
    "input_cost_per_image_token": "image",
}
TIER_SUFFIXES = {"_flex": "flex", "_priority": "priority", "_batches": "batch"}
LONG_CONTEXT = re.compile(r"^(?P<key>.+)_above_(?P<thousands>\d+)k_tokens$")
PRICE_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "audio", "image",
                "long_context", "service_tiers", "tool_calls")
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PriceMapError(ValueError):
    """The file is not a LiteLLM price map."""


@dataclass
class Imported:
    """Catalog entries read from a price map, and what was left out with the reason."""

    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def read_price_map(text: str) -> dict[str, Any]:
    """Parse the JSON text with every number that has a fraction or exponent read as Decimal."""
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise PriceMapError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise PriceMapError("a LiteLLM price map is a JSON object of model id to entry")
    return data


def per_million(value: object) -> str | None:
    """A per-token price as the catalog's plain-decimal USD per 1M tokens; None if not a price."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int) or value < 0:
        return None
    scaled = Decimal(value) * 1_000_000
    if scaled != scaled.quantize(Decimal("0.000001")):
        return None  # finer than the catalog's unit: left out rather than rounded
    return plain(scaled)


def plain(value: Decimal) -> str:
    """``Decimal('2.5000000')`` -> ``'2.5'``; never an exponent."""
    return format(value.normalize(), "f")


def import_price_map(data: Mapping[str, Any], *, as_of: str, source: str, default_tier: int,
                     known: frozenset[str] = frozenset()) -> Imported:
    """Catalog entries for the text and embedding models of the known providers in ``data``.

    A model the catalog already has (``known``) gets no tier, so the catalog's stays; a new one
    gets ``default_tier``. ``source`` is used where an entry does not name its own.
    """
    result = Imported()
    for key, raw in data.items():
        if key == "sample_spec" or not isinstance(raw, Mapping):
            continue
        reason = _entry(key, raw, as_of, source, default_tier, known, result)
        if reason:
            result.skipped[key] = reason
    _fold_snapshots(result.entries)
    return result


def _entry(key: str, raw: Mapping[str, Any], as_of: str, source: str, default_tier: int,
           known: frozenset[str], result: Imported) -> str | None:
    """Add one entry to ``result``; the reason it is left out otherwise."""
    provider = PROVIDERS.get(str(raw.get("litellm_provider")))
    if provider is None:
        return f"provider {raw.get('litellm_provider')!r} is not one the catalog imports"
    kind = KINDS.get(str(raw.get("mode", "chat")))
    if kind is None:
        return f"mode {raw.get('mode')!r} is not a text or embedding model"
    prefix, slash, rest = key.partition("/")
    model_id = rest if slash and prefix in (*PROVIDERS, "gemini") else key
    if "/" in model_id or not model_id:
        return "a routed or regional id, not a model id"
    entry: dict[str, Any] = {"provider": provider, "kind": kind}
    if model_id not in known:
        entry["tier"] = default_tier
    prices = _prices(raw, "")
    if "input" not in prices:
        given = "input_cost_per_token" in raw
        return "input price finer than the catalog's unit ($0.000001 per 1M)" if given else "no input price per token"
    if kind == "embedding":
        prices = {"input": prices["input"], "output": "0"}
    elif "output" not in prices:
        return "no output price per token"
    entry.update(prices)
    if kind == "chat":
        entry.update(_extras(raw))
    window = _whole(raw.get("max_input_tokens")) or _whole(raw.get("max_tokens"))
    if window:
        entry["context_window"] = window
    most = 0 if kind == "embedding" else _whole(raw.get("max_output_tokens"))
    if most is not None and (not window or most <= window):
        entry["max_output"] = most
    own_source = raw.get("source")
    entry["source"] = own_source if isinstance(own_source, str) and own_source.startswith("https://") else source
    entry["as_of"] = as_of
    result.entries[model_id] = entry
    return None


def _prices(raw: Mapping[str, Any], suffix: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, name in PER_TOKEN.items():
        price = per_million(raw.get(key + suffix))
        if price is not None:
            found[name] = price
    return found


def _extras(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Long-context prices, service tiers and per-call tool fees of a chat model."""
    extras: dict[str, Any] = {}
    long: dict[str, Any] = {}
    for key, value in raw.items():
        match = LONG_CONTEXT.match(key)
        name = PER_TOKEN.get(match["key"]) if match else None
        price = per_million(value)
        if match and name and price is not None:
            above = int(match["thousands"]) * 1000
            if long.setdefault("above", above) == above:  # one threshold per entry: the first seen
                long[name] = price
    if {"above", "input", "output"} <= long.keys():
        extras["long_context"] = long
    tiers = {tier: prices for suffix, tier in TIER_SUFFIXES.items() if (prices := _prices(raw, suffix))}
    if tiers:
        extras["service_tiers"] = tiers
    tools: dict[str, str] = {}
    search = raw.get("search_context_cost_per_query")
    if isinstance(search, Mapping):
        per_call = search.get("search_context_size_medium")
        if isinstance(per_call, Decimal | int) and not isinstance(per_call, bool) and per_call > 0:
            tools["web_search"] = plain(Decimal(per_call) * 1000)
    file_search = raw.get("file_search_cost_per_1k_calls")
    if isinstance(file_search, Decimal | int) and not isinstance(file_search, bool) and file_search > 0:
        tools["file_search"] = plain(Decimal(file_search))
    if tools:
        extras["tool_calls"] = tools
    return extras


def _whole(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _fold_snapshots(entries: dict[str, dict[str, Any]]) -> None:
    """Fold each dated id into the entry it dates when both have the same prices."""
    for model_id in sorted(entries):
        entry = entries[model_id]
        for base, rule in base_ids(model_id):
            target = entries.get(base)
            if target is None or target is entry or rule != entry["provider"]:
                continue
            if all(target.get(name) == entry.get(name) for name in (*PRICE_FIELDS, "kind", "provider")):
                target.setdefault("snapshots", []).append(model_id)
                del entries[model_id]
                break


def overlay_yaml(entries: Mapping[str, Mapping[str, Any]], header: str) -> str:
    """The entries as a catalog overlay file: a comment header and a ``models:`` mapping."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines.append("models:")
    for model_id in sorted(entries):
        lines.append(f"  {_scalar(model_id)}:")
        for name, value in entries[model_id].items():
            lines.append(f"    {name}: {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_scalar(str(k))}: {_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(str(item)) for item in value) + "]"
    if isinstance(value, int):
        return str(value)
    return _scalar(str(value))


def _scalar(text: str) -> str:
    """A YAML scalar: plain when it is safe, else a JSON string (valid YAML)."""
    if _PLAIN_ID.fullmatch(text) and text.lower() not in ("true", "false", "null", "yes", "no", "on", "off"):
        return text
    return json.dumps(text)


__all__ = ["Imported", "PriceMapError", "import_price_map", "overlay_yaml", "per_million", "read_price_map"]
