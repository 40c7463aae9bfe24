"""Customer invoices (SPEC §12) equal usage x rate card to the cent, by hand: a markup card, a
per-model card with cache reads and writes, the included amount, savings and latency percentiles."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from costwarden.core.events import UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.policy import parse_policy
from costwarden.reports.customers import customer_lines, customers_report, percentile, tally_events
from costwarden.reports.rate_card import invoice

POLICY = parse_policy("""
version: 1
departments:
  PRODUCT: {}
plans:
  silver:
    rate_card: {markup_pct: 20}
  gold:
    rate_card:
      markup_pct: 35
      models: {claude-sonnet-4-5: {input: 4.00, output: 20.00, cached_input: 0.40, cache_write_5m: 5.00}}
    included_usd: 5
customers:
  ACME:   {name: Acme Corp, plan: gold,   department: PRODUCT}
  GLOBEX: {name: Globex,    plan: silver, department: PRODUCT}
  INITECH: {name: Initech,  plan: silver, department: PRODUCT}
""")
AT = datetime(2026, 11, 5, 12, tzinfo=UTC)


def event(n: int, customer: str, model: str, cost_nanos: int, latency_ms: int = 100, **tokens: int) -> UsageEvent:
    return UsageEvent(id=f"e{n}", admitted_at=AT, finished_at=AT, department="PRODUCT", model_requested=model,
                      model_served=model, provider="openai", endpoint="/v1/chat/completions", customer=customer,
                      cost_nanos=cost_nanos, latency_ms=latency_ms, **tokens)


# Gold: 100,000 input tokens of which 60,000 read from the cache and 10,000 written to it, 20,000
# output, 5,000 trimmed. Provider (claude-sonnet-4-5: 3.00 / 0.30 / 3.75 / 15.00):
#   30,000 x 3 + 60,000 x 0.30 + 10,000 x 3.75 + 20,000 x 15 = 0.09 + 0.018 + 0.0375 + 0.3 = $0.4455
# Card (4.00 / 0.40 / 5.00 / 20.00): 0.12 + 0.024 + 0.05 + 0.4 = $0.594
# A gpt-4o-mini call (not on the card) that cost $7.000000001: x 1.35 = $9.45000000135
# A long prompt (250,000 tokens, 100,000 read from the cache; long-context prices 6.00 / 0.60 /
# 22.50) with 1,000 output tokens and 3 web searches ($10 per 1,000):
#   provider 150,000 x 6 + 100,000 x 0.60 + 1,000 x 22.50 + 0.03 = 0.9 + 0.06 + 0.0225 + 0.03 = $1.0125
#   card 150,000 x 4 + 100,000 x 0.40 + 1,000 x 20 = 0.6 + 0.04 + 0.02 = $0.66, tools 0.03 x 1.35 = $0.0405
# Usage at the card $10.74450000135; included $5; billable $5.74450000135; invoice $5.74.
# Saved: 60,000 x (3 - 0.30) - 10,000 x (3.75 - 3) + 5,000 x 3 = 0.162 - 0.0075 + 0.015 = $0.1695,
# plus 100,000 x (6 - 0.60) = $0.54 on the long prompt: $0.7095
GOLD = [
    event(1, "ACME", "claude-sonnet-4-5", 445_500_000, 300, input_tokens=100_000, cached_input_tokens=60_000,
          cache_write_5m_tokens=10_000, output_tokens=20_000, trimmed_tokens=5_000),
    event(2, "ACME", "gpt-4o-mini", 7_000_000_001, 100, input_tokens=1_000, output_tokens=10),
    replace(event(7, "ACME", "claude-sonnet-4-5", 1_012_500_000, 500, input_tokens=250_000,
                  cached_input_tokens=100_000, output_tokens=1_000), tool_calls={"web_search": 3}),
]
# Silver: $12.345678901 + $1.000000000 = $13.345678901, x 1.20 = $16.0148146812 -> $16.01
SILVER = [
    event(3, "GLOBEX", "gpt-4o-mini", 12_345_678_901, 200, input_tokens=5_000, output_tokens=50),
    event(4, "GLOBEX", "gpt-4o-mini", 1_000_000_000, 400, input_tokens=5_000, output_tokens=50),
    replace(event(5, "GLOBEX", "gpt-4o-mini", 0, 9_999), status=CallStatus.UPSTREAM_ERROR, http_status=500),
]


def rows() -> dict[tuple[str, str | None], dict[str, object]]:
    lines = customer_lines(tally_events([*GOLD, *SILVER, event(6, "", "gpt-4o-mini", 99)], POLICY), POLICY)
    report = customers_report(lines, "2026-11")
    return {(str(row["level"]), row["customer"] if row["level"] == "customer" else row["plan"]): dict(row)
            for row in report.document()["rows"]}


def test_a_per_model_card_with_cache_tokens_and_the_included_amount() -> None:
    acme = rows()[("customer", "ACME")]
    assert acme["plan"] == "gold" and acme["requests"] == 3
    assert acme["cost_usd"] == "8.458000001"
    assert acme["usage_at_rate_card_usd"] == "10.74450000135"
    assert acme["included_usd"] == "5"
    assert acme["billable_usd"] == "5.74450000135"
    assert acme["invoice_usd"] == "5.74"
    assert acme["saved_usd"] == "0.7095"
    assert (acme["cache_read_tokens"], acme["cache_write_tokens"], acme["trimmed_tokens"]) == (160_000, 10_000, 5_000)


def test_a_markup_card() -> None:
    table = rows()
    globex = table[("customer", "GLOBEX")]
    assert globex["requests"] == 3 and globex["cost_usd"] == "13.345678901"
    assert globex["usage_at_rate_card_usd"] == "16.0148146812"
    assert (globex["included_usd"], globex["invoice_usd"]) == ("0", "16.01")
    assert globex["saved_usd"] == "0"
    # the failed call does not count in latency: nearest rank of (200, 400)
    assert (globex["latency_p50_ms"], globex["latency_p95_ms"]) == (200, 400)
    # a customer without calls still gets its (empty) line; the call of no customer is nobody's
    initech = table[("customer", "INITECH")]
    assert (initech["requests"], initech["invoice_usd"], initech["latency_p50_ms"]) == (0, "0.00", None)
    assert {key for key in table if key[0] == "customer"} == {("customer", c) for c in ("ACME", "GLOBEX", "INITECH")}


def test_plan_rows_sum_their_customers_and_give_latency_per_plan() -> None:
    table = rows()
    silver, gold = table[("plan", "silver")], table[("plan", "gold")]
    assert silver["requests"] == 3 and silver["invoice_usd"] == "16.01"
    assert (gold["latency_p50_ms"], gold["latency_p95_ms"]) == (300, 500)
    assert (gold["invoice_usd"], gold["usage_at_rate_card_usd"]) == ("5.74", "10.74450000135")


def test_the_included_amount_is_used_first_and_rounding_is_once_half_up() -> None:
    under = invoice(Decimal("4.999"), 5_000_000_000)
    assert (under.included, under.billable, under.total) == (Decimal("4.999"), Decimal(0), Decimal("0.00"))
    half = invoice(Decimal("1.005"), 0)
    assert half.total == Decimal("1.01")


def test_percentiles_are_nearest_rank() -> None:
    assert percentile(Counter([400, 100, 300, 200]), Decimal("0.5")) == 200
    assert percentile(Counter([400, 100, 300, 200]), Decimal("0.95")) == 400
    assert percentile(Counter(range(1, 101)), Decimal("0.95")) == 95
    assert percentile({10: 94, 20: 6}, Decimal("0.95")) == 20
    assert percentile({10: 95, 20: 5}, Decimal("0.95")) == 10
    assert percentile({}, Decimal("0.5")) is None
