"""Exact money.

Amounts are integers of nano-dollars (1e-9 USD). Prices are quoted per million tokens with at
most three decimals in practice ($0.075 / 1M), which is 75 nano-dollars per token, so almost every
line item is exact with no rounding at all. Where a price has more decimals, a call's cost is
rounded *up* to the next nano-dollar, once per call: the gateway never under-reserves and never
undercharges by more than a billionth of a dollar. Integers keep counters exact in every store
(Redis scripts are exact up to 2**53 nano-dollars, about $9 million per counter and period).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANOS_PER_USD = 1_000_000_000


def usd_to_nanos(usd: Decimal | int | str) -> int:
    """Convert an exact USD amount to nano-dollars; refuses anything finer than a nano-dollar."""
    value = Decimal(usd) if not isinstance(usd, Decimal) else usd
    nanos = value * NANOS_PER_USD
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{usd} USD is not a whole number of nano-dollars")
    return int(nanos)


def nanos_to_usd(nanos: int) -> Decimal:
    """The exact Decimal USD value of an amount of nano-dollars."""
    return Decimal(nanos).scaleb(-9)


def format_usd(nanos: int) -> str:
    """Exact decimal string without exponent or trailing zeros: 4500 -> '0.0000045'."""
    text = format(nanos_to_usd(nanos), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def format_dollars(nanos: int) -> str:
    """Human money for messages: '$1,000.00' (rounded half-even to cents, for display only)."""
    cents = nanos_to_usd(nanos).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


class Price:
    """A price in USD per million tokens, held exactly.

    Internally an integer of pico-dollars (1e-12 USD) per token, which is exact for any price
    with up to six decimals per million tokens.
    """

    __slots__ = ("_picos", "usd_per_million")

    def __init__(self, usd_per_million: Decimal | int | str) -> None:
        value = Decimal(str(usd_per_million)) if not isinstance(usd_per_million, Decimal) else usd_per_million
        if value < 0:
            raise ValueError("a price cannot be negative")
        picos = value * 1_000_000
        if picos != picos.to_integral_value():
            raise ValueError(f"price {value} per 1M tokens has more than six decimals")
        self.usd_per_million = value
        self._picos = int(picos)

    @property
    def picos_per_token(self) -> int:
        """Pico-dollars (1e-12 USD) per token."""
        return self._picos

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Price) and other._picos == self._picos

    def __hash__(self) -> int:
        return hash(self._picos)

    def __repr__(self) -> str:
        return f"Price({str(self.usd_per_million)!r})"


def picos_to_nanos_ceil(picos: int) -> int:
    """Round an amount of pico-dollars up to whole nano-dollars."""
    return -((-picos) // 1000)


def cost_nanos(*lines: tuple[int, Price]) -> int:
    """Exact cost of (tokens, price) lines, rounded up once to whole nano-dollars."""
    return picos_to_nanos_ceil(sum(tokens * price.picos_per_token for tokens, price in lines))


def ceil_div(numerator: int, denominator: int) -> int:
    """Integer division rounding towards +infinity."""
    return -((-numerator) // denominator)


__all__ = [
    "NANOS_PER_USD",
    "Price",
    "ceil_div",
    "cost_nanos",
    "format_dollars",
    "format_usd",
    "nanos_to_usd",
    "picos_to_nanos_ceil",
    "usd_to_nanos",
]
