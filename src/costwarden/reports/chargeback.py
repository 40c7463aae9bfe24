"""Chargeback statements: ledger usage to department lines, exactly (pure computation).

The statement's figures are rounded to cents so that everything adds up:

- usage: the lines' ledger cost (U, nano-dollars) is rounded once to cents, and that total is
  spread over the lines by largest remainder on their exact costs, so the usage column adds up to
  round(U) and every line is within a cent of its ledger cost;
- shared costs (named items plus unattributed spend, S) take the rest of the grand total, which is
  round(U + S) (so the statement adds up to the ledger to the cent), allocated by the method;
- with an invoice total I, the grand total is round(I): shared costs are round(S) and the variance
  round(I) - round(U) - round(S), allocated by the same method.

Correction lines (late usage of a closed period) carry their usage only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from fractions import Fraction

from costwarden.core.policy import UNATTRIBUTED, Policy
from costwarden.reports.allocation import BASIS_POINTS, NANOS_PER_CENT, allocate, apportion, nanos_to_cents
from costwarden.reports.reconcile import ProviderInvoice
from costwarden.reports.shared import EVEN, FIXED, PROPORTIONAL, SharedCosts, SharedCostsError
from costwarden.reports.statement import Counts, DepartmentInfo, Line, ModelUsage, Statement, UsageRow


def department_infos(policy: Policy) -> list[DepartmentInfo]:
    """Every department of the policy (the UNATTRIBUTED pseudo-department aside), with its codes and
    the limit of its first monthly USD budget."""
    infos = []
    for department in policy.departments.values():
        if department.id == UNATTRIBUTED:
            continue
        monthly = [b for b in department.rules.budgets if b.period.kind == "monthly" and b.unit == "usd"]
        infos.append(DepartmentInfo(department.id, department.name, department.cost_center,
                                    department.gl_account, monthly[0].limit if monthly else None))
    return infos


def compute_statement(period: str, timezone: str, start: datetime, end: datetime,
                      departments: Sequence[DepartmentInfo], usage: Sequence[UsageRow],
                      rejections: Mapping[str, int], shared: SharedCosts, generated_at: datetime,
                      corrections: Sequence[UsageRow] = (), invoice_nanos: int | None = None,
                      invoices: Sequence[ProviderInvoice] = ()) -> Statement:
    """The statement of ``period`` from its ledger ``usage`` groups and the ``corrections`` posted to it.

    Every department of ``departments`` gets a line (zeros when idle), and so does every other
    department with usage in the period; UNATTRIBUTED usage is a shared cost, not a line.
    Raises SharedCostsError when the shared costs cannot be allocated (unknown or zero weights).
    """
    infos = {info.id: info for info in departments if info.id != UNATTRIBUTED}
    for row in (*usage, *corrections):
        if row.department != UNATTRIBUTED and row.department not in infos:
            infos[row.department] = DepartmentInfo(row.department, row.department)
    own = _by_department(row for row in usage if row.department != UNATTRIBUTED)
    ids = sorted({info.id for info in departments if info.id != UNATTRIBUTED} | own.keys())
    late: dict[tuple[str, str], list[UsageRow]] = defaultdict(list)
    for row in corrections:
        if row.department != UNATTRIBUTED:
            late[(row.corrects or "", row.department)].append(row)
    groups: list[tuple[str | None, str, list[UsageRow]]] = [(None, dept, own.get(dept, [])) for dept in ids]
    groups += [(corrects, dept, rows) for (corrects, dept), rows in sorted(late.items())]
    counts = [Counts.total(row.counts for row in rows) for _, _, rows in groups]
    unattributed = Counts.total(row.counts for row in (*usage, *corrections) if row.department == UNATTRIBUTED)

    usage_nanos = sum(c.cost_nanos for c in counts)
    usage_cents = apportion(nanos_to_cents(usage_nanos), [Fraction(c.cost_nanos, NANOS_PER_CENT) for c in counts])
    shared_nanos = shared.items_nanos + unattributed.cost_nanos
    if invoices:
        shared_total = nanos_to_cents(shared_nanos)
        variance_total = nanos_to_cents(sum(invoice.variance_nanos for invoice in invoices))
        invoice_nanos = sum(invoice.invoice_nanos for invoice in invoices)
    elif invoice_nanos is None:
        shared_total = nanos_to_cents(usage_nanos + shared_nanos) - sum(usage_cents)
        variance_total = 0
    else:
        shared_total = nanos_to_cents(shared_nanos)
        variance_total = nanos_to_cents(invoice_nanos) - sum(usage_cents) - shared_total

    own_costs = counts[:len(ids)]
    method, weights = _weights(shared, ids, [c.cost_nanos for c in own_costs], period)
    if not ids and (shared_total or variance_total):
        raise SharedCostsError([f"no department to allocate shared costs to on the {period} statement"])
    padding = [0] * (len(groups) - len(ids))  # correction lines take no shared cost
    shared_cents = allocate(shared_total, weights) + padding if ids else padding
    variance_cents = allocate(variance_total, weights) + padding if ids else padding
    share_weights = [max(c.cost_nanos, 0) for c in counts]
    shares = allocate(BASIS_POINTS, share_weights) if any(share_weights) else [0] * len(groups)

    lines = []
    for index, (corrects, dept, rows) in enumerate(groups):
        info = infos[dept]
        is_own = corrects is None
        lines.append(Line(
            department=info, usage=counts[index], models=_models(rows), usage_cents=usage_cents[index],
            shared_cents=shared_cents[index], variance_cents=variance_cents[index], share_bp=shares[index],
            rejected=rejections.get(dept, 0) if is_own else 0,
            utilization_bp=_utilization(counts[index].cost_nanos, info.budget_nanos) if is_own else None,
            corrects=corrects,
        ))
    return Statement(period=period, timezone=timezone, start=start, end=end, generated_at=generated_at,
                     shared=shared, method_applied=method, lines=tuple(lines), unattributed=unattributed,
                     usage=tuple(usage), corrections=tuple(corrections), invoice_nanos=invoice_nanos,
                     invoices=tuple(invoices))


def _by_department(rows: Iterable[UsageRow]) -> dict[str, list[UsageRow]]:
    grouped: dict[str, list[UsageRow]] = defaultdict(list)
    for row in rows:
        grouped[row.department].append(row)
    return grouped


def _models(rows: Sequence[UsageRow]) -> tuple[ModelUsage, ...]:
    grouped: dict[tuple[str, str], list[Counts]] = defaultdict(list)
    tiers: dict[tuple[str, str], int | None] = {}
    for row in rows:
        key = (row.model, row.provider)
        grouped[key].append(row.counts)
        tiers[key] = tiers.get(key) or row.tier
    return tuple(ModelUsage(model, provider, tiers[(model, provider)], Counts.total(grouped[(model, provider)]))
                 for model, provider in sorted(grouped))


def _weights(shared: SharedCosts, ids: Sequence[str], costs: Sequence[int],
             period: str) -> tuple[str, list[Fraction]]:
    """The method applied and one weight per department line."""
    if shared.method == FIXED:
        unknown = sorted(set(shared.weights) - set(ids))
        if unknown:
            raise SharedCostsError([f"weights.{name}: {name} has no line on the {period} statement "
                                    f"(departments: {', '.join(ids) or 'none'})" for name in unknown])
        weights = [Fraction(shared.weights.get(dept, 0)) for dept in ids]
        if ids and not any(weights):
            raise SharedCostsError(["weights: every department on the statement has weight 0"])
        return FIXED, weights
    if shared.method == PROPORTIONAL and any(costs):
        return PROPORTIONAL, [Fraction(max(cost, 0)) for cost in costs]
    return EVEN, [Fraction(1)] * len(ids)


def _utilization(cost_nanos: int, budget_nanos: int | None) -> int | None:
    if not budget_nanos:
        return None
    return round(Fraction(cost_nanos * BASIS_POINTS, budget_nanos))


__all__ = ["compute_statement", "department_infos"]
