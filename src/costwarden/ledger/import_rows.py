"""The records of a JSON Lines export checked and re-priced for ``ledger import``, one line at a time.

``validated_record`` is a pure function of one line: it reads the record, refuses it (raising
``ImportRowError`` with its line number) when an amount is negative, its parts disagree, or its
model is unknown, and re-prices an event at the catalog's prices in force when it was admitted
(``ModelSpec.at``). The stated cost must be the event's tokens at the prices it states (its price
label; without one, the catalog's) to within the nano-dollar of rounding, else it is refused; a
consistent event is then imported at the catalog's cost, exactly, whatever it stated.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from costwarden.core.catalog import Catalog, CatalogTimeline
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.money import Price, format_usd, usd_to_nanos
from costwarden.core.pricing import service_tier_of
from costwarden.ledger.export import parse_record

Prices = Catalog | CatalogTimeline  # one catalog for all time, or the policy versions' in turn
ROUNDING_NANOS = 1  # a call's cost is rounded up once to the nano-dollar
# Counts that are never negative, by their export field names.
COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens",
          "reasoning_tokens", "audio_input_tokens", "trimmed_tokens", "overrun_tokens", "latency_ms")


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """A record refused by ``ledger import``, with its line in the file."""

    line: int
    record_id: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.record_id or 'no id'}): {self.reason}"


class ImportRowError(ValueError):
    """One record cannot be imported."""

    def __init__(self, problem: ImportProblem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class ImportRefused(ValueError):
    """The file has records that cannot be imported; nothing was written."""

    def __init__(self, problems: list[ImportProblem]) -> None:
        self.problems = problems
        shown = "\n  ".join(map(str, problems[:50]))
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{len(problems)} record(s) refused, nothing imported:\n  {shown}{more}")


@dataclass(frozen=True, slots=True)
class Checked:
    """A record ready to import, and whether re-pricing changed its cost or price label."""

    record: UsageEvent | Rejection
    repriced: bool = False


def validated_record(text: str, line: int, catalog: Prices) -> Checked:
    """The record on ``line`` of an export, checked, an event re-priced at the catalog in force at
    its admission; raises ImportRowError saying why it is refused."""
    obj: Any = None
    try:
        obj = json.loads(text)
        record = parse_record(obj)
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as exc:
        ident = obj.get("id", "") if isinstance(obj, dict) else ""
        raise ImportRowError(ImportProblem(line, str(ident), f"unreadable: {exc}")) from exc
    if isinstance(record, Rejection):
        return Checked(record)
    try:
        priced = repriced(record, obj, catalog)
    except ValueError as exc:
        raise ImportRowError(ImportProblem(line, record.id, str(exc))) from None
    except (TypeError, AttributeError) as exc:  # a field of the wrong JSON type (a null model, a list of tags)
        raise ImportRowError(ImportProblem(line, str(record.id), f"unreadable: {exc}")) from None
    return Checked(priced, priced is not record)


def repriced(event: UsageEvent, obj: Mapping[str, Any], catalog: Prices) -> UsageEvent:
    """The event at the prices its served model had when it was admitted (the event itself when
    they give its own cost and label); raises ValueError saying why it cannot be imported."""
    _check_amounts(event, obj)
    spec = catalog.resolve_at(event.model_served, event.admitted_at)
    if spec is None:
        raise ValueError(f"unknown model {event.model_served!r}: not in the catalog in force")
    beyond = event.billed_beyond_totals  # cache writes, reasoning, tiers, tools: only the catalog prices them all
    if beyond:
        expected = spec.charge(event.by_type(), service_tier_of(event.service_tier), event.tool_calls).nanos
    else:
        expected = spec.cost(event.input_tokens, event.output_tokens, event.cached_input_tokens)
    stated = None if beyond or not event.price_version else stated_cost(
        event.price_version, event.input_tokens, event.cached_input_tokens, event.output_tokens)
    check = expected if stated is None else stated
    if abs(event.cost_nanos - check) > ROUNDING_NANOS:
        at = f"at its prices {event.price_version}" if stated is not None else f"at {spec.price_version}"
        raise ValueError(f"inconsistent: cost {format_usd(event.cost_nanos)} USD is not its tokens' price "
                         f"{format_usd(check)} USD {at}")
    if event.cost_nanos == expected and event.price_version == spec.price_version:
        return event
    return replace(event, cost_nanos=expected, price_version=spec.price_version)


def _check_amounts(event: UsageEvent, obj: Mapping[str, Any]) -> None:
    """Raise ValueError for a negative amount or parts that disagree with their totals."""
    amounts = [getattr(event, name) for name in COUNTS]
    if min(*amounts, event.cost_nanos, event.estimate_nanos, *event.tool_calls.values()) < 0:
        named = {**dict(zip(COUNTS, amounts, strict=True)), "cost": event.cost_nanos, "estimate": event.estimate_nanos,
                 **{f"tool_calls.{tool}": calls for tool, calls in event.tool_calls.items()}}
        raise ValueError(f"negative {', '.join(name for name, value in named.items() if value < 0)}")
    parts = event.cached_input_tokens + event.cache_write_5m_tokens + event.cache_write_1h_tokens \
        + event.audio_input_tokens
    if parts > event.input_tokens:
        raise ValueError(f"inconsistent: {event.cached_input_tokens} cached input tokens, "
                         f"{event.cache_write_5m_tokens + event.cache_write_1h_tokens} cache writes and "
                         f"{event.audio_input_tokens} audio tokens but only {event.input_tokens} input tokens")
    if event.reasoning_tokens > event.output_tokens:
        raise ValueError(f"inconsistent: {event.reasoning_tokens} reasoning tokens but only "
                         f"{event.output_tokens} output tokens")
    if event.finished_at < event.admitted_at:
        raise ValueError("inconsistent: finished_at is before admitted_at")
    if obj.get("cost_nanos") is not None and obj.get("cost_usd") is not None \
            and usd_to_nanos(str(obj["cost_usd"])) != int(obj["cost_nanos"]):
        raise ValueError(f"inconsistent: cost_usd {obj['cost_usd']} is not cost_nanos {obj['cost_nanos']}")


def stated_cost(label: str, input_tokens: int, cached_input_tokens: int, output_tokens: int) -> int | None:
    """Tokens at the prices a price label states, or None when the label is not prices."""
    picos = _label_picos(label)
    if picos is None:
        return None
    per_input, per_cached, per_output = picos
    total = ((input_tokens - cached_input_tokens) * per_input + cached_input_tokens * per_cached
             + output_tokens * per_output)
    return -((-total) // 1000)


@functools.lru_cache(maxsize=1024)
def _label_picos(label: str) -> tuple[int, int, int] | None:
    """Input, cached input and output prices (pico-dollars a token) of ``2.50/1.25/10.00@date``;
    read once per label, since an import holds few of them."""
    prices = label.split("@", 1)[0].split("/")
    if len(prices) != 3:
        return None
    try:
        input_price, output_price = Price(prices[0]), Price(prices[2])
        cached_price = input_price if prices[1] == "-" else Price(prices[1])
    except (ValueError, ArithmeticError):
        return None
    return input_price.picos_per_token, cached_price.picos_per_token, output_price.picos_per_token


__all__ = ["Checked", "ImportProblem", "ImportRefused", "ImportRowError", "repriced", "stated_cost",
           "validated_record"]
