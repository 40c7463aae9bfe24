"""The shared-costs file of a chargeback statement: how shared costs are split, and which ones.

YAML (or JSON, which is YAML) with three optional keys::

    method: proportional        # proportional (default) | even | fixed
    weights: {ENGINEERING: 3, MARKETING: 1}   # fixed only: department -> weight >= 0
    items:
      - {name: Platform fee, amount_usd: 500.00}

Numbers are read from their source text into exact Decimals. Every problem is reported at once,
with its path and line, as ``SharedCostsError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from costwarden.core.money import NANOS_PER_USD
from costwarden.errors import InvalidRequest
from costwarden.policy.fields import SCOPE_ID
from costwarden.policy.problems import Path, Problem, Problems, describe
from costwarden.policy.yamlnodes import UnreadableFile, YamlSyntaxError, parse_yaml, read_text

PROPORTIONAL, EVEN, FIXED = "proportional", "even", "fixed"
METHODS = (PROPORTIONAL, EVEN, FIXED)
_KEYS = ("method", "weights", "items")
_ITEM_KEYS = ("name", "amount_usd")


class SharedCostsError(InvalidRequest):
    """A shared-costs file or an amount that cannot be used; ``problems`` lists every error."""

    code = "invalid_shared_costs"

    def __init__(self, problems: list[str], source: str = "shared costs") -> None:
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class SharedItem:
    """A named shared cost (platform fee, vector database...) in nano-dollars."""

    name: str
    nanos: int


@dataclass(frozen=True, slots=True)
class SharedCosts:
    """How shared costs are allocated, and the named items to allocate (besides unattributed spend)."""

    method: str = PROPORTIONAL
    weights: Mapping[str, Decimal] = field(default_factory=dict)
    items: tuple[SharedItem, ...] = ()

    @property
    def items_nanos(self) -> int:
        return sum(item.nanos for item in self.items)


def load_shared_costs(path: str | os.PathLike[str]) -> SharedCosts:
    """Read and validate a shared-costs file; raises SharedCostsError listing every problem."""
    name = os.fspath(path)
    try:
        text = read_text(path, "shared-costs file")
    except UnreadableFile as exc:
        raise SharedCostsError([str(exc)], source=name) from None
    return parse_shared_costs(text, source=name)


def parse_shared_costs(text: str, source: str = "shared costs") -> SharedCosts:
    """Validate shared-costs YAML or JSON text; raises SharedCostsError listing every problem."""
    try:
        document = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise SharedCostsError([f"syntax error: {exc}"], source=source) from exc
    data = document.data
    if not isinstance(data, dict):
        got = "the file is empty" if data is None else f"got {describe(data)}"
        raise SharedCostsError([str(Problem((), f"must be a mapping with method, weights and items ({got})", 1))],
                               source=source)
    problems = Problems(document.lines)
    for problem in document.problems:
        problems.add(problem.path, problem.message, problem.line)
    for key in data:
        if key not in _KEYS:
            problems.add((key,), f"unknown key {key!r}; allowed keys: {', '.join(_KEYS)}")
    method = _method(data.get("method", PROPORTIONAL), problems)
    weights = _weights(data.get("weights"), method, problems)
    items = _items(data.get("items"), problems)
    if problems:
        raise SharedCostsError(problems.messages(), source=source)
    return SharedCosts(method=method, weights=weights, items=items)


def _method(value: Any, problems: Problems) -> str:
    if value not in METHODS:
        problems.add(("method",), f"must be one of {', '.join(METHODS)} (got {describe(value)})")
        return PROPORTIONAL
    return str(value)


def _weights(value: Any, method: str, problems: Problems) -> dict[str, Decimal]:
    if value is None:
        if method == FIXED:
            problems.add(("method",), "method fixed needs weights: {DEPARTMENT: weight, ...}")
        return {}
    if method != FIXED:
        problems.add(("weights",), f"weights apply to method fixed only (method is {method})")
        return {}
    if not isinstance(value, dict) or not value:
        problems.add(("weights",), f"must map departments to weights (got {describe(value)})")
        return {}
    weights: dict[str, Decimal] = {}
    for department, weight in value.items():
        path: Path = ("weights", department)
        if not SCOPE_ID.fullmatch(department):
            problems.add(path, f"{department!r} is not a department id (upper case, e.g. ENGINEERING)")
        if isinstance(weight, bool) or not isinstance(weight, Decimal | int):
            problems.add(path, f"must be a number (got {describe(weight)})")
        elif weight < 0:
            problems.add(path, "must be >= 0")
        else:
            weights[department] = Decimal(weight)
    if weights and len(weights) == len(value) and not any(weights.values()):
        problems.add(("weights",), "at least one weight must be > 0")
    return weights


def _items(value: Any, problems: Problems) -> tuple[SharedItem, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.add(("items",), f"must be a list of {{name, amount_usd}} (got {describe(value)})")
        return ()
    items = []
    for index, item in enumerate(value):
        path: Path = ("items", index)
        if not isinstance(item, dict):
            problems.add(path, f"must be a mapping with name and amount_usd (got {describe(item)})")
            continue
        for key in item:
            if key not in _ITEM_KEYS:
                problems.add((*path, key), f"unknown key {key!r}; allowed keys: {', '.join(_ITEM_KEYS)}")
        name, amount = item.get("name"), item.get("amount_usd")
        if not isinstance(name, str) or not name.strip():
            problems.add((*path, "name"), "is required" if name is None else f"must be text (got {describe(name)})")
        nanos = None
        if amount is None:
            problems.add((*path, "amount_usd"), "is required")
        elif isinstance(amount, bool) or not isinstance(amount, Decimal | int):
            problems.add((*path, "amount_usd"), f"must be a number (got {describe(amount)})")
        else:
            nanos = _nanos(Decimal(amount))
            if nanos is None:
                problems.add((*path, "amount_usd"), f"{amount} has more than 9 decimals")
        if isinstance(name, str) and name.strip() and nanos is not None:
            items.append(SharedItem(name.strip(), nanos))
    return tuple(items)


def _nanos(amount: Decimal) -> int | None:
    nanos = amount * NANOS_PER_USD
    return int(nanos) if nanos == nanos.to_integral_value() else None


def parse_usd(text: str, what: str = "amount") -> int:
    """An exact USD amount given as text (``12345.67``, ``$12,345.67``) in nano-dollars.

    Raises SharedCostsError naming ``what`` when the text is not a finite amount >= 0 with at most
    nine decimals.
    """
    clean = text.strip().removeprefix("$").replace(",", "").replace("_", "")
    try:
        amount = Decimal(clean)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or clean.lower().lstrip("+-").startswith(("inf", "nan")):
        raise SharedCostsError([f"{text!r} is not an amount in USD (e.g. 12345.67)"], source=what)
    if amount < 0:
        raise SharedCostsError([f"{text} is negative; give the amount invoiced, >= 0"], source=what)
    nanos = _nanos(amount)
    if nanos is None:
        raise SharedCostsError([f"{text} has more than 9 decimals"], source=what)
    if nanos >= 2**63:
        raise SharedCostsError([f"{text} is too large"], source=what)
    return nanos


__all__ = [
    "EVEN",
    "FIXED",
    "METHODS",
    "PROPORTIONAL",
    "SharedCosts",
    "SharedCostsError",
    "SharedItem",
    "load_shared_costs",
    "parse_shared_costs",
    "parse_usd",
]
