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
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
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


_safe_cell = functools.lru_cache(maxsize=65536)(safe_cell)  # names, days, models recur on many rows
_AT = {name: index for index, name in enumerate(COLUMNS)}


def _row(cells: dict[str, str], cell: Callable[[str], str]) -> list[str]:
    """``cells`` in column order ("" for the others), each through ``cell`` but the numbers."""
    return [cells.get(name, "") if name in _NUMERIC else cell(cells.get(name, "")) for name in COLUMNS]


@functools.lru_cache(maxsize=65536)  # names, days, models and tags recur on many rows
def _csv_cell(text: str) -> str:
    """``text`` made safe for a spreadsheet, as the csv module writes it in a row."""
    text = safe_cell(text)
    if _UNQUOTED.fullmatch(text):
        return text
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([text, ""])
    return out.getvalue()[:-2]  # less the empty cell's comma and the line end


_UNQUOTED = re.compile(r'[ !#-+\--~]*')  # printable ASCII but '"' and ',': the csv module writes it as it is


# The cells set per usage row and per token charge, by position: a row is its group's cells
# (already made safe) with these filled in. The numbers are plain decimals, which safe_cell keeps.
(_BILLED, _EFFECTIVE, _CURRENCY_EFFECTIVE, _LIST, _CONTRACTED, _LIST_UNIT, _CURRENCY_LIST_UNIT, _CONTRACTED_UNIT,
 _CURRENCY_CONTRACTED_UNIT, _CONSUMED, _PRICING_QUANTITY) = (_AT[name] for name in (
    "BilledCost", "EffectiveCost", "PricingCurrencyEffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice",
    "PricingCurrencyListUnitPrice", "ContractedUnitPrice", "PricingCurrencyContractedUnitPrice", "ConsumedQuantity",
    "PricingQuantity"))
_CHARGE_CELLS = ("ChargeDescription", "SkuId", "SkuPriceId", "SkuMeter", "SkuPriceDetails", "x_TokenType")
_CHARGE_AT = tuple(_AT[name] for name in _CHARGE_CELLS)
_GROUP_AT = tuple(_AT[name] for name in (
    "ChargeClass", "BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd", "ProviderName",
    "PublisherName", "InvoiceIssuerName", "InvoiceId", "ServiceName", "x_Model", "x_Tier", "x_PriceVersion"))


def focus_rows(statement: Statement, account_id: str = ACCOUNT_ID, account_name: str = ACCOUNT_NAME,
               list_prices: ListPrices | None = None) -> Iterator[dict[str, str]]:
    """The FOCUS rows of a statement by column name, as ``write_focus`` writes them."""
    for row in focus_values(statement, account_id, account_name, list_prices):
        yield dict(zip(COLUMNS, row, strict=True))


def focus_values(statement: Statement, account_id: str = ACCOUNT_ID, account_name: str = ACCOUNT_NAME,
                 list_prices: ListPrices | None = None) -> Iterator[list[str]]:
    """The FOCUS rows of a statement, each a list of cells in ``COLUMNS`` order made safe for a
    spreadsheet."""
    return _rows(statement, account_id, account_name, list_prices, _safe_cell)


def _rows(statement: Statement, account_id: str, account_name: str, list_prices: ListPrices | None,
          cell: Callable[[str], str]) -> Iterator[list[str]]:
    """The FOCUS rows of a statement, each a list of cells in ``COLUMNS`` order with every cell but
    the numbers (plain decimals) through ``cell``: its period's usage, the corrections of closed
    periods, then the allocated shared costs and invoice variance of each department line as rows
    of their own. ``list_prices`` gives a model's public list prices (ListCost); without it, or
    for a model it does not know, the prices charged are the list."""
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
    usage_row = _row({**common, "ChargeCategory": "Usage"}, cell)
    listed_by_model: dict[str, dict[str, Price]] = {}
    for usage in (*statement.usage, *statement.corrections):
        bounds = (statement.start, statement.end) if usage.corrects is None else month_bounds(usage.corrects, zone)
        start = max(datetime.combine(usage.day, time(), UTC), bounds[0])
        end = min(datetime.combine(usage.day + timedelta(days=1), time(), UTC), bounds[1])
        department = codes.on(departments.get(usage.department) or DepartmentInfo(usage.department, usage.department),
                              usage.day)
        provider = _PROVIDERS.get(usage.provider, usage.provider)
        listed_by_type = listed_by_model.get(usage.model)
        if listed_by_type is None:
            listed_prices = list_prices(usage.model) if list_prices is not None else None
            listed_by_type = listed_by_model[usage.model] = (
                dict(zip((INPUT, CACHED_INPUT, OUTPUT), listed_prices, strict=True)) if listed_prices else {})
        billing_start, billing_end = _utc_month(start)
        group = usage_row.copy()
        for at, value in zip(_GROUP_AT, (
                "" if usage.corrects is None else "Correction", _instant(billing_start), _instant(billing_end),
                _instant(start), _instant(end), provider, provider, provider, f"{usage.provider}-{billing_start:%Y-%m}",
                f"{provider} API", usage.model, "" if usage.tier is None else str(usage.tier), usage.price_version),
                strict=True):
            group[at] = cell(value)
        for at, value in _department_cells(department, usage.team, usage.user, usage.project, cell):
            group[at] = value
        for charge in split_cost(usage):
            tokens, price = charge.tokens, charge.price
            if tokens == 0 and charge.billed_nanos == 0:
                continue
            row = group.copy()
            billed = row[_BILLED] = row[_EFFECTIVE] = row[_CURRENCY_EFFECTIVE] = decimal_text(charge.billed_nanos, 9)
            if price is None:  # unknown prices: every cost is the billed one, no unit prices
                row[_LIST] = row[_CONTRACTED] = billed
            else:
                picos = price.picos_per_token
                list_picos = listed_by_type.get(charge.token_type, price).picos_per_token
                row[_CONTRACTED] = decimal_text(tokens * picos, 12)
                row[_LIST] = decimal_text(tokens * list_picos, 12)
                row[_LIST_UNIT] = row[_CURRENCY_LIST_UNIT] = _unit_price(list_picos)
                row[_CONTRACTED_UNIT] = row[_CURRENCY_CONTRACTED_UNIT] = _unit_price(picos)
            row[_CONSUMED] = f"{tokens}.0"
            row[_PRICING_QUANTITY] = decimal_text(tokens, 6)
            for at, value in zip(_CHARGE_AT, _charge_cells(usage.model, charge.token_type, usage.price_version,
                                                           usage.department, usage.corrects, cell), strict=True):
                row[at] = value
            yield row
    yield from _adjustment_rows(statement, common, codes, cell)


@functools.lru_cache(maxsize=4096)  # a few models, token types and price versions, on many rows
def _charge_cells(model: str, token_type: str, price_version: str, department: str, corrects: str | None,
                  cell: Callable[[str], str]) -> tuple[str, ...]:
    """The cells of a token charge that do not depend on its amounts, in ``_CHARGE_CELLS`` order."""
    description = f"{model} {_LABELS[token_type]} tokens, {department}"
    if corrects is not None:
        description = f"{description} (correction of {corrects})"
    cells = (description, f"{model}/{token_type}", f"{model}/{token_type}@{price_version}", _METERS[token_type],
             _sku_price_details(model, token_type, price_version), token_type)
    return tuple(cell(text) for text in cells)


@functools.lru_cache(maxsize=256)  # keyed by the integer: hashing a Price runs Python code
def _unit_price(picos_per_token: int) -> str:
    return decimal_text(picos_per_token, 6)  # USD per million tokens


@functools.lru_cache(maxsize=65536)  # the same department and team, user and project on many rows
def _department_cells(department: DepartmentInfo, team: str | None, user: str | None, project: str | None,
                      cell: Callable[[str], str]) -> tuple[tuple[int, str], ...]:
    """The department and tag cells of a row through ``cell``, by position."""
    return tuple((_AT[name], cell(value))
                 for name, value in _department_columns(department, team, user, project).items())


def _department_columns(department: DepartmentInfo, team: str | None, user: str | None,
                        project: str | None) -> dict[str, str]:
    tags = {"cost_center": department.cost_center, "gl_account": department.gl_account}
    if team is not None or user is not None or project is not None:
        tags |= {"team": team or "", "user": user or "", "project": project or ""}
    return {"SubAccountId": department.id, "SubAccountName": department.name,
            "Tags": json.dumps({k: v for k, v in tags.items() if v}, sort_keys=True),
            "x_DepartmentId": department.id, "x_DepartmentName": department.name,
            "x_CostCenter": department.cost_center, "x_GlAccount": department.gl_account}


def _adjustment_rows(statement: Statement, common: dict[str, str], codes: CodeBook,
                     cell: Callable[[str], str]) -> Iterator[list[str]]:
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
        amount = decimal_text(-unattributed, 9)
        yield _row({**adjustment, "BilledCost": amount, "EffectiveCost": amount, "ListCost": amount,
                    "ContractedCost": amount, "PricingCurrencyEffectiveCost": amount, "ProviderName": ACCOUNT_NAME,
                    "PublisherName": ACCOUNT_NAME,
                    "InvoiceIssuerName": ACCOUNT_NAME,
                    "ChargeDescription": f"Unattributed usage moved to shared costs, {statement.period}",
                    **_department_columns(DepartmentInfo(UNATTRIBUTED, UNATTRIBUTED), None, None, None)}, cell)
    for line in statement.lines:
        parts = codes.parts(line)  # under each version of its codes, for its part of the usage
        for total, what, issuer in ((line.shared_cents, f"Shared costs allocated ({statement.method_applied})",
                                     ACCOUNT_NAME),
                                    (line.variance_cents, "Invoice variance allocated", _variance_issuer(statement))):
            for department, cents in split(total, parts):
                if cents == 0:
                    continue
                amount = decimal_text(cents, 2)
                yield _row({**adjustment, "BilledCost": amount, "EffectiveCost": amount, "ListCost": amount,
                            "ContractedCost": amount, "PricingCurrencyEffectiveCost": amount, "ProviderName": issuer,
                            "PublisherName": issuer, "InvoiceIssuerName": issuer,
                            "ChargeDescription": f"{what}, {line.department.id}, {statement.period}",
                            **_department_columns(department, None, None, None)}, cell)


def _variance_issuer(statement: Statement) -> str:
    providers = {invoice.provider for invoice in statement.invoices}
    if len(providers) == 1:
        only = providers.pop()
        return _PROVIDERS.get(only, only)
    return ACCOUNT_NAME


def write_focus(statement: Statement, out: TextIO, list_prices: ListPrices | None = None) -> int:
    """Write the statement as FOCUS 1.2 CSV to ``out``; returns the number of rows."""
    csv.writer(out, lineterminator="\n").writerow(COLUMNS)
    # Cells are quoted as the csv module would, once per distinct text (cached), and rows joined
    # here: csv.writer re-scanned every character of every row.
    written = 0
    for row in _rows(statement, ACCOUNT_ID, ACCOUNT_NAME, list_prices, _csv_cell):
        out.write(",".join(row))
        out.write("\n")
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


def decimal_text(units: int, scale: int) -> str:
    """``units`` x 10^-``scale`` as a decimal with at least one digit after the point
    (``800000.0``) and no exponent or trailing zeros: FOCUS readers type a column of whole numbers
    as integers, and these columns are decimal. Integer arithmetic: it runs for every cell."""
    whole, fraction = divmod(-units if units < 0 else units, 10**scale)
    sign = "-" if units < 0 else ""
    if fraction == 0:
        return f"{sign}{whole}.0"
    return f"{sign}{whole}." + f"{fraction:0{scale}d}".rstrip("0")


@functools.lru_cache(maxsize=4096)  # a few instants (days, months) on every row
def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["COLUMNS", "MANDATORY", "TOKEN_TYPES", "TokenCharge", "bundled_list_prices", "decimal_text", "focus_rows",
           "focus_values", "parse_price_version", "split_cost", "write_focus"]
