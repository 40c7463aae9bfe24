"""``report efficiency``: what caching and downgrades saved, and what calls cost, per department,
and within it per tier, per model served and per business customer.

- Saved by caching: cached input tokens x (input price - cached input price), at the prices the
  calls were charged at (the event's price label; the catalog's when the label cannot be read).
- Saved by downgrades: for calls served by another model than the one requested, the requested
  model's catalog prices minus the served model's charged prices, for the same tokens of each type.
- Tokens trimmed: the input that a customer plan's ``thin_context`` removed before forwarding.
- Cost per call and per 1M tokens (input, cached included, plus output) per model and tier.
- A customer's row holds its calls of that department (the customers report adds its invoice).

Savings are exact products (pico-dollars per token x tokens), shown as exact decimal USD.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from costwarden.core.catalog import Catalog
from costwarden.core.money import Price, format_usd
from costwarden.ledger import Ledger, TotalsRow
from costwarden.reports.focus import parse_price_version
from costwarden.reports.tabular import Report

GROUPS = ("department", "model_requested", "model_served", "price_version", "customer")
NANO = Decimal("0.000000001")
COLUMNS = ("level", "department", "model", "tier", "calls", "input_tokens", "cached_input_tokens", "output_tokens",
           "cost_usd", "saved_by_caching_usd", "saved_by_downgrades_usd", "tokens_trimmed", "cost_per_call_usd",
           "cost_per_1m_tokens_usd", "customer")


@dataclass(slots=True)
class Tally:
    """Sums of one department, or of one tier, model or customer of one department."""

    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    caching_picos: int = 0
    downgrade_picos: int = 0
    trimmed_tokens: int = 0
    tier: int | None = None
    models: dict[str, Tally] = field(default_factory=dict)
    tiers: dict[int, Tally] = field(default_factory=dict)
    customers: dict[str, Tally] = field(default_factory=dict)

    def add(self, row: TotalsRow, caching: int, downgrade: int) -> None:
        self.calls += row.requests
        self.input_tokens += row.input_tokens
        self.cached_input_tokens += row.cached_input_tokens
        self.output_tokens += row.output_tokens
        self.cost_nanos += row.cost_nanos
        self.trimmed_tokens += row.trimmed_tokens
        self.caching_picos += caching
        self.downgrade_picos += downgrade


def prices_of(price_version: str, model: str, catalog: Catalog) -> tuple[Price, Price, Price] | None:
    """Input, cached input and output prices a group was charged at."""
    prices = parse_price_version(price_version)
    if prices is not None:
        return prices
    spec = catalog.get(model)
    if spec is None:
        return None
    return spec.input, spec.cached_input or spec.input, spec.output


def caching_saved_picos(cached_tokens: int, prices: tuple[Price, Price, Price]) -> int:
    """cached tokens x (input price - cached price), in pico-dollars."""
    return cached_tokens * (prices[0].picos_per_token - prices[1].picos_per_token)


def downgrade_saved_picos(row: TotalsRow, served: tuple[Price, Price, Price],
                          requested: tuple[Price, Price, Price]) -> int:
    """The same tokens at the requested model's prices minus at the served model's, in pico-dollars."""
    uncached = row.input_tokens - row.cached_input_tokens
    counts = (uncached, row.cached_input_tokens, row.output_tokens)
    return sum(n * (r.picos_per_token - s.picos_per_token) for n, r, s in zip(counts, requested, served, strict=True))


def tally(rows: list[TotalsRow], catalog: Catalog) -> dict[str, Tally]:
    """Per department, its sums and savings, and the same per tier, model served and customer."""
    departments: dict[str, Tally] = defaultdict(Tally)
    for row in rows:
        department, served = str(row.groups["department"]), str(row.groups["model_served"])
        requested = str(row.groups["model_requested"])
        prices = prices_of(str(row.groups["price_version"] or ""), served, catalog)
        caching = 0 if prices is None else caching_saved_picos(row.cached_input_tokens, prices)
        downgrade = 0
        wanted, served_spec = catalog.resolve(requested), catalog.resolve(served)
        served_id = served if served_spec is None else served_spec.id  # a snapshot id is its model
        if prices is not None and wanted is not None and wanted.id != served_id:
            downgrade = downgrade_saved_picos(row, prices, (wanted.input, wanted.cached_input or wanted.input,
                                                            wanted.output))
        line = departments[department]
        line.add(row, caching, downgrade)
        model = line.models.setdefault(served, Tally())
        spec = catalog.get(served)
        model.tier = spec.tier if spec is not None else None
        parts = [model]
        if model.tier is not None:
            parts.append(line.tiers.setdefault(model.tier, Tally(tier=model.tier)))
        if row.groups["customer"]:
            parts.append(line.customers.setdefault(str(row.groups["customer"]), Tally()))
        for part in parts:
            part.add(row, caching, downgrade)
    return dict(departments)


async def efficiency(ledger: Ledger, catalog: Catalog, start: datetime, end: datetime,
                     department: str | None = None) -> dict[str, Tally]:
    """The efficiency tallies of the period [start, end)."""
    where = None if department is None else {"department": department}
    return tally(await ledger.totals(start, end, group_by=GROUPS, where=where), catalog)


def efficiency_report(tallies: dict[str, Tally], period: str) -> Report:
    """One ``department`` row per department followed by one ``tier`` row per tier, one ``model``
    row per model and one ``customer`` row per business customer of its calls."""
    rows = []
    for department in sorted(tallies):
        line = tallies[department]
        rows.append(_row("department", department, None, line))
        rows += [_row("tier", department, None, line.tiers[tier]) for tier in sorted(line.tiers)]
        rows += [_row("model", department, model, line.models[model]) for model in sorted(line.models)]
        rows += [_row("customer", department, None, line.customers[customer], customer)
                 for customer in sorted(line.customers)]
    notes = (f"Period {period}. Savings are exact: cached tokens x (input - cached price), and the requested "
             "model's prices minus the served model's for the same tokens. tokens_trimmed: input a plan's "
             "thin_context removed before forwarding.",)
    return Report("Efficiency", COLUMNS, rows, notes, {"period": period})


def _row(level: str, department: str, model: str | None, t: Tally,
         customer: str | None = None) -> dict[str, str | int | None]:
    tokens = t.input_tokens + t.output_tokens
    return {
        "level": level, "department": department, "model": model, "tier": t.tier, "customer": customer,
        "calls": t.calls, "input_tokens": t.input_tokens, "cached_input_tokens": t.cached_input_tokens,
        "output_tokens": t.output_tokens, "cost_usd": format_usd(t.cost_nanos),
        "saved_by_caching_usd": _picos(t.caching_picos), "saved_by_downgrades_usd": _picos(t.downgrade_picos),
        "tokens_trimmed": t.trimmed_tokens,
        "cost_per_call_usd": _ratio(t.cost_nanos, t.calls),
        "cost_per_1m_tokens_usd": _ratio(t.cost_nanos * 1_000_000, tokens),
    }


def _picos(picos: int) -> str:
    text = format(Decimal(picos).scaleb(-12), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _ratio(nanos: int, count: int) -> str | None:
    """An average in USD, rounded half-even to the nano-dollar; None when there is nothing to divide by."""
    if count == 0:
        return None
    return format_usd(int((Decimal(nanos) / count).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)))


__all__ = ["Tally", "caching_saved_picos", "downgrade_saved_picos", "efficiency", "efficiency_report", "tally"]
