"""A statement as FOCUS 1.2 CSV (FinOps Open Cost and Usage Specification).

One row per UTC day, department, team, user, project tag, model and token type (``input`` is
uncached input, ``cached_input``, ``output``), then one ``Adjustment`` row per department for its
allocated shared costs and one for its allocated invoice variance, so that the rows add up to the
statement's total. Department columns (name, cost center, GL account) are those in force on the
row's day; adjustment rows are split between a department's codes by usage (``reports.codes``).
The billing period of a row is the providers' invoice month, in UTC
(``InvoiceId`` names the provider and that month); charge periods are clipped to the statement's
period. Decimal columns always carry a decimal point (``800000.0``), so that no reader types them
as integers.

The ledger stores a call's total cost and the prices it was charged at (``price_version``,
``input/cached/output@as_of`` in USD per 1M tokens). Each group's cost is split by token type at
those prices: input and cached input get their tokens times their price, rounded down to the
nano-dollar, and the output row gets the rest (its tokens times its price plus every rounding
remainder), so the rows add up exactly to the ledger's cost. ``ContractedCost`` is the exact
tokens x price charged product (the policy's prices, negotiated ones included); ``ListCost`` the
same tokens at the bundled catalog's public prices when it knows the model.
"""

from __future__ import annotations

import csv
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import TextIO
from zoneinfo import ZoneInfo

from costwarden.core.csvsafe import safe_cell
from costwarden.core.money import Price
from costwarden.core.periods import month_bounds
from costwarden.core.policy import UNATTRIBUTED
from costwarden.policy import bundled_catalog
from costwarden.reports.codes import CodeBook, split
from costwarden.reports.statement import DepartmentInfo, Statement, UsageRow

INPUT, CACHED_INPUT, OUTPUT = "input", "cached_input", "output"
WRITE_5M, WRITE_1H, REASONING, AUDIO = "cache_write_5m", "cache_write_1h", "reasoning", "audio"
TOKEN_TYPES = (INPUT, CACHED_INPUT, WRITE_5M, WRITE_1H, AUDIO, OUTPUT, REASONING)
PRICING_UNIT = "1000000 Tokens"  # catalog prices are per million tokens
ACCOUNT_ID = ACCOUNT_NAME = "costwarden"

MANDATORY = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ServiceCategory", "ServiceName",
)
# The PricingCurrency* columns repeat the USD prices (pricing and billing currency are one): the
# validator requires them of a provider with a public price list. CommitmentDiscountStatus is
# always empty (no commitment discounts), present because nullability rules of ConsumedQuantity
# are conditioned on it.
OPTIONAL = ("ChargeFrequency", "CommitmentDiscountStatus", "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice",
            "InvoiceId", "ListUnitPrice", "PricingCategory", "PricingCurrency", "PricingCurrencyContractedUnitPrice",
            "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice", "ServiceSubcategory", "SkuId", "SkuMeter",
            "SkuPriceDetails", "SkuPriceId", "SubAccountId", "SubAccountName", "SubAccountType", "Tags")
EXTENSIONS = ("x_DepartmentId", "x_DepartmentName", "x_CostCenter", "x_GlAccount", "x_Model", "x_Tier", "x_TokenType",
              "x_PriceVersion")
COLUMNS = (*MANDATORY, *OPTIONAL, *EXTENSIONS)

# Plain numbers in these stay numbers; any other cell a spreadsheet would run as a formula is quoted.
_NUMERIC = frozenset({"BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice",
                      "ContractedUnitPrice", "ConsumedQuantity", "PricingQuantity",
                      "PricingCurrencyContractedUnitPrice", "PricingCurrencyEffectiveCost",
                      "PricingCurrencyListUnitPrice"})
_PROVIDERS = {"openai": "OpenAI", "anthropic": "Anthropic", "google": "Google"}
_LABELS = {INPUT: "input", CACHED_INPUT: "cached input", WRITE_5M: "5-minute cache write",
           WRITE_1H: "1-hour cache write", AUDIO: "audio input", OUTPUT: "output", REASONING: "reasoning"}
_METERS = {INPUT: "Input Tokens", CACHED_INPUT: "Cached Input Tokens", WRITE_5M: "Cache Write Tokens (5 min)",
           WRITE_1H: "Cache Write Tokens (1 h)", AUDIO: "Audio Input Tokens", OUTPUT: "Output Tokens",
           REASONING: "Reasoning Tokens"}
ListPrices = Callable[[str], "tuple[Price, Price, Price] | None"]


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


@functools.lru_cache(maxsize=1024)  # a handful of price versions, parsed once per export
def parse_price_version(text: str) -> tuple[Price, Price, Price] | None:
    """Input, cached input and output prices of ``0.15/0.075/0.60@2025-08-07``; a cached price of
    ``-`` means cached input is priced as input. None when the text is not of that shape."""
    prices = text.split("@", 1)[0].split("/")
    if len(prices) not in (3, 5):  # five: cache-write prices follow
        return None
    try:
        given = Price(prices[0]), Price(prices[2])
        cached = given[0] if prices[1] == "-" else Price(prices[1])
    except (ValueError, ArithmeticError):
        return None
    return given[0], cached, given[1]


@functools.lru_cache(maxsize=1024)
def write_prices(text: str) -> tuple[Price | None, Price | None]:
    """The 5-minute and 1-hour cache-write prices a price label states (None where it states none)."""
    prices = text.split("@", 1)[0].split("/")
    if len(prices) != 5:
        return None, None
    try:
        return tuple(None if p == "-" else Price(p) for p in prices[3:])  # type: ignore[return-value]
    except (ValueError, ArithmeticError):
        return None, None


def split_cost(usage: UsageRow) -> list[TokenCharge]:
    """The group's ledger cost split by token type; the charges add up exactly to its cost.

    Every type but output is its tokens at its stated price (rounded down); output takes the rest,
    so that rounding, service-tier and tool charges land on it and the sum is the ledger's."""
    counts = usage.counts
    written = counts.cache_write_5m_tokens + counts.cache_write_1h_tokens
    plain = counts.input_tokens - counts.cached_input_tokens - written - counts.audio_input_tokens
    visible = counts.output_tokens - counts.reasoning_tokens
    prices = parse_price_version(usage.price_version)
    if prices is None:  # unknown prices: the whole cost is on the output row, unsplit
        return [TokenCharge(INPUT, counts.input_tokens - counts.cached_input_tokens, None, 0),
                TokenCharge(CACHED_INPUT, counts.cached_input_tokens, None, 0),
                TokenCharge(OUTPUT, counts.output_tokens, None, counts.cost_nanos)]
    input_price, cached_price, output_price = prices
    write_5m, write_1h = write_prices(usage.price_version)
    parts = [(INPUT, plain, input_price), (CACHED_INPUT, counts.cached_input_tokens, cached_price),
             (WRITE_5M, counts.cache_write_5m_tokens, write_5m or input_price),
             (WRITE_1H, counts.cache_write_1h_tokens, write_1h or input_price),
             (AUDIO, counts.audio_input_tokens, input_price), (REASONING, counts.reasoning_tokens, output_price)]
    charges = [TokenCharge(kind, tokens, price, tokens * price.picos_per_token // 1000)
               for kind, tokens, price in parts if tokens or kind in (INPUT, CACHED_INPUT)]
    rest = counts.cost_nanos - sum(charge.billed_nanos for charge in charges)
    return [*charges, TokenCharge(OUTPUT, visible, output_price, rest)]


def focus_rows(statement: Statement, account_id: str = ACCOUNT_ID, account_name: str = ACCOUNT_NAME,
               list_prices: ListPrices | None = None) -> Iterator[dict[str, str]]:
    """The FOCUS rows of a statement: its period's usage, the corrections of closed periods, then
    the allocated shared costs and invoice variance of each department line as rows of their own.
    ``list_prices`` gives a model's public list prices (ListCost); without it, or for a model it
    does not know, the prices charged are the list."""
    departments = {line.department.id: line.department for line in statement.lines}
    codes = CodeBook(statement)
    zone = ZoneInfo(statement.timezone)
    common = {
        "BillingAccountId": account_id, "BillingAccountName": account_name, "BillingCurrency": "USD",
        "ConsumedUnit": "Tokens", "PricingCategory": "Standard", "PricingUnit": PRICING_UNIT,
        "ChargeFrequency": "Usage-Based", "ServiceCategory": "AI and Machine Learning",
        "ServiceSubcategory": "Generative AI", "SubAccountType": "Department", "PricingCurrency": "USD",
        "CommitmentDiscountStatus": "",
    }
    for usage in (*statement.usage, *statement.corrections):
        bounds = (statement.start, statement.end) if usage.corrects is None else month_bounds(usage.corrects, zone)
        start = max(datetime.combine(usage.day, time(), UTC), bounds[0])
        end = min(datetime.combine(usage.day + timedelta(days=1), time(), UTC), bounds[1])
        department = codes.on(departments.get(usage.department) or DepartmentInfo(usage.department, usage.department),
                              usage.day)
        provider = _PROVIDERS.get(usage.provider, usage.provider)
        listed_prices = list_prices(usage.model) if list_prices is not None else None
        billing_start, billing_end = _utc_month(start)
        listed_by_type = dict(zip((INPUT, CACHED_INPUT, OUTPUT), listed_prices, strict=True)) if listed_prices else {}
        for charge in split_cost(usage):
            if charge.tokens == 0 and charge.billed_nanos == 0:
                continue
            billed = _decimal_usd(charge.billed_nanos)
            contracted = billed if charge.list_picos is None else _decimal(Decimal(charge.list_picos).scaleb(-12))
            list_price = charge.price if charge.price is None else listed_by_type.get(charge.token_type, charge.price)
            listed = contracted if list_price is None else _decimal(Decimal(charge.tokens * list_price.picos_per_token)
                                                                    .scaleb(-12))
            description = f"{usage.model} {_LABELS[charge.token_type]} tokens, {usage.department}"
            list_unit = "" if list_price is None else _decimal(list_price.usd_per_million)
            contracted_unit = "" if charge.price is None else _decimal(charge.price.usd_per_million)
            yield {
                **common,
                "BilledCost": billed, "EffectiveCost": billed, "ListCost": listed, "ContractedCost": contracted,
                "ListUnitPrice": list_unit, "ContractedUnitPrice": contracted_unit,
                "PricingCurrencyListUnitPrice": list_unit, "PricingCurrencyContractedUnitPrice": contracted_unit,
                "PricingCurrencyEffectiveCost": billed,
                "ChargeCategory": "Usage", "ChargeClass": "" if usage.corrects is None else "Correction",
                "ChargeDescription": description if usage.corrects is None
                else f"{description} (correction of {usage.corrects})",
                "BillingPeriodStart": _instant(billing_start), "BillingPeriodEnd": _instant(billing_end),
                "ChargePeriodStart": _instant(start), "ChargePeriodEnd": _instant(end),
                "ConsumedQuantity": _decimal(Decimal(charge.tokens)),
                "PricingQuantity": _decimal(Decimal(charge.tokens).scaleb(-6)),
                "ProviderName": provider, "PublisherName": provider, "InvoiceIssuerName": provider,
                "InvoiceId": f"{usage.provider}-{billing_start:%Y-%m}", "ServiceName": f"{provider} API",
                "SkuId": f"{usage.model}/{charge.token_type}",
                "SkuPriceId": f"{usage.model}/{charge.token_type}@{usage.price_version}",
                "SkuMeter": _METERS[charge.token_type],
                "SkuPriceDetails": _sku_price_details(usage.model, charge.token_type, usage.price_version),
                **_department_columns(department, usage),
                "x_Model": usage.model, "x_Tier": "" if usage.tier is None else str(usage.tier),
                "x_TokenType": charge.token_type, "x_PriceVersion": usage.price_version,
            }
    yield from _adjustment_rows(statement, common, codes)


def _department_columns(department: DepartmentInfo, usage: UsageRow | None) -> dict[str, str]:
    if usage is None:
        return _columns(department, None, None, None)
    return _columns(department, usage.team, usage.user, usage.project)


@functools.lru_cache(maxsize=65536)  # the same department and team, user and project on many rows
def _columns(department: DepartmentInfo, team: str | None, user: str | None, project: str | None) -> dict[str, str]:
    tags = {"cost_center": department.cost_center, "gl_account": department.gl_account}
    if team is not None or user is not None or project is not None:
        tags |= {"team": team or "", "user": user or "", "project": project or ""}
    return {"SubAccountId": department.id, "SubAccountName": department.name,
            "Tags": json.dumps({k: v for k, v in tags.items() if v}, sort_keys=True),
            "x_DepartmentId": department.id, "x_DepartmentName": department.name,
            "x_CostCenter": department.cost_center, "x_GlAccount": department.gl_account}


def _adjustment_rows(statement: Statement, common: dict[str, str], codes: CodeBook) -> Iterator[dict[str, str]]:
    """The allocated shared costs and invoice variance of each line: not usage, so no SKU or quantity."""
    billing_start, billing_end = _utc_month(statement.start + (statement.end - statement.start) / 2)
    adjustment = {
        **common, "ConsumedUnit": "", "PricingUnit": "", "PricingCategory": "", "ChargeFrequency": "Monthly",
        "ListUnitPrice": "", "ContractedUnitPrice": "", "PricingCurrencyListUnitPrice": "",
        "PricingCurrencyContractedUnitPrice": "", "ChargeCategory": "Adjustment", "ChargeClass": "",
        "BillingPeriodStart": _instant(billing_start), "BillingPeriodEnd": _instant(billing_end),
        "ChargePeriodStart": _instant(statement.start), "ChargePeriodEnd": _instant(statement.end),
        "ConsumedQuantity": "", "PricingQuantity": "", "InvoiceId": f"{ACCOUNT_ID}-{statement.period}",
        "ServiceName": "AI platform", "SkuId": "", "SkuPriceId": "", "SkuMeter": "", "SkuPriceDetails": "",
        "x_Model": "", "x_Tier": "", "x_TokenType": "", "x_PriceVersion": "",
    }
    unattributed = statement.unattributed.cost_nanos
    if unattributed:  # its usage rows above are shared costs: moved out here, allocated below
        amount = _decimal_usd(-unattributed)
        yield {**adjustment, "BilledCost": amount, "EffectiveCost": amount, "ListCost": amount,
               "ContractedCost": amount, "PricingCurrencyEffectiveCost": amount, "ProviderName": ACCOUNT_NAME,
               "PublisherName": ACCOUNT_NAME,
               "InvoiceIssuerName": ACCOUNT_NAME,
               "ChargeDescription": f"Unattributed usage moved to shared costs, {statement.period}",
               **_department_columns(DepartmentInfo(UNATTRIBUTED, UNATTRIBUTED), None)}
    for line in statement.lines:
        parts = codes.parts(line)  # under each version of its codes, for its part of the usage
        for total, what, issuer in ((line.shared_cents, f"Shared costs allocated ({statement.method_applied})",
                                     ACCOUNT_NAME),
                                    (line.variance_cents, "Invoice variance allocated", _variance_issuer(statement))):
            for department, cents in split(total, parts):
                if cents == 0:
                    continue
                amount = _decimal(Decimal(cents).scaleb(-2))
                yield {**adjustment, "BilledCost": amount, "EffectiveCost": amount, "ListCost": amount,
                       "ContractedCost": amount, "PricingCurrencyEffectiveCost": amount, "ProviderName": issuer,
                       "PublisherName": issuer, "InvoiceIssuerName": issuer,
                       "ChargeDescription": f"{what}, {line.department.id}, {statement.period}",
                       **_department_columns(department, None)}


def _variance_issuer(statement: Statement) -> str:
    providers = {invoice.provider for invoice in statement.invoices}
    if len(providers) == 1:
        only = providers.pop()
        return _PROVIDERS.get(only, only)
    return ACCOUNT_NAME


_FORMULA = re.compile("(?:^|\0)[=+\\-@\t\r\n]")  # a cell that safe_cell may quote, among cells joined by NUL


def write_focus(statement: Statement, out: TextIO, list_prices: ListPrices | None = None) -> int:
    """Write the statement as FOCUS 1.2 CSV to ``out``; returns the number of rows."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    numeric = [name in _NUMERIC for name in COLUMNS]
    written = 0
    for row in focus_rows(statement, list_prices=list_prices):
        values = [row.get(name, "") for name in COLUMNS]
        if _FORMULA.search("\0".join(values)):  # one search a row; most rows have no cell to quote
            values = [safe_cell(value, numeric=flag) for value, flag in zip(values, numeric, strict=True)]
        writer.writerow(values)
        written += 1
    return written


def bundled_list_prices() -> ListPrices:
    """List prices from the bundled catalog (the providers' public prices): input, cached input, output."""
    catalog = bundled_catalog()

    def prices(model: str) -> tuple[Price, Price, Price] | None:
        spec = catalog.resolve(model)
        return None if spec is None else (spec.input, spec.cached_input or spec.input, spec.output)

    return prices


@functools.lru_cache(maxsize=1024)
def _sku_price_details(model: str, token_type: str, price_version: str) -> str:
    return json.dumps({"x_Model": model, "x_TokenType": token_type, "x_PriceVersion": price_version}, sort_keys=True)


@functools.lru_cache(maxsize=1024)
def _utc_month(at: datetime) -> tuple[datetime, datetime]:
    """The providers' billing period holding ``at``: its calendar month in UTC."""
    return month_bounds(f"{at.astimezone(UTC):%Y-%m}", ZoneInfo("UTC"))


def _decimal(value: Decimal) -> str:
    """A decimal with at least one digit after the point (``800000.0``), never an exponent: FOCUS
    readers type a column of whole numbers as integers, and these columns are decimal."""
    text = _plain(value)
    return text if "." in text else f"{text}.0"


def _decimal_usd(nanos: int) -> str:
    return _decimal(Decimal(nanos).scaleb(-9))


@functools.lru_cache(maxsize=4096)  # a few instants (days, months) on every row
def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


__all__ = ["COLUMNS", "MANDATORY", "TOKEN_TYPES", "TokenCharge", "bundled_list_prices", "focus_rows", "parse_price_version",
           "split_cost", "write_focus"]
