"""A statement as JSON text and back, to freeze it when its period is closed.

The encoding keeps every figure as an integer (nano-dollars, cents, basis points) so that a frozen
statement reads back exactly as it was computed, whatever later versions change in the way
statements are computed. ``FORMAT`` is stored with it.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from costwarden.core.metadata import MetadataVersion
from costwarden.reports.reconcile import Boundary, ProviderInvoice, Side
from costwarden.reports.shared import SharedCosts, SharedItem
from costwarden.reports.statement import Counts, DepartmentInfo, Line, ModelUsage, Statement, UsageRow

FORMAT = 1


def dumps(statement: Statement) -> str:
    """The JSON text of a statement (compact, keys sorted)."""
    body: dict[str, Any] = {
        "format": FORMAT, "period": statement.period, "timezone": statement.timezone,
        "start": statement.start.isoformat(), "end": statement.end.isoformat(),
        "generated_at": statement.generated_at.isoformat(),
        "closed_at": statement.closed_at.isoformat() if statement.closed_at else None,
        "shared": {"method": statement.shared.method,
                   "weights": {k: str(v) for k, v in statement.shared.weights.items()},
                   "items": [[item.name, item.nanos] for item in statement.shared.items]},
        "method_applied": statement.method_applied, "invoice_nanos": statement.invoice_nanos,
        "unattributed": _counts(statement.unattributed),
        "lines": [_line(line) for line in statement.lines],
        "usage": [_usage(row) for row in statement.usage],
        "corrections": [_usage(row) for row in statement.corrections],
        "invoices": [_invoice(invoice) for invoice in statement.invoices],
    }
    if statement.metadata:  # absent when there is none, so that such statements are stored as before
        body["metadata"] = [[v.department, v.effective_from.isoformat(), v.name, v.cost_center, v.gl_account]
                            for v in statement.metadata]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads(text: str) -> Statement:
    """The statement a ``dumps`` text holds; raises ValueError for text it cannot read."""
    try:
        body = json.loads(text)
        if body.get("format") != FORMAT:
            raise ValueError(f"unknown statement format {body.get('format')!r}")
        shared = body["shared"]
        return Statement(
            period=body["period"], timezone=body["timezone"], start=_time(body["start"]), end=_time(body["end"]),
            generated_at=_time(body["generated_at"]),
            closed_at=_time(body["closed_at"]) if body["closed_at"] else None,
            shared=SharedCosts(method=shared["method"],
                               weights={k: Decimal(v) for k, v in shared["weights"].items()},
                               items=tuple(SharedItem(name, int(nanos)) for name, nanos in shared["items"])),
            method_applied=body["method_applied"], invoice_nanos=body["invoice_nanos"],
            unattributed=_read_counts(body["unattributed"]),
            lines=tuple(_read_line(line) for line in body["lines"]),
            usage=tuple(_read_usage(row) for row in body["usage"]),
            corrections=tuple(_read_usage(row) for row in body["corrections"]),
            invoices=tuple(_read_invoice(item) for item in body.get("invoices", [])),
            metadata=tuple(MetadataVersion(department, date.fromisoformat(day), name, cost_center, gl_account)
                           for department, day, name, cost_center, gl_account in body.get("metadata", [])),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed stored statement: {exc!r}") from exc


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _counts(counts: Counts) -> list[int]:
    """The five first counts, then the billed parts only when there are any, so that a statement
    without them is stored exactly as before they existed."""
    values = list(counts.values())
    return values if any(values[5:]) else values[:5]


def _read_counts(values: list[int]) -> Counts:
    return Counts(*(int(v) for v in values))


def _department(info: DepartmentInfo) -> dict[str, Any]:
    return {"id": info.id, "name": info.name, "cost_center": info.cost_center, "gl_account": info.gl_account,
            "budget_nanos": info.budget_nanos}


def _line(line: Line) -> dict[str, Any]:
    return {
        "department": _department(line.department), "usage": _counts(line.usage),
        "models": [[m.model, m.provider, m.tier, _counts(m.counts)] for m in line.models],
        "usage_cents": line.usage_cents, "shared_cents": line.shared_cents,
        "variance_cents": line.variance_cents, "share_bp": line.share_bp, "rejected": line.rejected,
        "utilization_bp": line.utilization_bp, "corrects": line.corrects,
    }


def _read_line(body: dict[str, Any]) -> Line:
    return Line(
        department=DepartmentInfo(**body["department"]), usage=_read_counts(body["usage"]),
        models=tuple(ModelUsage(model, provider, tier, _read_counts(counts))
                     for model, provider, tier, counts in body["models"]),
        usage_cents=body["usage_cents"], shared_cents=body["shared_cents"],
        variance_cents=body["variance_cents"], share_bp=body["share_bp"], rejected=body["rejected"],
        utilization_bp=body["utilization_bp"], corrects=body["corrects"],
    )


def _usage(row: UsageRow) -> list[Any]:
    return [row.day.isoformat(), row.department, row.model, row.provider, row.price_version,
            _counts(row.counts), row.tier, row.corrects, row.team, row.user, row.project]


def _read_usage(values: list[Any]) -> UsageRow:
    day, department, model, provider, price_version, counts, tier, corrects, *detail = values
    team, user, project = (*detail, None, None, None)[:3]  # absent from statements frozen before they were kept
    return UsageRow(date.fromisoformat(day), department, model, provider, price_version, _read_counts(counts),
                    tier, corrects, team, user, project)


def _invoice(invoice: ProviderInvoice) -> list[Any]:
    return [invoice.provider, invoice.invoice_nanos, invoice.ledger_nanos,
            [[b.start.isoformat(), b.end.isoformat(), str(b.side), b.nanos] for b in invoice.boundaries]]


def _read_invoice(values: list[Any]) -> ProviderInvoice:
    provider, invoice_nanos, ledger_nanos, boundaries = values
    return ProviderInvoice(provider, int(invoice_nanos), int(ledger_nanos),
                           tuple(Boundary(_time(start), _time(end), Side(side), int(nanos))
                                 for start, end, side, nanos in boundaries))


__all__ = ["FORMAT", "dumps", "loads"]
