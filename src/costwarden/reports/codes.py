"""Which department name and codes each part of a statement is booked under.

A statement's ``metadata`` holds the departments' versions by day (``core.metadata``). A usage
row takes the version in force on its UTC day; a line whose days fall under several versions is
split between them in proportion to its usage cost under each, so that the FOCUS rows and the
journal debit each cost center for its part of the month.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date

from costwarden.core.metadata import MetadataVersion, in_force
from costwarden.reports.allocation import allocate
from costwarden.reports.statement import DepartmentInfo, Line, Statement

Part = tuple[DepartmentInfo, int]  # the department under one version of its codes, and a weight


def info_on(info: DepartmentInfo, versions: tuple[MetadataVersion, ...], day: date) -> DepartmentInfo:
    """``info`` with the name and codes in force on ``day`` (as it is when none is recorded)."""
    version = in_force(versions, info.id, day) if versions else None
    if version is None or version.codes == (info.name, info.cost_center, info.gl_account):
        return info
    return replace(info, name=version.name, cost_center=version.cost_center, gl_account=version.gl_account)


class CodeBook:
    """The codes of a statement's rows and the parts of its lines, computed once per statement
    (a report reads them for every row: one pass over the usage, one lookup per department and day)."""

    def __init__(self, statement: Statement) -> None:
        self._versions = statement.metadata
        # Keyed by id: a statement has one DepartmentInfo per department (its line's).
        self._on: dict[tuple[str, date], DepartmentInfo] = {}
        # Only departments with several versions can be split; the others keep their line's codes.
        changing = {dept for dept, count in Counter(v.department for v in self._versions).items() if count > 1}
        lines = {(line.department.id, line.corrects): line.department for line in statement.lines}
        self._weights: dict[tuple[str, str | None], dict[DepartmentInfo, int]] = {}
        for row in (*statement.usage, *statement.corrections):
            info = lines.get((row.department, row.corrects)) if row.department in changing else None
            if info is None:
                continue
            weights = self._weights.setdefault((row.department, row.corrects), {})
            part = self.on(info, row.day)
            weights[part] = weights.get(part, 0) + max(row.counts.cost_nanos, 0)

    def on(self, info: DepartmentInfo, day: date) -> DepartmentInfo:
        """``info`` with the name and codes in force on ``day``."""
        if not self._versions:
            return info
        key = (info.id, day)
        found = self._on.get(key)
        if found is None:
            found = self._on[key] = info_on(info, self._versions, day)
        return found

    def parts(self, line: Line) -> list[Part]:
        """The line's department under each version in force on its usage days, weighted by that
        usage's cost (negatives as 0); one part, the line's own, when nothing changed."""
        weights = self._weights.get((line.department.id, line.corrects), {})
        if len(weights) <= 1 or not any(weights.values()):
            return [(next(iter(weights), line.department), 1)]
        return [(info, weight) for info, weight in weights.items() if weight]


def split(cents: int, parts: list[Part]) -> list[Part]:
    """``cents`` over the parts by their weights, adding up exactly (largest remainder)."""
    shares = allocate(cents, [weight for _, weight in parts])
    return [(info, share) for (info, _), share in zip(parts, shares, strict=True)]


__all__ = ["CodeBook", "Part", "info_on", "split"]
