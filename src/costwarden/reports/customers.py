"""``report customers``: each business customer's usage, its invoice at its plan's rate card, and
what its plan's efficiency features saved (SPEC §12), per customer and per plan.

Cost is what the calls were charged to the department, at provider prices (the ledger's cost).
The rate card, the savings and the invoice are computed as ``reports.rate_card`` states; latency
is the nearest-rank p50 and p95 of the calls that ended ``ok``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from costwarden.core.catalog import Catalog
from costwarden.core.events import UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.core.money import format_usd
from costwarden.core.policy import Plan, Policy
from costwarden.ledger import Ledger
from costwarden.reports.rate_card import GroupKey, Invoice, Priced, Usage, group_of, invoice, price
from costwarden.reports.tabular import Report

COLUMNS = ("level", "customer", "name", "plan", "department", "requests", "input_tokens", "cache_read_tokens",
           "cache_write_tokens", "output_tokens", "trimmed_tokens", "cost_usd", "rate_card", "usage_at_rate_card_usd",
           "included_usd", "billable_usd", "invoice_usd", "saved_usd", "latency_p50_ms", "latency_p95_ms")
NOT_IN_POLICY = "(not in policy)"


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
    # calls per latency in whole milliseconds: exact percentiles in memory bounded by the distinct values
    latencies: Counter[int] = field(default_factory=Counter)
    groups: dict[GroupKey, Usage] = field(default_factory=dict)  # what the rate card prices

    def add(self, event: UsageEvent, catalog: Catalog) -> None:
        self.requests += 1
        self.input_tokens += event.input_tokens
        self.cache_read_tokens += event.cached_input_tokens
        self.cache_write_tokens += event.cache_write_5m_tokens + event.cache_write_1h_tokens
        self.output_tokens += event.output_tokens
        self.trimmed_tokens += event.trimmed_tokens
        self.cost_nanos += event.cost_nanos
        if event.status == CallStatus.OK:
            self.latencies[event.latency_ms] += 1
        key = group_of(event, catalog)
        usage = self.groups.get(key)
        if usage is None:
            usage = self.groups[key] = Usage()
        usage.tokens.update(event.by_type())
        usage.trimmed_tokens += event.trimmed_tokens
        usage.cost_nanos += event.cost_nanos
        if event.tool_calls:
            usage.tool_calls.update(event.tool_calls)

    def merge(self, other: Tally) -> None:
        """Add another tally's sums and latencies (not its groups: plan rows sum priced lines)."""
        for name in ("requests", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
                     "trimmed_tokens", "cost_nanos"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies.update(other.latencies)


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
    priced: Priced
    invoice: Invoice


def tally_events(events: Iterable[UsageEvent], policy: Policy) -> dict[str, Tally]:
    """Per customer id, the sums of its events (events of no customer are skipped)."""
    tallies: dict[str, Tally] = {}
    for event in events:
        _count(tallies, event, policy)
    return tallies


def _count(tallies: dict[str, Tally], event: UsageEvent, policy: Policy) -> None:
    if event.customer:
        tally = tallies.get(event.customer)
        if tally is None:
            tally = tallies[event.customer] = Tally()
        tally.add(event, policy.catalog)


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
        priced = price(tally.groups, plan, policy.catalog)
        markup = plan.rate_card.markup_pct if plan is not None else Decimal(0)
        bill = invoice(priced.at_rate_card(markup), plan.included_nanos if plan is not None else 0)
        lines.append(CustomerLine(customer_id, customer.name if customer else customer_id, plan,
                                  customer.department if customer else "", tally, priced, bill))
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
    rows = [_row("customer", line.id, line.name, line.plan, line.department, line.tally, line.priced, line.invoice)
            for line in lines]
    if with_plans:
        plans: dict[str, list[CustomerLine]] = {}
        for line in lines:
            if line.plan is not None:
                plans.setdefault(line.plan.name, []).append(line)
        for members in (plans[name] for name in sorted(plans)):
            total, priced, bill = Tally(), Priced(), invoice(Decimal(0), 0)
            for line in members:
                total.merge(line.tally)
                priced, bill = priced + line.priced, bill + line.invoice
            rows.append(_row("plan", None, None, members[0].plan, None, total, priced, bill))
    notes = (f"Period {period}. cost_usd is the cost at provider prices, charged to the department. "
             "usage_at_rate_card_usd is exact: card prices per token type for the models a card lists, "
             "provider cost plus the markup for the others (and for tool fees); the plan's included amount "
             "applies first, then billable_usd is rounded half up to the cent (invoice_usd). saved_usd: the same "
             "calls without the efficiency features, at provider prices: cache reads x (input - cached price), "
             "minus the cache-write premium, plus trimmed tokens x input price. Latency: nearest-rank p50/p95 of "
             "calls that ended ok.",)
    return Report("Customers", COLUMNS, rows, notes, {"period": period})


def _row(level: str, customer: str | None, name: str | None, plan: Plan | None, department: str | None,
         tally: Tally, priced: Priced, bill: Invoice) -> dict[str, str | int | None]:
    return {
        "level": level, "customer": customer, "name": name, "plan": plan.name if plan else NOT_IN_POLICY,
        "department": department, "requests": tally.requests, "input_tokens": tally.input_tokens,
        "cache_read_tokens": tally.cache_read_tokens, "cache_write_tokens": tally.cache_write_tokens,
        "output_tokens": tally.output_tokens, "trimmed_tokens": tally.trimmed_tokens,
        "cost_usd": format_usd(tally.cost_nanos), "rate_card": _describe(plan),
        "usage_at_rate_card_usd": _usd(bill.usage), "included_usd": _usd(bill.included),
        "billable_usd": _usd(bill.billable), "invoice_usd": f"{bill.total:f}",
        "saved_usd": _usd(Decimal(priced.saved_picos).scaleb(-12)),
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


__all__ = ["COLUMNS", "CustomerLine", "Tally", "customer_lines", "customers", "customers_report", "percentile",
           "tally_events"]
