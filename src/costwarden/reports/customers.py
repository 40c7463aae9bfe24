"""``report customers``: each business customer's usage, its invoice at its plan's rate card, and
what its plan's efficiency features saved (SPEC §12).

Method, stated in the report's notes:
- Cost is what the calls were charged to the department, at provider prices (the ledger's cost).
- Usage at the rate card: for a model the card prices, every token of each type times the card's
  price of that type (unset cache prices are the card's input price); for any other model, and
  for server-side tool fees, the provider cost times (1 + markup_pct / 100). Exact: summed in
  pico-dollars and nano-dollars, never rounded until the invoice.
- Invoice: the plan's included amount is applied first, then the rest is billable; the billable
  amount is rounded once, half up, to the cent.
- Saved: the same calls without the efficiency features, at provider prices: cache reads x (input
  price - cache read price), minus the premium paid for cache writes (write price - input price),
  plus tokens trimmed x input price.
- Latency: nearest-rank p50 and p95 of the calls that ended ``ok``, per customer and per plan.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext

from costwarden.core.catalog import Catalog
from costwarden.core.events import UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.core.money import format_usd
from costwarden.core.policy import Plan, Policy
from costwarden.core.pricing import PROMPT_TYPES, TokenType, service_tier_of
from costwarden.ledger import Ledger
from costwarden.reports.tabular import Report

CENT = Decimal("0.01")
COLUMNS = ("level", "customer", "name", "plan", "department", "requests", "input_tokens", "cache_read_tokens",
           "cache_write_tokens", "output_tokens", "trimmed_tokens", "cost_usd", "rate_card", "usage_at_rate_card_usd",
           "included_usd", "billable_usd", "invoice_usd", "saved_usd", "latency_p50_ms", "latency_p95_ms")
NOT_IN_POLICY = "(not in policy)"


@dataclass(frozen=True, slots=True)
class Rated:
    """One call at the rate card: card-priced tokens (pico-dollars) and cost to mark up (nano-dollars)."""

    card_picos: int = 0
    markup_nanos: int = 0


def rate(event: UsageEvent, plan: Plan | None, catalog: Catalog) -> Rated:
    """What one call of a customer on ``plan`` comes to at the plan's rate card (at cost without a plan)."""
    prices = plan.rate_card.models.get(event.model_served) if plan is not None else None
    if prices is None:
        return Rated(markup_nanos=event.cost_nanos)
    rates = prices.rates()
    picos = sum(count * rates[kind] for kind, count in event.by_type().items())
    spec = catalog.get(event.model_served)
    tools = spec.charge({}, service_tier_of(event.service_tier), event.tool_calls).nanos if spec is not None else 0
    return Rated(card_picos=picos, markup_nanos=tools)


def saved_picos(event: UsageEvent, catalog: Catalog) -> int:
    """What the call would have cost more without caching and trimming, at provider prices."""
    spec = catalog.get(event.model_served)
    if spec is None:
        return 0
    counts = event.by_type()
    prompt = sum(counts.get(kind, 0) for kind in PROMPT_TYPES) + event.trimmed_tokens
    rates = spec.pricing.rates(service_tier_of(event.service_tier), spec.pricing.is_long(prompt))
    per_input = rates[TokenType.INPUT]
    return (counts.get(TokenType.CACHED_INPUT, 0) * (per_input - rates[TokenType.CACHED_INPUT])
            - counts.get(TokenType.CACHE_WRITE_5M, 0) * (rates[TokenType.CACHE_WRITE_5M] - per_input)
            - counts.get(TokenType.CACHE_WRITE_1H, 0) * (rates[TokenType.CACHE_WRITE_1H] - per_input)
            + event.trimmed_tokens * per_input)


@dataclass(slots=True)
class Tally:
    """The sums of one customer (or of one plan's customers) over a period."""

    requests: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    trimmed_tokens: int = 0
    cost_nanos: int = 0
    card_picos: int = 0
    markup_nanos: int = 0
    saved_picos: int = 0
    # calls per latency in whole milliseconds: exact percentiles in memory bounded by the distinct values
    latencies: Counter[int] = field(default_factory=Counter)

    def add(self, event: UsageEvent, rated: Rated, saved: int) -> None:
        self.requests += 1
        self.input_tokens += event.input_tokens
        self.cache_read_tokens += event.cached_input_tokens
        self.cache_write_tokens += event.cache_write_5m_tokens + event.cache_write_1h_tokens
        self.output_tokens += event.output_tokens
        self.trimmed_tokens += event.trimmed_tokens
        self.cost_nanos += event.cost_nanos
        self.card_picos += rated.card_picos
        self.markup_nanos += rated.markup_nanos
        self.saved_picos += saved
        if event.status == CallStatus.OK:
            self.latencies[event.latency_ms] += 1

    def merge(self, other: Tally) -> None:
        for name in ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                     "trimmed_tokens", "cost_nanos", "card_picos", "markup_nanos", "saved_picos"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies.update(other.latencies)


@dataclass(frozen=True, slots=True)
class Invoice:
    """A customer's bill for a period: exact usage at the rate card, the included part, the rest."""

    usage: Decimal  # USD, exact
    included: Decimal  # USD, the part of the plan's included amount used
    billable: Decimal  # USD, exact
    total: Decimal  # USD, billable rounded half up to the cent


def usage_at_rate_card(tally: Tally, markup_pct: Decimal) -> Decimal:
    """The exact USD value of a customer's calls at its rate card."""
    with localcontext() as ctx:
        ctx.prec = 60  # wide enough that no product or quotient here is ever rounded
        marked = Decimal(tally.markup_nanos) * (100 + markup_pct) / 100
        return Decimal(tally.card_picos).scaleb(-12) + marked.scaleb(-9)


def invoice(usage: Decimal, included_nanos: int) -> Invoice:
    """Apply the included amount first, then bill the rest, rounded once to the cent."""
    included = min(usage, Decimal(included_nanos).scaleb(-9))
    billable = usage - included
    return Invoice(usage, included, billable, billable.quantize(CENT, rounding=ROUND_HALF_UP))


def percentile(counts: Mapping[int, int], fraction: Decimal) -> int | None:
    """The nearest-rank percentile of values given with their counts: the least value with at least
    ``fraction`` of all values at or below it."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(int((fraction * total).to_integral_value(rounding=ROUND_CEILING)), 1)
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: the ranks add up to the total")


@dataclass(frozen=True, slots=True)
class CustomerLine:
    """One customer's row: who it is, its sums and its invoice."""

    id: str
    name: str
    plan: Plan | None
    department: str
    tally: Tally
    invoice: Invoice


def tally_events(events: Iterable[UsageEvent], policy: Policy) -> dict[str, Tally]:
    """Per customer id, the sums of its events (events of no customer are skipped)."""
    tallies: dict[str, Tally] = {}
    for event in events:
        _count(tallies, event, policy)
    return tallies


def _count(tallies: dict[str, Tally], event: UsageEvent, policy: Policy) -> None:
    if event.customer:
        plan = policy.plan_of(event.customer)
        tallies.setdefault(event.customer, Tally()).add(event, rate(event, plan, policy.catalog),
                                                         saved_picos(event, policy.catalog))


def customer_lines(tallies: Mapping[str, Tally], policy: Policy, only: str | None = None,
                   department: str | None = None) -> list[CustomerLine]:
    """A line per customer of the policy (with or without calls) and per other customer with calls,
    optionally only ``only`` or the customers of ``department``."""
    lines = []
    for customer_id in sorted(set(policy.customers) | set(tallies)):
        if only is not None and customer_id != only:
            continue
        customer = policy.customers.get(customer_id)
        if department is not None and (customer is None or customer.department != department):
            continue
        tally = tallies.get(customer_id, Tally())
        plan = customer.plan if customer is not None else None
        markup = plan.rate_card.markup_pct if plan is not None else Decimal(0)
        bill = invoice(usage_at_rate_card(tally, markup), plan.included_nanos if plan is not None else 0)
        lines.append(CustomerLine(customer_id, customer.name if customer else customer_id, plan,
                                  customer.department if customer else "", tally, bill))
    return lines


async def customers(ledger: Ledger, policy: Policy, start: datetime, end: datetime, only: str | None = None,
                    department: str | None = None) -> list[CustomerLine]:
    """The customer lines of the period [start, end), read from the ledger one customer at a time."""
    wanted = [only] if only is not None else sorted(set(policy.customers) | await _with_calls(ledger, start, end))
    tallies: dict[str, Tally] = {}
    for customer_id in wanted:
        async for event in ledger.iter_events(start, end, customer=customer_id):
            if isinstance(event, UsageEvent):
                _count(tallies, event, policy)
    return customer_lines(tallies, policy, only, department)


async def _with_calls(ledger: Ledger, start: datetime, end: datetime) -> set[str]:
    """Customers with calls in the period, whether or not the policy in force still declares them."""
    rows = await ledger.totals(start, end, group_by=["customer"])
    return {str(row.groups["customer"]) for row in rows if row.groups["customer"]}


def customers_report(lines: list[CustomerLine], period: str, with_plans: bool = True) -> Report:
    """A ``customer`` row per customer, then (``with_plans``) a ``plan`` row per plan with its totals
    and latency over all of its customers."""
    rows = [_row("customer", line.id, line.name, line.plan, line.department, line.tally, line.invoice)
            for line in lines]
    if with_plans:
        plans: dict[str, tuple[Plan, Tally, list[Invoice]]] = {}
        for line in lines:
            if line.plan is None:
                continue
            _, total, bills = plans.setdefault(line.plan.name, (line.plan, Tally(), []))
            total.merge(line.tally)
            bills.append(line.invoice)
        for name in sorted(plans):
            plan, total, bills = plans[name]
            summed = Invoice(*(sum((getattr(b, part) for b in bills), Decimal(0))
                               for part in ("usage", "included", "billable", "total")))
            rows.append(_row("plan", None, None, plan, None, total, summed))
    notes = (f"Period {period}. cost_usd is the cost at provider prices, charged to the department. "
             "usage_at_rate_card_usd is exact: card prices per token type for the models a card lists, "
             "provider cost plus the markup for the others (and for tool fees); the plan's included amount "
             "applies first, then billable_usd is rounded half up to the cent (invoice_usd). saved_usd: the same "
             "calls without the efficiency features, at provider prices: cache reads x (input - cached price), "
             "minus the cache-write premium, plus trimmed tokens x input price. Latency: nearest-rank p50/p95 of "
             "calls that ended ok.",)
    return Report("Customers", COLUMNS, rows, notes, {"period": period})


def _row(level: str, customer: str | None, name: str | None, plan: Plan | None, department: str | None,
         tally: Tally, bill: Invoice) -> dict[str, str | int | None]:
    return {
        "level": level, "customer": customer, "name": name, "plan": plan.name if plan else NOT_IN_POLICY,
        "department": department, "requests": tally.requests, "input_tokens": tally.input_tokens,
        "cache_read_tokens": tally.cache_read_tokens, "cache_write_tokens": tally.cache_write_tokens,
        "output_tokens": tally.output_tokens, "trimmed_tokens": tally.trimmed_tokens,
        "cost_usd": format_usd(tally.cost_nanos), "rate_card": _describe(plan),
        "usage_at_rate_card_usd": _usd(bill.usage), "included_usd": _usd(bill.included),
        "billable_usd": _usd(bill.billable), "invoice_usd": f"{bill.total:f}",
        "saved_usd": _usd(Decimal(tally.saved_picos).scaleb(-12)),
        "latency_p50_ms": percentile(tally.latencies, Decimal("0.5")),
        "latency_p95_ms": percentile(tally.latencies, Decimal("0.95")),
    }


def _describe(plan: Plan | None) -> str:
    """``markup 20%``, or ``2 models; markup 35%`` for a card with per-model prices (others at the markup)."""
    if plan is None:
        return "at cost"
    card = plan.rate_card
    markup = f"markup {card.markup_pct.normalize():f}%"
    if not card.models:
        return markup
    count = len(card.models)
    return f"{count} model{'s' if count > 1 else ''}; {markup}"


def _usd(amount: Decimal) -> str:
    """An exact decimal string without exponent or trailing zeros."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


__all__ = ["COLUMNS", "CustomerLine", "Invoice", "Tally", "customer_lines", "customers", "customers_report",
           "invoice", "percentile", "rate", "saved_picos", "tally_events", "usage_at_rate_card"]
