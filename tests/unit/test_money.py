from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwarden.core.money import Price, cost_nanos, format_dollars, format_usd, nanos_to_usd, usd_to_nanos

nanos = st.integers(min_value=0, max_value=10**17)
prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
tokens = st.integers(min_value=0, max_value=10**9)


@given(nanos)
def test_format_usd_is_exact_and_has_no_exponent(amount: int) -> None:
    text = format_usd(amount)
    assert "e" not in text.lower()
    assert usd_to_nanos(Decimal(text)) == amount


def test_format_usd_examples() -> None:
    assert format_usd(0) == "0"
    assert format_usd(2000) == "0.000002"
    assert format_usd(4500) == "0.0000045"
    assert format_usd(1_000_000_000) == "1"
    assert format_usd(1_234_500_000_000) == "1234.5"


def test_format_dollars() -> None:
    assert format_dollars(1_000 * 10**9) == "$1,000.00"
    assert format_dollars(812_400_000_000) == "$812.40"


@given(prices, prices, prices, tokens, tokens, tokens)
def test_cost_is_the_exact_decimal_rounded_up_once(p_in: Decimal, p_out: Decimal, p_cached: Decimal, n_in: int,
                                                   n_out: int, n_cached: int) -> None:
    exact = (Decimal(n_in) * p_in + Decimal(n_out) * p_out + Decimal(n_cached) * p_cached) / 1_000_000
    got = cost_nanos((n_in, Price(p_in)), (n_out, Price(p_out)), (n_cached, Price(p_cached)))
    as_usd = nanos_to_usd(got)
    assert as_usd >= exact
    assert as_usd - exact < Decimal("1e-9")


@given(st.lists(st.tuples(tokens, prices), max_size=8))
def test_one_rounding_per_call_never_exceeds_rounding_per_line(lines: list[tuple[int, Decimal]]) -> None:
    total = cost_nanos(*[(n, Price(p)) for n, p in lines])
    per_line = sum(cost_nanos((n, Price(p))) for n, p in lines)
    assert per_line - len(lines) < total <= per_line or total == per_line == 0


def test_price_refuses_negative_and_too_fine() -> None:
    with pytest.raises(ValueError):
        Price("-1")
    with pytest.raises(ValueError):
        Price("0.0000001")
    assert Price("0.075").picos_per_token == 75_000


def test_usd_to_nanos_refuses_sub_nano() -> None:
    with pytest.raises(ValueError):
        usd_to_nanos(Decimal("0.0000000001"))
    assert usd_to_nanos("1000") == 1_000_000_000_000
