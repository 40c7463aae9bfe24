"""The values of a chargeback statement: ledger usage, department lines, and the statement.

These are plain immutable values. ``chargeback.compute_statement`` builds them from ledger totals;
renderers read them; a closed period's statement is stored and read back as is (``codec``).
Money is integers: nano-dollars for ledger amounts, cents for the rounded figures of the lines.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from costwarden.core.metadata import MetadataVersion
from costwarden.reports.reconcile import ProviderInvoice
from costwarden.reports.shared import SharedCosts

USAGE, CORRECTION = "usage", "correction"


@dataclass(frozen=True, slots=True)
class Counts:
    """Requests, tokens and exact cost (nano-dollars) of a set of calls."""

    requests: int = 0
    input_tokens: int = 0  # all input tokens, cached ones included
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    # Parts of the input and output totals billed at their own rates (SPEC §9).
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    audio_input_tokens: int = 0

    def values(self) -> tuple[int, ...]:
        """Every count, in field order."""
        return (self.requests, self.input_tokens, self.cached_input_tokens, self.output_tokens, self.cost_nanos,
                self.cache_write_5m_tokens, self.cache_write_1h_tokens, self.reasoning_tokens,
                self.audio_input_tokens)

    def __add__(self, other: Counts) -> Counts:
        return Counts(*map(operator.add, self.values(), other.values()))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*map(operator.sub, self.values(), other.values()))

    def __bool__(self) -> bool:
        return any(self.values())

    @staticmethod
    def total(items: Iterable[Counts]) -> Counts:
        """The sum of ``items``, field by field (in C: a statement adds up tens of thousands of groups)."""
        columns = list(zip(*(item.values() for item in items), strict=True))
        return Counts(*map(sum, columns)) if columns else Counts()


UsageKey = tuple[date, str, str, str, str, str | None, str | None, str | None]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One ledger group: the calls of one UTC day, department, model, price version, team, user and
    ``project`` tag.

    ``corrects`` names the closed period the calls belong to when they are posted late, as a
    correction, in a later statement. Statements frozen before team, user and project were kept
    have None in them (``detailed`` is False for all their rows).
    """

    day: date
    department: str
    model: str
    provider: str
    price_version: str
    counts: Counts
    tier: int | None = None
    corrects: str | None = None
    team: str | None = None
    user: str | None = None
    project: str | None = None

    @property
    def key(self) -> UsageKey:
        return (self.day, self.department, self.model, self.provider, self.price_version, self.team, self.user,
                self.project)

    @property
    def detailed(self) -> bool:
        """Whether the row names a team, user or project."""
        return self.team is not None or self.user is not None or self.project is not None

    def coarse(self) -> UsageRow:
        """The row without team, user and project (to compare with statements frozen without them)."""
        return UsageRow(self.day, self.department, self.model, self.provider, self.price_version, self.counts,
                        self.tier, self.corrects)


@dataclass(frozen=True, slots=True)
class DepartmentInfo:
    """What a statement line says about its department (from the policy, or the ledger alone)."""

    id: str
    name: str
    cost_center: str = ""
    gl_account: str = ""
    budget_nanos: int | None = None  # the limit of its first monthly USD budget


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """A department's usage of one model on a statement line."""

    model: str
    provider: str
    tier: int | None
    counts: Counts


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a statement: a department's usage of the period, or a correction line
    (``corrects`` set) posting usage of an earlier, closed period. Figures in cents."""

    department: DepartmentInfo
    usage: Counts
    models: tuple[ModelUsage, ...]
    usage_cents: int
    shared_cents: int
    variance_cents: int
    share_bp: int  # share of the statement's usage cost in basis points (1/100 of a percent)
    rejected: int = 0
    utilization_bp: int | None = None  # usage / budget in basis points
    corrects: str | None = None

    @property
    def kind(self) -> str:
        return USAGE if self.corrects is None else CORRECTION

    @property
    def total_cents(self) -> int:
        return self.usage_cents + self.shared_cents + self.variance_cents


@dataclass(frozen=True, slots=True)
class Statement:
    """The chargeback statement of one billing period (a calendar month in ``timezone``).

    ``usage`` holds every ledger group of the period (unattributed calls included) and
    ``corrections`` the late usage of closed periods posted here: the FOCUS export is made of them,
    and a later statement compares them with the ledger to find usage that arrived after the close.
    ``metadata`` holds the versions of the departments' names and codes in force on the days of
    that usage (lines show those of the period's last day); empty, each line's own apply throughout.
    """

    period: str
    timezone: str
    start: datetime
    end: datetime
    generated_at: datetime
    shared: SharedCosts
    method_applied: str  # the method used: proportional falls back to even when there is no usage
    lines: tuple[Line, ...]
    unattributed: Counts
    usage: tuple[UsageRow, ...]
    corrections: tuple[UsageRow, ...] = ()
    invoice_nanos: int | None = None
    closed_at: datetime | None = None
    invoices: tuple[ProviderInvoice, ...] = ()  # per provider, against the UTC month (invoice_nanos is their sum)
    metadata: tuple[MetadataVersion, ...] = ()  # departments' names and codes by the day they took effect

    @property
    def usage_counts(self) -> Counts:
        """The lines' usage (departments' own and corrections), unattributed calls excluded."""
        return Counts.total(line.usage for line in self.lines)

    @property
    def ledger_nanos(self) -> int:
        """Everything the ledger charged that this statement bills: lines plus unattributed."""
        return self.usage_counts.cost_nanos + self.unattributed.cost_nanos

    @property
    def shared_nanos(self) -> int:
        """Shared costs before rounding: the named items and unattributed spend."""
        return self.shared.items_nanos + self.unattributed.cost_nanos

    @property
    def variance_nanos(self) -> int | None:
        """Invoice total minus (usage + shared costs), exact; None without an invoice. With invoices per
        provider: the sum of their variances against the ledger's UTC month (the boundary hours
        between the UTC month and the period are shown apart, not counted as variance)."""
        if self.invoices:
            return sum(invoice.variance_nanos for invoice in self.invoices)
        if self.invoice_nanos is None:
            return None
        return self.invoice_nanos - self.usage_counts.cost_nanos - self.shared_nanos

    @property
    def usage_cents(self) -> int:
        return sum(line.usage_cents for line in self.lines)

    @property
    def shared_cents(self) -> int:
        return sum(line.shared_cents for line in self.lines)

    @property
    def variance_cents(self) -> int:
        return sum(line.variance_cents for line in self.lines)

    @property
    def total_cents(self) -> int:
        return sum(line.total_cents for line in self.lines)

    @property
    def rejected(self) -> int:
        return sum(line.rejected for line in self.lines)


__all__ = ["CORRECTION", "USAGE", "Counts", "DepartmentInfo", "Line", "ModelUsage", "Statement", "UsageKey", "UsageRow"]
