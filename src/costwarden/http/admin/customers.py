"""Business customers over the admin API (SPEC §12): usage, invoice at the rate card, efficiency.

``admin`` and ``finance`` read every customer, a ``manager`` the customers of its department, and
a ``customer`` token only its own customer (asking for another one is refused with 403, and it
gets no plan totals, which sum other customers' usage).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from costwarden import errors
from costwarden.app.auth import AdminIdentity
from costwarden.core.periods import BILLING_PERIOD
from costwarden.http.admin.access import ADMIN, FINANCE, MANAGER
from costwarden.http.admin.api import AdminCall, Download, Operation
from costwarden.http.admin.reports import CSV, Document
from costwarden.http.admin.schemas import DepartmentId, NoBody, Query
from costwarden.reports.collect import period_bounds
from costwarden.reports.customers import customers, customers_report
from costwarden.reports.tabular import csv_text

CUSTOMER = "customer"
READERS = (ADMIN, FINANCE, MANAGER, CUSTOMER)
_PERIOD = re.compile(f"^{BILLING_PERIOD.pattern}$")


class CustomersQuery(Query):
    period: str | None = Field(None, pattern=_PERIOD.pattern,
                               description="Billing period YYYY-MM (default: the current one).")
    customer: DepartmentId | None = Field(None, description="Only this customer (a customer token's own by default).")
    format: Literal["json", "csv"] = Field("json", description="json, or csv for a download.")


def visible_customer(who: AdminIdentity, asked: str | None) -> str | None:
    """The customer a read is confined to: the one asked for, or a customer token's own (asking
    for another one is refused)."""
    if who.role != CUSTOMER:
        return asked
    if asked is not None and asked != who.customer:
        raise errors.PermissionDenied(
            f"This token reads customer {who.customer}; it may not read customer {asked}.")
    return who.customer


async def _report(call: AdminCall[Any, NoBody], asked: str | None, fmt: str) -> BaseModel:
    runtime, who = call.runtime, call.who
    only = visible_customer(who, asked)
    policy = runtime.policy
    period = call.query.period or f"{runtime.admission.clock().astimezone(policy.timezone):%Y-%m}"
    start, end = period_bounds(period, policy)
    department = who.department if who.role == MANAGER else None
    lines = await customers(runtime.ledger, policy, start, end, only, department)
    if only is not None and not lines:
        if department is not None and only in policy.customers:
            raise errors.PermissionDenied(
                f"This token manages department {department}; customer {only} is not one of its customers.")
        raise errors.InvalidRequest(f"Unknown customer {only!r}: the policy in force does not declare it and "
                                    "it has no calls in the period.", code="unknown_customer", param="customer")
    report = customers_report(lines, period, with_plans=who.role != CUSTOMER and only is None)
    if fmt == "csv":
        return Download(content=csv_text(report), media_type=CSV, filename=f"customers-{period}.csv")
    return Document(report.document())


async def list_customers(call: AdminCall[CustomersQuery, NoBody]) -> BaseModel:
    return await _report(call, call.query.customer, call.query.format)


async def one_customer(call: AdminCall[CustomersQuery, NoBody]) -> BaseModel:
    return await _report(call, call.path["customer"].upper(), call.query.format)


_DESCRIPTION = ("Per customer: plan, usage and cost at provider prices, the invoice at the plan's rate card "
                "(included amount first, then billable, to the cent), cache reads and writes, tokens trimmed, "
                "dollars saved by the plan's efficiency features, latency p50/p95; and per plan its totals. "
                "A manager reads its department's customers; a customer token its own customer only.")

OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/customers", "Read the customers report", READERS, list_customers, CustomersQuery, NoBody,
              Document, downloads=("text/csv",), description=_DESCRIPTION),
    Operation("GET", "/customers/{customer}", "Read one customer's report", READERS, one_customer, CustomersQuery,
              NoBody, Document, downloads=("text/csv",), description=_DESCRIPTION),
]

__all__ = ["CUSTOMER", "OPERATIONS", "READERS", "visible_customer"]
