"""Exact allocation, statement rounding, the cost split by token type, and the shared-costs file."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.core.catalog import ModelSpec
from costwarden.core.money import Price
from costwarden.core.policy import UNATTRIBUTED
from costwarden.reports import codec
from costwarden.reports.allocation import allocate, apportion, cents_to_text, nanos_to_cents
from costwarden.reports.chargeback import compute_statement
from costwarden.reports.focus import CACHED_INPUT, INPUT, OUTPUT, parse_price_version, split_cost
from costwarden.reports.shared import SharedCosts, SharedCostsError, SharedItem, parse_shared_costs, parse_usd
from costwarden.reports.statement import Counts, DepartmentInfo, UsageRow

amounts = st.integers(min_value=-(10**15), max_value=10**15)
weight_lists = st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=30).filter(any)


# -- allocate / apportion ---------------------------------------------------------------------------


@given(amounts, weight_lists)
def test_allocation_adds_up_and_each_line_is_within_a_unit_of_its_share(amount: int, weights: list[int]) -> None:
    lines = allocate(amount, weights)
    assert sum(lines) == amount
    total = sum(weights)
    for line, weight in zip(lines, weights, strict=True):
        assert abs(line - Fraction(amount * weight, total)) < 1
        if weight == 0:
            assert line == 0


@given(amounts, weight_lists)
def test_allocation_is_deterministic_and_exact_shares_are_kept(amount: int, weights: list[int]) -> None:
    assert allocate(amount, weights) == allocate(amount, list(weights))
    scaled = [w * 7 for w in weights]  # the same proportions give the same lines
    assert allocate(amount, scaled) == allocate(amount, weights)
    whole = sum(weights)
    exact = [Fraction(amount * w, whole) for w in weights]
    for line, share in zip(allocate(amount, weights), exact, strict=True):
        if share.denominator == 1:
            assert line == share


@given(st.integers(min_value=0, max_value=10**9),
       st.lists(st.decimals(min_value=0, max_value=1000, places=3, allow_nan=False, allow_infinity=False),
                min_size=1, max_size=12).filter(any))
def test_allocation_takes_decimal_weights(amount: int, weights: list[Decimal]) -> None:
    lines = allocate(amount, weights)
    assert sum(lines) == amount
    assert all(abs(line - amount * Fraction(w) / sum(map(Fraction, weights))) < 1
               for line, w in zip(lines, weights, strict=True))


@given(st.lists(st.fractions(min_value=-(10**6), max_value=10**6, max_denominator=10**7), min_size=1, max_size=40))
def test_apportion_rounds_shares_to_their_rounded_sum(shares: list[Fraction]) -> None:
    total = round(sum(shares, Fraction(0)))
    lines = apportion(total, shares)
    assert sum(lines) == total
    assert all(abs(line - share) < 1 for line, share in zip(lines, shares, strict=True))


def test_allocation_examples_and_refusals() -> None:
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    assert allocate(-100, [1, 1, 1]) == [-33, -33, -34]
    assert allocate(5, [0, 3, 0, 1]) == [0, 4, 0, 1]
    assert allocate(0, [0, 0]) == [0, 0]
    with pytest.raises(ValueError, match="all zero"):
        allocate(1, [0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        allocate(1, [2, -1])
    with pytest.raises(ValueError):
        apportion(10, [Fraction(1), Fraction(1)])


def test_money_text() -> None:
    assert [cents_to_text(c) for c in (0, 5, -5, 123456, -100)] == ["0.00", "0.05", "-0.05", "1234.56", "-1.00"]
    assert nanos_to_cents(5_000_000) == 0 and nanos_to_cents(15_000_000) == 2 and nanos_to_cents(15_000_001) == 2
    assert nanos_to_cents(-25_000_000) == -2


# -- statements ----------------------------------------------------------------------------------------

DEPTS = ("ENG", "HR", "MKT", "OPS")
START, END = datetime(2026, 10, 1, 4, tzinfo=UTC), datetime(2026, 11, 1, 4, tzinfo=UTC)
NOW = datetime(2026, 11, 2, tzinfo=UTC)
usage_rows = st.lists(
    st.tuples(st.sampled_from((*DEPTS, "GONE", UNATTRIBUTED)), st.integers(min_value=0, max_value=10**13),
              st.integers(min_value=1, max_value=28)),
    max_size=25)
item_amounts = st.lists(st.integers(min_value=-(10**11), max_value=10**13), max_size=3)


def make_usage(department: str, cost: int, day: int = 1, model: str = "m", corrects: str | None = None) -> UsageRow:
    return UsageRow(date(2026, 10, day), department, model, "openai", "1/-/2@x",
                 Counts(1, 10, 0, 5, cost), tier=1, corrects=corrects)


def infos() -> list[DepartmentInfo]:
    return [DepartmentInfo("ENG", "Engineering", "CC1", "GL1", 5_000 * 10**9), DepartmentInfo("HR", "HR"),
            DepartmentInfo("MKT", "Marketing", budget_nanos=10**9), DepartmentInfo("OPS", "Ops")]


@settings(max_examples=300)
@given(usage_rows, item_amounts, st.sampled_from(("proportional", "even", "fixed")),
       st.none() | st.integers(min_value=0, max_value=10**14))
def test_statement_lines_add_up_to_the_ledger_or_the_invoice(rows: list[tuple[str, int, int]], items: list[int],
                                                             method: str, invoice: int | None) -> None:
    usage = [make_usage(dept, cost, day) for dept, cost, day in rows]
    shared = SharedCosts(method=method, weights={"ENG": Decimal(2), "OPS": Decimal("0.5")} if method == "fixed" else {},
                         items=tuple(SharedItem(f"item {i}", n) for i, n in enumerate(items)))
    statement = compute_statement("2026-10", "America/New_York", START, END, infos(), usage, {"HR": 3},
                                  shared, NOW, invoice_nanos=invoice)
    lines_nanos = sum(cost for dept, cost, _ in rows if dept != UNATTRIBUTED)
    everything = sum(cost for _, cost, _ in rows) + sum(items)
    assert statement.usage_cents == nanos_to_cents(lines_nanos)
    expected_total = nanos_to_cents(everything) if invoice is None else nanos_to_cents(invoice)
    assert statement.total_cents == expected_total
    ids = [line.department.id for line in statement.lines]
    assert ids == sorted(ids) and set(DEPTS) <= set(ids) and UNATTRIBUTED not in ids
    for line in statement.lines:
        assert abs(line.usage_cents * 10**7 - line.usage.cost_nanos) < 10**7
        assert line.total_cents == line.usage_cents + line.shared_cents + line.variance_cents
    if lines_nanos:
        assert sum(line.share_bp for line in statement.lines) == 10_000
    if method == "fixed":
        assert {line.department.id for line in statement.lines if line.shared_cents or line.variance_cents} <= {"ENG", "OPS"}
    if invoice is None:
        assert statement.variance_cents == 0
    assert codec.loads(codec.dumps(statement)) == statement


def test_proportional_shares_follow_usage_and_idle_departments_pay_nothing() -> None:
    usage = [make_usage("ENG", 3 * 10**9), make_usage("MKT", 10**9), make_usage(UNATTRIBUTED, 2 * 10**9)]
    statement = compute_statement("2026-10", "UTC", START, END, infos(), usage, {}, SharedCosts(
        items=(SharedItem("Platform fee", 2 * 10**9),)), NOW)
    by_id = {line.department.id: line for line in statement.lines}
    assert (by_id["ENG"].usage_cents, by_id["ENG"].shared_cents, by_id["ENG"].total_cents) == (300, 300, 600)
    assert (by_id["MKT"].shared_cents, by_id["HR"].shared_cents, by_id["OPS"].total_cents) == (100, 0, 0)
    assert (by_id["ENG"].share_bp, by_id["MKT"].share_bp) == (7500, 2500)
    assert by_id["ENG"].utilization_bp == 6 and by_id["MKT"].utilization_bp == 10_000  # $3 of $5,000; $1 of $1
    assert by_id["HR"].utilization_bp is None and statement.method_applied == "proportional"


def test_without_usage_proportional_falls_back_to_even() -> None:
    statement = compute_statement("2026-10", "UTC", START, END, infos(), [], {},
                                  SharedCosts(items=(SharedItem("fee", 10**9),)), NOW)
    assert statement.method_applied == "even"
    assert [line.shared_cents for line in statement.lines] == [25, 25, 25, 25]


def test_fixed_weights_must_name_departments_on_the_statement() -> None:
    shared = SharedCosts(method="fixed", weights={"LEGAL": Decimal(1)}, items=(SharedItem("fee", 10**9),))
    with pytest.raises(SharedCostsError, match="LEGAL has no line"):
        compute_statement("2026-10", "UTC", START, END, infos(), [], {}, shared, NOW)


def test_corrections_are_lines_of_their_own_without_shared_costs() -> None:
    usage = [make_usage("ENG", 10**9)]
    late = [make_usage("HR", 5 * 10**8, corrects="2026-09"), make_usage(UNATTRIBUTED, 10**9, corrects="2026-09")]
    statement = compute_statement("2026-10", "UTC", START, END, infos(), usage, {"HR": 1}, SharedCosts(), NOW,
                                  corrections=late)
    correction = statement.lines[-1]
    assert (correction.kind, correction.corrects, correction.department.id) == ("correction", "2026-09", "HR")
    assert (correction.usage_cents, correction.shared_cents, correction.rejected) == (50, 0, 0)
    assert statement.unattributed.cost_nanos == 10**9
    assert statement.total_cents == 250  # $1 usage + $0.50 correction + $1 late unattributed, shared


# -- the cost split by token type -------------------------------------------------------------------

price = st.decimals(min_value=0, max_value=100, places=3, allow_nan=False, allow_infinity=False)
calls = st.lists(st.tuples(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=10**7),
                           st.integers(min_value=0, max_value=10**6)), min_size=1, max_size=20)


@given(price, st.none() | price, price, calls)
def test_split_adds_up_exactly_to_the_ledger_cost(input_price: Decimal, cached_price: Decimal | None,
                                                  output_price: Decimal, events: list[tuple[int, int, int]]) -> None:
    spec = ModelSpec("m", "openai", 1, Price(input_price), Price(output_price),
                     None if cached_price is None else Price(cached_price), as_of="2025-08-07")
    charged = [(inp + cached, cached, out, spec.cost(inp + cached, out, cached)) for inp, cached, out in events]
    counts = Counts(len(charged), sum(c[0] for c in charged), sum(c[1] for c in charged),
                    sum(c[2] for c in charged), sum(c[3] for c in charged))
    usage = UsageRow(date(2026, 10, 1), "ENG", "m", "openai", spec.price_version, counts)
    split = {charge.token_type: charge for charge in split_cost(usage)}
    assert sum(charge.billed_nanos for charge in split.values()) == counts.cost_nanos
    uncached = counts.input_tokens - counts.cached_input_tokens
    assert split[INPUT].tokens == uncached and split[CACHED_INPUT].tokens == counts.cached_input_tokens
    cached_picos = (spec.cached_input or spec.input).picos_per_token
    assert split[INPUT].billed_nanos == uncached * spec.input.picos_per_token // 1000
    assert split[CACHED_INPUT].billed_nanos == counts.cached_input_tokens * cached_picos // 1000
    exact_output = counts.output_tokens * spec.output.picos_per_token
    assert 0 <= split[OUTPUT].billed_nanos * 1000 - exact_output < 1000 * (len(events) + 2)


def test_price_versions() -> None:
    assert parse_price_version("0.15/0.075/0.60@2025-08-07") == (Price("0.15"), Price("0.075"), Price("0.60"))
    assert parse_price_version("3/-/15@policy") == (Price(3), Price(3), Price(15))
    assert parse_price_version("") is None and parse_price_version("a/b/c@x") is None
    unknown = split_cost(UsageRow(date(2026, 10, 1), "ENG", "m", "openai", "p1", Counts(1, 10, 2, 3, 999)))
    assert [(c.token_type, c.tokens, c.billed_nanos, c.price) for c in unknown] == [
        (INPUT, 8, 0, None), (CACHED_INPUT, 2, 0, None), (OUTPUT, 3, 999, None)]


# -- the shared-costs file ----------------------------------------------------------------------------


def test_shared_costs_file_is_read_exactly() -> None:
    shared = parse_shared_costs("method: fixed\nweights: {ENGINEERING: 3, SALES: 0.5}\n"
                                "items:\n  - {name: Platform fee, amount_usd: 500.10}\n  - {name: Credit, amount_usd: -0.000000001}\n")
    assert shared.method == "fixed" and shared.weights == {"ENGINEERING": Decimal(3), "SALES": Decimal("0.5")}
    assert shared.items == (SharedItem("Platform fee", 500_100_000_000), SharedItem("Credit", -1))
    as_json = parse_shared_costs('{"method": "even", "items": [{"name": "fee", "amount_usd": 0.1}]}')
    assert as_json == SharedCosts("even", {}, (SharedItem("fee", 100_000_000),))
    assert parse_shared_costs("{}") == SharedCosts()


def test_shared_costs_file_lists_every_problem_with_its_line() -> None:
    with pytest.raises(SharedCostsError) as caught:
        parse_shared_costs("method: weighted\nweights: {eng: x}\nitems:\n  - {name: fee, amount_usd: lots}\n"
                           "  - {amount_usd: 1.0000000001, colour: red}\ntotal: 3\n", source="s.yaml")
    problems = caught.value.problems
    assert caught.value.message.startswith("s.yaml is invalid:")
    assert "method: must be one of proportional, even, fixed (got 'weighted') (line 1)" in problems
    assert "weights: weights apply to method fixed only (method is proportional) (line 2)" in problems
    assert "items[0].amount_usd: must be a number (got 'lots') (line 4)" in problems
    assert "items[1].name: is required (line 5)" in problems
    assert "items[1].amount_usd: 1.0000000001 has more than 9 decimals (line 5)" in problems
    assert any(p.startswith("items[1].colour: unknown key 'colour'") for p in problems)
    assert "total: unknown key 'total'; allowed keys: method, weights, items (line 6)" in problems


@pytest.mark.parametrize(("text", "message"), [
    ("", "the file is empty"),
    ("- 1\n", "must be a mapping"),
    ("method: fixed\n", "method fixed needs weights"),
    ("method: fixed\nweights: {ENG: 0}\n", "at least one weight must be > 0"),
    ("method: fixed\nweights: {ENG: -1}\n", "weights.ENG: must be >= 0"),
    ("items: {name: x}\n", "items: must be a list"),
    ("method: [\n", "syntax error"),
])
def test_shared_costs_file_refusals(text: str, message: str) -> None:
    with pytest.raises(SharedCostsError, match=message):
        parse_shared_costs(text)


def test_usd_amounts() -> None:
    assert parse_usd("1234.56") == 1_234_560_000_000 and parse_usd("$1,000") == 10**12 and parse_usd("0") == 0
    for bad in ("abc", "-5", "1e400000", "nan", "0.0000000001", ""):
        with pytest.raises(SharedCostsError):
            parse_usd(bad)
