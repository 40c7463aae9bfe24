"""A statement as a general-ledger journal entry: one debit per cost center and GL account (the
departments' totals, shared costs and variance included), one credit to the AI clearing account
for the sum, so that the entry balances to the cent. Departments without a cost center are
debited as ``UNASSIGNED``, to be fixed in the policy rather than hidden. A department whose codes
changed during the period is debited under each for its part (``reports.codes``)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from zoneinfo import ZoneInfo

from costwarden.reports.allocation import cents_to_text
from costwarden.reports.codes import CodeBook, split
from costwarden.reports.statement import Statement
from costwarden.reports.tabular import Cell, Report

CLEARING_ACCOUNT = "AI-CLEARING"
UNASSIGNED = "UNASSIGNED"
COLUMNS = ("entry", "date", "period", "line", "account", "cost_center", "debit_usd", "credit_usd", "description")


def journal(statement: Statement, clearing_account: str = CLEARING_ACCOUNT) -> Report:
    """The journal entry of a statement, dated the last local day of its period."""
    debits: dict[tuple[str, str], list[str]] = defaultdict(list)
    amounts: dict[tuple[str, str], int] = defaultdict(int)
    codes = CodeBook(statement)
    for line in statement.lines:
        label = line.department.id if line.corrects is None else f"{line.department.id} (correction {line.corrects})"
        for department, cents in split(line.total_cents, codes.parts(line)):
            key = (department.gl_account or UNASSIGNED, department.cost_center or UNASSIGNED)
            amounts[key] += cents
            debits[key].append(label)
    entry = f"AI-{statement.period}"
    day = (statement.end - timedelta(microseconds=1)).astimezone(ZoneInfo(statement.timezone)).date().isoformat()
    rows: list[dict[str, Cell]] = []
    for number, key in enumerate(sorted(amounts), start=1):
        account, cost_center = key
        rows.append({"entry": entry, "date": day, "period": statement.period, "line": number, "account": account,
                     "cost_center": cost_center, "debit_usd": cents_to_text(amounts[key]), "credit_usd": "0.00",
                     "description": f"AI usage {statement.period}: {', '.join(debits[key])}"})
    total = sum(amounts.values())
    rows.append({"entry": entry, "date": day, "period": statement.period, "line": len(rows) + 1,
                 "account": clearing_account, "cost_center": "", "debit_usd": "0.00", "credit_usd": cents_to_text(total),
                 "description": f"AI usage {statement.period}: clearing"})
    notes = (f"Debits {cents_to_text(total)} = credit {cents_to_text(total)} USD.",)
    return Report(f"Journal entry {entry}", COLUMNS, rows, notes, {"period": statement.period})


__all__ = ["CLEARING_ACCOUNT", "journal"]
