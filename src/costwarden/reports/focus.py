"""A statement's ledger usage as FOCUS 1.2 CSV (FinOps Open Cost and Usage Specification).

One row per UTC day, department, model and token type (``input`` is uncached input,
``cached_input``, ``output``), with the mandatory FOCUS columns, a few conditional ones that apply
to metered token usage, and ``x_`` extension columns naming the department and model.

The ledger stores a call's total cost and the prices it was charged at (``price_version``,
``input/cached/output@as_of`` in USD per 1M tokens). Each group's cost is split by token type at
those prices: input and cached input get their tokens times their price, rounded down to the
nano-dollar, and the output row gets the rest (its tokens times its price plus every rounding
remainder), so the rows add up exactly to the ledger's cost. ``ListCost`` is the exact
tokens x price product; ``BilledCost`` the split ledger cost.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import TextIO
from zoneinfo import ZoneInfo

from costwarden.core.money import Price, format_usd
from costwarden.core.periods import month_bounds
from costwarden.reports.statement import DepartmentInfo, Statement, Usage

INPUT, CACHED_INPUT, OUTPUT = "input", "cached_input", "output"
TOKEN_TYPES = (INPUT, CACHED_INPUT, OUTPUT)
PRICING_UNIT = "1000000 Tokens"  # catalog prices are per million tokens
ACCOUNT_ID = ACCOUNT_NAME = "costwarden"

MANDATORY = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
OPTIONAL = ("ChargeFrequency", "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice",
            "PricingCategory", "ServiceSubcategory")
EXTENSIONS = ("x_DepartmentId", "x_DepartmentName", "x_CostCenter", "x_Model", "x_Tier", "x_TokenType",
              "x_PriceVersion")
COLUMNS = (*MANDATORY, *OPTIONAL, *EXTENSIONS)

_PROVIDERS = {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google"}
_LABELS = {INPUT: "input", CACHED_INPUT: "cached input", OUTPUT: "output"}


@dataclass(frozen=True, slots=True)
class TokenCharge:
    """The tokens of one type in a usage group, their price (None if unknown) and billed cost."""

    token_type: str
    tokens: int
    price: Price | None
    billed_nanos: int

    @property
    def list_picos(self) -> int | None:
        return None if self.price is None else self.tokens * self.price.picos_per_token


def parse_price_version(text: str) -> tuple[Price, Price, Price] | None:
    """Input, cached input and output prices of ``0.15/0.075/0.60@2025-08-07``; a cached price of
    ``-`` means cached input is priced as input. None when the text is not of that shape."""
    prices = text.split("@", 1)[0].split("/")
    if len(prices) != 3:
        return None
    try:
        given = Price(prices[0]), Price(prices[2])
        cached = given[0] if prices[1] == "-" else Price(prices[1])
    except (ValueError, ArithmeticError):
        return None
    return given[0], cached, given[1]


def split_cost(usage: Usage) -> list[TokenCharge]:
    """The group's ledger cost split by token type; the charges add up exactly to its cost."""
    counts = usage.counts
    uncached = counts.input_tokens - counts.cached_input_tokens
    prices = parse_price_version(usage.price_version)
    if prices is None:  # unknown prices: the whole cost is on the output row, unsplit
        return [TokenCharge(INPUT, uncached, None, 0), TokenCharge(CACHED_INPUT, counts.cached_input_tokens, None, 0),
                TokenCharge(OUTPUT, counts.output_tokens, None, counts.cost_nanos)]
    input_price, cached_price, output_price = prices
    input_nanos = uncached * input_price.picos_per_token // 1000
    cached_nanos = counts.cached_input_tokens * cached_price.picos_per_token // 1000
    return [TokenCharge(INPUT, uncached, input_price, input_nanos),
            TokenCharge(CACHED_INPUT, counts.cached_input_tokens, cached_price, cached_nanos),
            TokenCharge(OUTPUT, counts.output_tokens, output_price, counts.cost_nanos - input_nanos - cached_nanos)]


def focus_rows(statement: Statement, account_id: str = ACCOUNT_ID,
               account_name: str = ACCOUNT_NAME) -> Iterator[dict[str, str]]:
    """The FOCUS rows of a statement: its period's usage, then corrections of closed periods."""
    departments = {line.department.id: line.department for line in statement.lines}
    zone = ZoneInfo(statement.timezone)
    common = {
        "BillingAccountId": account_id, "BillingAccountName": account_name, "BillingCurrency": "USD",
        "BillingPeriodStart": _instant(statement.start), "BillingPeriodEnd": _instant(statement.end),
        "ChargeCategory": "Usage", "ChargeFrequency": "Usage-Based", "ConsumedUnit": "Tokens",
        "PricingCategory": "Standard", "PricingUnit": PRICING_UNIT,
        "ServiceCategory": "AI and Machine Learning", "ServiceSubcategory": "Generative AI",
    }
    for usage in (*statement.usage, *statement.corrections):
        bounds = (statement.start, statement.end) if usage.corrects is None else month_bounds(usage.corrects, zone)
        start = max(datetime.combine(usage.day, time(), UTC), bounds[0])
        end = min(datetime.combine(usage.day + timedelta(days=1), time(), UTC), bounds[1])
        department = departments.get(usage.department) or DepartmentInfo(usage.department, usage.department)
        provider = _PROVIDERS.get(usage.provider, usage.provider)
        for charge in split_cost(usage):
            if charge.tokens == 0 and charge.billed_nanos == 0:
                continue
            billed = format_usd(charge.billed_nanos)
            listed = billed if charge.list_picos is None else _plain(Decimal(charge.list_picos).scaleb(-12))
            unit_price = "" if charge.price is None else _plain(charge.price.usd_per_million)
            description = f"{usage.model} {_LABELS[charge.token_type]} tokens, {usage.department}"
            yield {
                **common,
                "BilledCost": billed, "EffectiveCost": billed, "ListCost": listed, "ContractedCost": listed,
                "ListUnitPrice": unit_price, "ContractedUnitPrice": unit_price,
                "ChargeClass": "" if usage.corrects is None else "Correction",
                "ChargeDescription": description if usage.corrects is None
                else f"{description} (correction of {usage.corrects})",
                "ChargePeriodStart": _instant(start), "ChargePeriodEnd": _instant(end),
                "ConsumedQuantity": str(charge.tokens),
                "PricingQuantity": _plain(Decimal(charge.tokens).scaleb(-6)),
                "ProviderName": provider, "PublisherName": provider, "InvoiceIssuerName": provider,
                "ServiceName": f"{provider} API",
                "x_DepartmentId": department.id, "x_DepartmentName": department.name,
                "x_CostCenter": department.cost_center, "x_Model": usage.model,
                "x_Tier": "" if usage.tier is None else str(usage.tier), "x_TokenType": charge.token_type,
                "x_PriceVersion": usage.price_version,
            }


def write_focus(statement: Statement, out: TextIO) -> int:
    """Write the statement as FOCUS 1.2 CSV to ``out``; returns the number of rows."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    written = 0
    for row in focus_rows(statement):
        writer.writerow(row)
        written += 1
    return written


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


__all__ = ["COLUMNS", "MANDATORY", "TOKEN_TYPES", "TokenCharge", "focus_rows", "parse_price_version",
           "split_cost", "write_focus"]
