"""FOCUS cells: decimals formatted from integers equal the Decimal formatting they replace, every
free-text cell is neutralised for spreadsheets, and the rows are written as the csv module would."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.core.csvsafe import safe_cell
from costwarden.core.money import Price
from costwarden.reports.chargeback import compute_statement
from costwarden.reports.focus import COLUMNS, decimal_text, focus_rows, focus_values, write_focus
from costwarden.reports.shared import SharedCosts
from costwarden.reports.statement import Counts, DepartmentInfo, Statement, UsageRow

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
NUMERIC = {"BilledCost", "EffectiveCost", "ListCost", "ContractedCost", "ListUnitPrice", "ContractedUnitPrice",
           "ConsumedQuantity", "PricingQuantity", "PricingCurrencyContractedUnitPrice",
           "PricingCurrencyEffectiveCost", "PricingCurrencyListUnitPrice"}


def decimal_reference(value: Decimal) -> str:
    """The formatting through Decimal that FOCUS files were written with before."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    text = text or "0"
    return text if "." in text else f"{text}.0"


@given(st.integers(min_value=-10**20, max_value=10**20), st.sampled_from([0, 2, 6, 9, 12]))
def test_decimal_text_is_the_decimal_formatting(units: int, scale: int) -> None:
    assert decimal_text(units, scale) == decimal_reference(Decimal(units).scaleb(-scale))


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
       st.sampled_from(["", "0", "000"]))
def test_unit_prices_read_as_the_decimal_they_were_given(usd: Decimal, zeros: str) -> None:
    text = f"{usd}{zeros if '.' in str(usd) else ''}"  # trailing zeros as a policy may write them
    price = Price(text)
    assert decimal_text(price.picos_per_token, 6) == decimal_reference(price.usd_per_million)


def statement_of(department: str, team: str, user: str, project: str, model: str, price_version: str) -> Statement:
    usage = [
        UsageRow(date(2026, 11, 3), department, model, "openai", price_version,
                 Counts(2, 3_000, 1_000, 500, 1_234_567), tier=1, team=team, user=user, project=project),
        UsageRow(date(2026, 11, 4), department, model, "openai", "not a price", Counts(1, 10, 0, 5, -7)),
    ]
    infos = [DepartmentInfo(department, department, cost_center=team, gl_account=user)]
    return compute_statement("2026-11", "UTC", START, END, infos, usage, {}, SharedCosts(), START)


HOSTILE = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2", "@SUM(A1)", "\tx", "\r\n=1", "\n-1", "a,b", 'say "hi"',
           "ünïcødé", "=cmd|' /C calc'!A0"]


def written_by_csv_module(statement: Statement) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(focus_values(statement))
    return out.getvalue()


def test_hostile_names_tags_and_models_are_quoted_for_spreadsheets() -> None:
    for text in HOSTILE:
        out = io.StringIO()
        statement = statement_of(text, text, text, text, text, f"{text}/1/2@x")
        write_focus(statement, out)
        assert out.getvalue() == written_by_csv_module(statement)
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        usage = [row for row in rows if row["ChargeCategory"] == "Usage"]
        assert usage and all(row["x_Tier"] == "1" or row["x_Tier"] == "" for row in usage)
        for row in rows:
            for name, cell in row.items():
                assert name in NUMERIC or not cell.startswith(TRIGGERS), (name, cell)
        first = usage[0]
        for name in ("SubAccountId", "SubAccountName", "x_DepartmentId", "x_CostCenter", "x_GlAccount", "x_Model",
                     "SkuId", "SkuPriceId", "ChargeDescription", "x_PriceVersion"):
            assert first[name].startswith(safe_cell(text)), (name, first[name])
        assert '"team": ' in first["Tags"] and first["BilledCost"].replace(".", "").isdigit()


cells = st.text(st.sampled_from(list("=+-@\t\r\n,\"' a;\u00e9\x00")) | st.characters(), max_size=12)


@settings(max_examples=60, deadline=None)
@given(cells.filter(bool), cells, cells, cells)
def test_the_file_is_what_the_csv_module_writes_of_the_neutralised_rows(department: str, team: str, user: str,
                                                                       project: str) -> None:
    statement = statement_of(department, team or "t", user or "u", project or "p", f"m{team}", "1/0.5/2@x")
    out = io.StringIO()
    written = write_focus(statement, out)
    rows = list(focus_values(statement))
    assert out.getvalue() == written_by_csv_module(statement) and written == len(rows)
    for row in rows:
        assert all(name in NUMERIC or not cell.startswith(TRIGGERS) for name, cell in zip(COLUMNS, row, strict=True))
    assert [list(row.values()) for row in focus_rows(statement)] == rows
