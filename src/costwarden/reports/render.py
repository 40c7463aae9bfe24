"""A statement as CSV (one row per line), as a JSON document, or as a Rich table for people.

Rounded figures are decimal strings with two decimals (``1234.50``); exact ledger amounts are
decimal strings without exponent or trailing zeros (``0.0000045``). Every total is the sum of the
lines it totals.
"""

from __future__ import annotations

import csv
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from costwarden.core.csvsafe import safe_cell
from costwarden.core.money import format_dollars, format_usd
from costwarden.reports.allocation import NANOS_PER_CENT, basis_points_to_text, cents_to_text
from costwarden.reports.reconcile import ProviderInvoice
from costwarden.reports.statement import Counts, Line, Statement

CSV_COLUMNS = (
    "period", "department_id", "department_name", "cost_center", "requests", "input_tokens",
    "cached_input_tokens", "output_tokens", "usage_cost_usd", "shared_cost_usd", "total_cost_usd",
    "share_pct", "budget_usd", "utilization_pct",
    # after the contract's columns:
    "variance_usd", "gl_account", "rejected_requests", "line_type", "corrects_period",
)
NUMERIC_COLUMNS = frozenset({
    "requests", "input_tokens", "cached_input_tokens", "output_tokens", "usage_cost_usd", "shared_cost_usd",
    "total_cost_usd", "share_pct", "budget_usd", "utilization_pct", "variance_usd", "rejected_requests",
})


def _budget(line: Line) -> str:
    nanos = line.department.budget_nanos
    if nanos is None or line.corrects is not None:
        return ""
    return cents_to_text(nanos // NANOS_PER_CENT) if nanos % NANOS_PER_CENT == 0 else format_usd(nanos)


def _pct(points: int | None) -> str:
    return "" if points is None else basis_points_to_text(points)


def csv_row(statement: Statement, line: Line) -> dict[str, str]:
    """The CSV row of one statement line."""
    return {
        "period": statement.period, "department_id": line.department.id, "department_name": line.department.name,
        "cost_center": line.department.cost_center, "requests": str(line.usage.requests),
        "input_tokens": str(line.usage.input_tokens), "cached_input_tokens": str(line.usage.cached_input_tokens),
        "output_tokens": str(line.usage.output_tokens), "usage_cost_usd": cents_to_text(line.usage_cents),
        "shared_cost_usd": cents_to_text(line.shared_cents), "total_cost_usd": cents_to_text(line.total_cents),
        "share_pct": _pct(line.share_bp), "budget_usd": _budget(line), "utilization_pct": _pct(line.utilization_bp),
        "variance_usd": "" if statement.invoice_nanos is None else cents_to_text(line.variance_cents),
        "gl_account": line.department.gl_account, "rejected_requests": str(line.rejected),
        "line_type": line.kind, "corrects_period": line.corrects or "",
    }


def write_csv(statement: Statement, out: TextIO) -> int:
    """One row per line, no total row; returns the number of rows. Names and codes come from the
    policy, so a cell a spreadsheet would run as a formula starts with a single quote."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for line in statement.lines:
        row = csv_row(statement, line)
        writer.writerow({name: safe_cell(value, numeric=name in NUMERIC_COLUMNS) for name, value in row.items()})
    return len(statement.lines)


def _counts(counts: Counts, cost_name: str = "ledger_cost_usd") -> dict[str, Any]:
    return {"requests": counts.requests, "input_tokens": counts.input_tokens,
            "cached_input_tokens": counts.cached_input_tokens, "output_tokens": counts.output_tokens,
            cost_name: format_usd(counts.cost_nanos)}


def _line_document(statement: Statement, line: Line) -> dict[str, Any]:
    row = csv_row(statement, line)
    return {
        "line_type": line.kind, "corrects_period": line.corrects,
        "department_id": line.department.id, "department_name": line.department.name,
        "cost_center": line.department.cost_center, "gl_account": line.department.gl_account,
        **_counts(line.usage), "rejected_requests": line.rejected,
        "usage_cost_usd": row["usage_cost_usd"], "shared_cost_usd": row["shared_cost_usd"],
        "variance_usd": row["variance_usd"] or None, "total_cost_usd": row["total_cost_usd"],
        "share_pct": row["share_pct"], "budget_usd": row["budget_usd"] or None,
        "utilization_pct": row["utilization_pct"] or None,
        "models": [{"model": m.model, "provider": m.provider, "tier": m.tier, **_counts(m.counts, "cost_usd")}
                   for m in line.models],
    }


def statement_document(statement: Statement) -> dict[str, Any]:
    """The JSON document of a statement: the CSV's figures, rejected calls, a per-model breakdown per
    line, shared costs, the reconciliation with an invoice, and totals equal to the lines' sums."""
    variance = statement.variance_nanos
    return {
        "period": statement.period, "timezone": statement.timezone,
        "start": statement.start.isoformat(), "end": statement.end.isoformat(),
        "status": "open" if statement.closed_at is None else "closed",
        "closed_at": None if statement.closed_at is None else statement.closed_at.isoformat(),
        "generated_at": statement.generated_at.isoformat(), "currency": "USD",
        "allocation": {"method": statement.shared.method, "applied": statement.method_applied,
                       "weights": {k: str(v) for k, v in statement.shared.weights.items()}},
        "lines": [_line_document(statement, line) for line in statement.lines],
        "shared_costs": {
            "items": [{"name": item.name, "amount_usd": format_usd(item.nanos)} for item in statement.shared.items],
            "unattributed": _counts(statement.unattributed, "cost_usd"),
            "total_usd": format_usd(statement.shared_nanos),
            "allocated_usd": cents_to_text(statement.shared_cents),
        },
        "reconciliation": None if variance is None or statement.invoice_nanos is None else {
            "invoice_total_usd": format_usd(statement.invoice_nanos),
            "usage_usd": format_usd(statement.usage_counts.cost_nanos),
            "shared_usd": format_usd(statement.shared_nanos),
            "variance_usd": format_usd(variance),
            "allocated_usd": cents_to_text(statement.variance_cents),
            **({"providers": [_provider_document(invoice) for invoice in statement.invoices]}
               if statement.invoices else {}),
        },
        "totals": {
            **_counts(statement.usage_counts), "rejected_requests": statement.rejected,
            "usage_cost_usd": cents_to_text(statement.usage_cents),
            "shared_cost_usd": cents_to_text(statement.shared_cents),
            "variance_usd": None if variance is None else cents_to_text(statement.variance_cents),
            "total_cost_usd": cents_to_text(statement.total_cents),
            "share_pct": basis_points_to_text(sum(line.share_bp for line in statement.lines)),
        },
    }


def _provider_document(invoice: ProviderInvoice) -> dict[str, Any]:
    return {
        "provider": invoice.provider, "billing_period": "calendar month in UTC",
        "invoice_total_usd": format_usd(invoice.invoice_nanos),
        "ledger_utc_month_usd": format_usd(invoice.ledger_nanos),
        "variance_usd": format_usd(invoice.variance_nanos),
        "statement_period_usd": format_usd(invoice.statement_nanos),
        "boundary_hours": [{"start": b.start.isoformat(), "end": b.end.isoformat(), "hours": b.hours,
                            "side": str(b.side), "ledger_usd": format_usd(b.nanos)} for b in invoice.boundaries],
    }


def _money(cents: int) -> str:
    return format_dollars(cents * NANOS_PER_CENT)


def write_table(statement: Statement, console: Console) -> None:
    """The statement for people: one row per line, a totals row, then shared costs and reconciliation."""
    status = "open" if statement.closed_at is None else f"closed {statement.closed_at:%Y-%m-%d %H:%M} UTC, frozen"
    table = Table(title=f"Chargeback {statement.period} ({statement.timezone}, {status})", show_footer=False)
    with_variance = statement.invoice_nanos is not None
    headers = ["Department", "Name", "Cost center", "Requests", "Input tok", "Cached tok", "Output tok", "Usage",
               "Shared", *(["Variance"] if with_variance else []), "Total", "Share %", "Budget", "Util %"]
    for index, header in enumerate(headers):
        table.add_column(header, justify="right" if index >= 3 else "left")
    for line in statement.lines:
        name = line.department.name if line.corrects is None else f"{line.department.name} (correction {line.corrects})"
        table.add_row(line.department.id, name, line.department.cost_center, *_numbers(line.usage),
                      _money(line.usage_cents), _money(line.shared_cents),
                      *([_money(line.variance_cents)] if with_variance else []), _money(line.total_cents),
                      _pct(line.share_bp), _money_nanos(line.department.budget_nanos if line.corrects is None else None),
                      _pct(line.utilization_bp))
    table.add_section()
    table.add_row("TOTAL", "", "", *_numbers(statement.usage_counts), _money(statement.usage_cents),
                  _money(statement.shared_cents), *([_money(statement.variance_cents)] if with_variance else []),
                  _money(statement.total_cents), _pct(sum(line.share_bp for line in statement.lines)), "", "",
                  style="bold")
    console.print(table)
    console.print(f"Shared costs allocated {statement.shared.method}"
                  + ("" if statement.method_applied == statement.shared.method
                     else f" (applied {statement.method_applied}: no usage)") + ":", highlight=False)
    for item in statement.shared.items:
        console.print(f"  {item.name}: {format_dollars(item.nanos)}", highlight=False, markup=False)
    console.print(f"  Unattributed calls: {format_dollars(statement.unattributed.cost_nanos)} "
                  f"({statement.unattributed.requests} calls)", highlight=False)
    if statement.invoices:
        console.print(f"Reconciliation per provider, against the providers' UTC months: variance "
                      f"{format_usd(statement.variance_nanos or 0)} USD, allocated {_money(statement.variance_cents)}; "
                      "the hours where the UTC month and this period differ are shown apart", highlight=False)
    elif statement.invoice_nanos is not None and statement.variance_nanos is not None:
        console.print(f"Reconciliation: invoice {format_dollars(statement.invoice_nanos)} - usage "
                      f"{format_dollars(statement.usage_counts.cost_nanos)} - shared "
                      f"{format_dollars(statement.shared_nanos)} = variance {format_usd(statement.variance_nanos)} "
                      f"USD, allocated {_money(statement.variance_cents)}", highlight=False)
    for invoice in statement.invoices:
        console.print(f"  {invoice.provider}: invoice (UTC month) {format_usd(invoice.invoice_nanos)} - ledger (UTC "
                      f"month) {format_usd(invoice.ledger_nanos)} = variance {format_usd(invoice.variance_nanos)} USD",
                      highlight=False)
        for b in invoice.boundaries:
            console.print(f"    {b.start:%Y-%m-%d %H:%M}-{b.end:%Y-%m-%d %H:%M} UTC ({b.hours} h, {b.side}): "
                          f"{format_usd(b.nanos)} USD", highlight=False)


def _numbers(counts: Counts) -> list[str]:
    return [f"{counts.requests:,}", f"{counts.input_tokens:,}", f"{counts.cached_input_tokens:,}",
            f"{counts.output_tokens:,}"]


def _money_nanos(nanos: int | None) -> str:
    return "" if nanos is None else format_dollars(nanos)


__all__ = ["CSV_COLUMNS", "csv_row", "statement_document", "write_csv", "write_table"]
