"""What a replay finds: per department what its calls would have become, and the budgets that ran out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from costwarden.core.scopes import BudgetCheck

UNKNOWN = "(not in policy)"  # the line of calls whose department the policy lacks


@dataclass(slots=True)
class Outcome:
    """What one department's calls would have become."""

    calls: int = 0
    allowed: int = 0  # admitted as asked
    downgraded: int = 0
    clamped: int = 0
    rejected: int = 0
    cost_before_nanos: int = 0
    cost_after_nanos: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rejections per error code


@dataclass(frozen=True, slots=True)
class RunOut:
    """A budget that ran out during the replay, and when."""

    check: BudgetCheck
    on: date
    at: datetime


@dataclass(slots=True)
class Simulation:
    """The replay's result: outcomes per department and the budgets that ran out."""

    departments: dict[str, Outcome] = field(default_factory=dict)
    ran_out: dict[str, RunOut] = field(default_factory=dict)  # by counter window key
    events: int = 0
    first: datetime | None = None
    last: datetime | None = None


__all__ = ["UNKNOWN", "Outcome", "RunOut", "Simulation"]
