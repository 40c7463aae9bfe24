"""Which department name and codes each part of a statement is booked under.

A statement's ``metadata`` holds the departments' versions by day (``core.metadata``). A usage
row takes the version in force on its UTC day; a line whose days fall under several versions is
split between them in proportion to its usage cost in each, so that the FOCUS rows and the
journal debit each cost center for its part of the month.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from costwarden.core.metadata import MetadataVersion, in_force
from costwarden.reports.allocation import allocate
from costwarden.reports.statement import DepartmentInfo, Line, Statement


def info_on(info: DepartmentInfo, versions: tuple[MetadataVersion, ...], day: date) -> DepartmentInfo:
    """``info`` with the name and codes in force on ``day`` (as it is when none is recorded)."""
    version = in_force(versions, info.id, day) if versions else None
    if version is None or version.codes == (info.name, info.cost_center, info.gl_account):
        return info
    return replace(info, name=version.name, cost_center=version.cost_center, gl_account=version.gl_account)


def line_parts(statement: Statement, line: Line) -> list[tuple[DepartmentInfo, int]]:
    """The line's department under each version in force on its usage days, with that usage's
    cost (nano-dollars, negatives as 0) as weight; one part, the line's own, when there is no change."""
    rows = statement.usage if line.corrects is None else statement.corrections
    weights: dict[DepartmentInfo, int] = {}
    for row in rows:
        if row.department == line.department.id and row.corrects == line.corrects:
            info = info_on(line.department, statement.metadata, row.day)
            weights[info] = weights.get(info, 0) + max(row.counts.cost_nanos, 0)
    if len(weights) <= 1 or not any(weights.values()):
        return [(next(iter(weights), line.department), 1)]
    return [(info, weight) for info, weight in weights.items() if weight]


def split(cents: int, parts: list[tuple[DepartmentInfo, int]]) -> list[tuple[DepartmentInfo, int]]:
    """``cents`` over the parts by their weights, adding up exactly (largest remainder)."""
    shares = allocate(cents, [weight for _, weight in parts])
    return [(info, share) for (info, _), share in zip(parts, shares, strict=True)]


__all__ = ["info_on", "line_parts", "split"]
