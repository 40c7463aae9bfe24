"""Department metadata (name, cost center, GL account) in force by day.

A department's codes change over time; a report must book each day's usage under the codes in
force that day, not under today's. Each change is a ``MetadataVersion`` effective from a UTC day
(the granularity of FOCUS charge periods and providers' invoices): a policy adopted without a date
takes effect on the UTC day it is adopted, and a department may back-date its codes with
``effective_from:`` in the policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from costwarden.core.policy import UNATTRIBUTED, Policy


@dataclass(frozen=True, slots=True, order=True)
class MetadataVersion:
    """A department's name and codes from ``effective_from`` (a UTC day) until its next version."""

    department: str
    effective_from: date
    name: str
    cost_center: str = ""
    gl_account: str = ""

    @property
    def codes(self) -> tuple[str, str, str]:
        return self.name, self.cost_center, self.gl_account


def in_force(versions: Iterable[MetadataVersion], department: str, day: date,
             strict: bool = False) -> MetadataVersion | None:
    """The department's version in force on ``day``: the latest one effective on or before it.
    A day before its first version takes that first version (what was known earliest), unless
    ``strict``, which then gives None."""
    found: MetadataVersion | None = None
    earliest: MetadataVersion | None = None
    for version in versions:
        if version.department != department:
            continue
        if version.effective_from <= day and (found is None or version.effective_from > found.effective_from):
            found = version
        if earliest is None or version.effective_from < earliest.effective_from:
            earliest = version
    return found if found is not None or strict else earliest


def changes(history: Sequence[MetadataVersion], policy: Policy, today: date) -> list[MetadataVersion]:
    """The versions adopting ``policy`` on ``today`` adds to ``history``: one per department whose
    name or codes differ from those in force on the day they take effect (its ``effective_from``,
    else today). Adopting the same policy again adds nothing."""
    added = []
    for department in policy.departments.values():
        if department.id == UNATTRIBUTED:
            continue
        version = MetadataVersion(department.id, department.effective_from or today, department.name,
                                  department.cost_center, department.gl_account)
        current = in_force(history, department.id, version.effective_from, strict=True)
        if current is None or current.codes != version.codes:
            added.append(version)
    return added


def merged(history: Sequence[MetadataVersion], added: Iterable[MetadataVersion]) -> list[MetadataVersion]:
    """``history`` with ``added`` in it; an added version replaces one of the same department and day."""
    by_key = {(v.department, v.effective_from): v for v in history}
    by_key.update({(v.department, v.effective_from): v for v in added})
    return sorted(by_key.values())


def relevant(versions: Iterable[MetadataVersion], first: date, last: date) -> tuple[MetadataVersion, ...]:
    """The versions in force on some day of [first, last]: the last one of each department before
    ``first`` and every one from ``first`` to ``last`` (and a department's first version, when it
    starts later, since days before it take it)."""
    kept: list[MetadataVersion] = []
    by_department: dict[str, list[MetadataVersion]] = {}
    for version in sorted(versions):
        by_department.setdefault(version.department, []).append(version)
    for department_versions in by_department.values():
        before = [v for v in department_versions if v.effective_from <= first]
        within = [v for v in department_versions if first < v.effective_from <= last]
        kept += [*before[-1:], *within] if before or within else department_versions[:1]
    return tuple(kept)


__all__ = ["MetadataVersion", "changes", "in_force", "merged", "relevant"]
