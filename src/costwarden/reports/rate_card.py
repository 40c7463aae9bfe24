"""A customer's calls at its plan's rate card, and what its plan's efficiency features saved.

Pricing is linear in token counts, so a customer's calls are summed first per (model, service
tier, long context) and priced once per group: exact, and cheap for a month of calls.

- At the rate card: for a model the card prices, each token type times the card's price of that
  type (unset cache prices are the card's input price) and server-side tool fees at provider
  prices times (1 + markup_pct / 100); for any other model, the provider cost times the same.
- Saved, at provider prices: cache reads x (input - cache read price), minus the premium paid for
  cache writes (write price - input price), plus trimmed tokens x input price.
- Invoice: the plan's included amount first, then the rest billable, rounded once, half up, to
  the cent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, localcontext

from costwarden.core.catalog import Catalog
from costwarden.core.events import UsageEvent
from costwarden.core.policy import Plan
from costwarden.core.pricing import ServiceTier, TokenType, service_tier_of

CENT = Decimal("0.01")
GroupKey = tuple[str, ServiceTier, bool]  # model served, service tier, long context


@dataclass(slots=True)
class Usage:
    """The summed usage of a customer's calls of one group."""

    tokens: Counter[TokenType] = field(default_factory=Counter)
    trimmed_tokens: int = 0
    cost_nanos: int = 0
    tool_calls: Counter[str] = field(default_factory=Counter)


def group_of(event: UsageEvent, catalog: Catalog) -> GroupKey:
    """The group of a call: its model, tier, and whether its prompt (all its input tokens, and the
    trimmed ones the same call without trimming would have sent) is priced at long-context rates."""
    spec = catalog.get(event.model_served)
    long = spec is not None and spec.pricing.is_long(event.input_tokens + event.trimmed_tokens)
    return event.model_served, service_tier_of(event.service_tier), long


@dataclass(frozen=True, slots=True)
class Priced:
    """Usage at the rate card (card-priced pico-dollars plus nano-dollars to mark up) and savings."""

    card_picos: int = 0
    markup_nanos: int = 0
    saved_picos: int = 0

    def __add__(self, other: Priced) -> Priced:
        return Priced(self.card_picos + other.card_picos, self.markup_nanos + other.markup_nanos,
                      self.saved_picos + other.saved_picos)

    def at_rate_card(self, markup_pct: Decimal) -> Decimal:
        """The exact USD value at the rate card."""
        with localcontext() as ctx:
            ctx.prec = 60  # wide enough that no product or quotient here is ever rounded
            marked = Decimal(self.markup_nanos) * (100 + markup_pct) / 100
            return Decimal(self.card_picos).scaleb(-12) + marked.scaleb(-9)


def price(groups: Mapping[GroupKey, Usage], plan: Plan | None, catalog: Catalog) -> Priced:
    """A customer's groups at ``plan``'s rate card (at cost without a plan), and their savings."""
    total = Priced()
    for (model, tier, long), usage in groups.items():
        card = plan.rate_card.models.get(model) if plan is not None else None
        spec = catalog.get(model)
        if card is None:
            rated = Priced(markup_nanos=usage.cost_nanos)
        else:
            rates = card.rates()
            tools = spec.charge({}, tier, usage.tool_calls).nanos if spec is not None and usage.tool_calls else 0
            rated = Priced(card_picos=sum(n * rates[kind] for kind, n in usage.tokens.items()), markup_nanos=tools)
        saved = _saved(usage, spec.pricing.rates(tier, long)) if spec is not None else 0
        total = total + rated + Priced(saved_picos=saved)
    return total


def _saved(usage: Usage, rates: Mapping[TokenType, int]) -> int:
    tokens, per_input = usage.tokens, rates[TokenType.INPUT]
    return (tokens[TokenType.CACHED_INPUT] * (per_input - rates[TokenType.CACHED_INPUT])
            - tokens[TokenType.CACHE_WRITE_5M] * (rates[TokenType.CACHE_WRITE_5M] - per_input)
            - tokens[TokenType.CACHE_WRITE_1H] * (rates[TokenType.CACHE_WRITE_1H] - per_input)
            + usage.trimmed_tokens * per_input)


@dataclass(frozen=True, slots=True)
class Invoice:
    """A customer's bill for a period: exact usage at the rate card, the included part, the rest."""

    usage: Decimal  # USD, exact
    included: Decimal  # USD, the part of the plan's included amount used
    billable: Decimal  # USD, exact
    total: Decimal  # USD, billable rounded half up to the cent

    def __add__(self, other: Invoice) -> Invoice:
        return Invoice(self.usage + other.usage, self.included + other.included, self.billable + other.billable,
                       self.total + other.total)


def invoice(usage: Decimal, included_nanos: int) -> Invoice:
    """Apply the included amount first, then bill the rest, rounded once to the cent."""
    included = min(usage, Decimal(included_nanos).scaleb(-9))
    billable = usage - included
    return Invoice(usage, included, billable, billable.quantize(CENT, rounding=ROUND_HALF_UP))


__all__ = ["GroupKey", "Invoice", "Priced", "Usage", "group_of", "invoice", "price"]
