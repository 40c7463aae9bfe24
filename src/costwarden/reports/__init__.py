"""Reports over the ledger: chargeback statements per department and billing period, their
allocation of shared costs, closing periods, and the FOCUS 1.2 export."""

from costwarden.reports.chargeback import compute_statement, department_infos
from costwarden.reports.collect import PeriodClosed, close, frozen_statement, live_statement
from costwarden.reports.focus import write_focus
from costwarden.reports.render import statement_document, write_csv, write_table
from costwarden.reports.shared import (
    SharedCosts,
    SharedCostsError,
    load_shared_costs,
    parse_shared_costs,
    parse_usd,
)
from costwarden.reports.statement import Counts, DepartmentInfo, Line, Statement, UsageRow

__all__ = [
    "Counts",
    "DepartmentInfo",
    "Line",
    "PeriodClosed",
    "SharedCosts",
    "SharedCostsError",
    "Statement",
    "UsageRow",
    "close",
    "compute_statement",
    "department_infos",
    "frozen_statement",
    "live_statement",
    "load_shared_costs",
    "parse_shared_costs",
    "parse_usd",
    "statement_document",
    "write_csv",
    "write_focus",
    "write_table",
]
