"""A statement's department lines broken down by team, user or project tag.

Each sub-row carries its exact ledger cost and a share of its line's rounded usage cost: the
line's cents are spread over its sub-rows by largest remainder on their exact costs, so the
sub-rows of a line add up exactly to the line's ``usage_cost_usd``. Calls without the dimension
are shown as ``(none)``.
"""

from __future__ import annotations

from collections import defaultdict
from enum import StrEnum
from fractions import Fraction

from costwarden.core.money import format_usd
from costwarden.reports.allocation import NANOS_PER_CENT, apportion, cents_to_text
from costwarden.reports.statement import Counts, Statement, UsageRow
from costwarden.reports.tabular import Cell, Report

NONE = "(none)"


class Dimension(StrEnum):
    """What a department line can be broken down by."""

    TEAM = "team"
    USER = "user"
    PROJECT = "tag:project"

    def of(self, row: UsageRow) -> str | None:
        if self == Dimension.TEAM:
            return row.team
        if self == Dimension.USER:
            return row.user
        return row.project


COLUMNS = ("period", "department_id", "line_type", "corrects_period", "by", "value", "requests", "input_tokens",
           "cached_input_tokens", "output_tokens", "ledger_cost_usd", "usage_cost_usd")


def breakdown(statement: Statement, by: Dimension) -> Report:
    """One row per department line and value of ``by``, in the statement's line order."""
    rows: list[dict[str, Cell]] = []
    for line in statement.lines:
        source = statement.usage if line.corrects is None else statement.corrections
        groups: dict[str | None, Counts] = defaultdict(Counts)
        for usage in source:
            if usage.department == line.department.id and usage.corrects == line.corrects:
                groups[by.of(usage)] = groups[by.of(usage)] + usage.counts
        if not groups:
            continue
        values = sorted(groups, key=lambda v: (v is None, v or ""))
        cents = apportion(line.usage_cents, [Fraction(groups[v].cost_nanos, NANOS_PER_CENT) for v in values])
        for value, share in zip(values, cents, strict=True):
            counts = groups[value]
            rows.append({
                "period": statement.period, "department_id": line.department.id, "line_type": line.kind,
                "corrects_period": line.corrects, "by": str(by), "value": NONE if value is None else value,
                "requests": counts.requests, "input_tokens": counts.input_tokens,
                "cached_input_tokens": counts.cached_input_tokens, "output_tokens": counts.output_tokens,
                "ledger_cost_usd": format_usd(counts.cost_nanos), "usage_cost_usd": cents_to_text(share),
            })
    notes = (f"{statement.period}: each department line by {by}; usage_cost_usd adds up to the line's usage cost.",)
    return Report(f"Chargeback {statement.period} by {by}", COLUMNS, rows, notes, {"period": statement.period})


__all__ = ["Dimension", "breakdown"]
