"""Exact allocation of an amount over lines, rounded so that the lines add up to the total.

Amounts are integers of a small unit (cents on a statement). Each line's exact share is a
``Fraction``; the shares are rounded by the largest-remainder method (Hamilton's): every line gets
the floor of its share, and the units left over go to the lines with the largest fractional parts,
ties broken by line order. The result adds up exactly to the total, every line is within one unit
of its exact share, a line whose share is a whole number gets exactly that, and the same input
always gives the same output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import Decimal
from fractions import Fraction

NANOS_PER_CENT = 10_000_000
BASIS_POINTS = 10_000  # 100.00 %

Weight = int | Decimal | Fraction


def apportion(total: int, shares: Sequence[Fraction]) -> list[int]:
    """Round ``shares`` to integers that add up to ``total`` (largest remainder).

    ``total`` must lie between the sum of the floors of the shares and that sum plus the number of
    shares, which holds whenever it is the sum of the shares rounded to an integer.
    """
    floors = [math.floor(share) for share in shares]
    left = total - sum(floors)
    if not 0 <= left <= len(shares):
        raise ValueError(f"cannot round {len(shares)} shares summing to {sum(shares, Fraction(0))} to {total}")
    order = sorted(range(len(shares)), key=lambda i: (floors[i] - shares[i], i))  # largest remainder first
    for index in order[:left]:
        floors[index] += 1
    return floors


def allocate(amount: int, weights: Sequence[Weight]) -> list[int]:
    """Split ``amount`` over lines in proportion to non-negative ``weights``, exactly.

    Raises ValueError when a weight is negative or when every weight is zero (and the amount is not).
    """
    exact = [Fraction(weight) for weight in weights]
    if any(weight < 0 for weight in exact):
        raise ValueError("allocation weights must be >= 0")
    whole = sum(exact, Fraction(0))
    if whole == 0:
        if amount == 0:
            return [0] * len(exact)
        raise ValueError("cannot allocate an amount over weights that are all zero")
    return apportion(amount, [amount * weight / whole for weight in exact])


def round_half_even(value: Fraction) -> int:
    """``value`` rounded to the nearest integer, ties to even (banker's rounding)."""
    return round(value)


def nanos_to_cents(nanos: int) -> int:
    """Nano-dollars rounded half-even to whole cents."""
    return round_half_even(Fraction(nanos, NANOS_PER_CENT))


def cents_to_text(cents: int) -> str:
    """Cents as a decimal string with exactly two decimals: 123456 -> '1234.56', -5 -> '-0.05'."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def basis_points_to_text(points: int) -> str:
    """A percentage held in basis points, with two decimals: 8124 -> '81.24'."""
    return cents_to_text(points)


__all__ = [
    "BASIS_POINTS",
    "NANOS_PER_CENT",
    "allocate",
    "apportion",
    "basis_points_to_text",
    "cents_to_text",
    "nanos_to_cents",
    "round_half_even",
]
