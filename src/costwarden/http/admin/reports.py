"""Finance's reports over the admin API: the chargeback statement (JSON, CSV, FOCUS CSV), the
budget forecast, the efficiency report (JSON or CSV) and a simulation under a posted policy.

``admin`` and ``finance`` read the whole organization; a ``manager`` reads its own department
(its lines, budgets and rows) and is refused another one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from io import StringIO
from typing import Any, Literal

from pydantic import BaseModel, Field, RootModel

from costwarden import errors
from costwarden.core.periods import BILLING_PERIOD
from costwarden.http.admin.access import EVERYONE, known_department, visible_department
from costwarden.http.admin.api import AdminCall, Download, Operation
from costwarden.http.admin.schemas import DepartmentId, NoBody, Query
from costwarden.http.bodies import read_body
from costwarden.policy import parse_policy
from costwarden.reports import SharedCosts, Statement, frozen_statement, live_statement, parse_usd
from costwarden.reports import write_csv as write_statement_csv
from costwarden.reports.budget_forecast import budget_forecasts, forecast_report
from costwarden.reports.collect import period_bounds
from costwarden.reports.efficiency import efficiency, efficiency_report
from costwarden.reports.focus import bundled_list_prices, write_focus
from costwarden.reports.render import statement_document
from costwarden.reports.shared import PROPORTIONAL, SharedCostsError, parse_shared_costs
from costwarden.reports.simulate import simulate_ledger, simulation_report
from costwarden.reports.tabular import Report, csv_text

CSV = "text/csv; charset=utf-8"
_PERIOD = re.compile(f"^{BILLING_PERIOD.pattern}$")
Period = Field(pattern=_PERIOD.pattern, description="Billing period YYYY-MM (a month in the policy's timezone).")


class ReportQuery(Query):
    period: str | None = Field(None, pattern=_PERIOD.pattern,
                               description="Billing period YYYY-MM (default: the current one).")
    department: DepartmentId | None = Field(None, description="Only this department (a manager's own by default).")
    format: Literal["json", "csv"] = Field("json", description="json, or csv for a download.")


class ChargebackQuery(Query):
    period: str = Period
    department: DepartmentId | None = Field(None, description="Only this department's line (a manager's own).")
    format: Literal["json", "csv", "focus"] = Field("json", description="json, csv, or focus (FOCUS 1.2 CSV).")
    invoice_total: str | None = Field(None, description="An invoice total in USD to reconcile an open period to.")
    method: Literal["proportional", "even", "fixed"] | None = Field(
        None, description="How shared costs are allocated (default proportional); fixed needs weights.")
    weights: str | None = Field(None, description="Method fixed: DEPARTMENT:WEIGHT pairs, comma-separated "
                                                  "(ENGINEERING:3,MARKETING:1).")
    shared_costs: str | None = Field(None, description="A shared-costs document (YAML or JSON, as the CLI's "
                                                       "--shared-costs file): method, weights and named items.")


class Document(RootModel[dict[str, Any]]):
    """A report document: ``rows`` (every column present), ``notes``, and report-specific sections.
    Money is an exact decimal string in USD."""


def _period(call: AdminCall[Any, Any], period: str | None) -> tuple[str, datetime, datetime, datetime]:
    runtime = call.runtime
    now = runtime.admission.clock()
    chosen = period or f"{now.astimezone(runtime.policy.timezone):%Y-%m}"
    start, end = period_bounds(chosen, runtime.policy)
    return chosen, start, end, now


def _department(call: AdminCall[Any, Any], asked: str | None) -> str | None:
    department = visible_department(call.who, asked)
    if department is not None and asked is not None:
        known_department(call.runtime.policy, department)
    return department


def _answer(report: Report, fmt: str, name: str, department: str | None) -> BaseModel:
    if department is not None:
        report = replace(report, rows=[row for row in report.rows if row.get("department") == department])
    if fmt == "csv":
        return Download(content=csv_text(report), media_type=CSV, filename=f"{name}.csv")
    return Document(report.document())


async def chargeback(call: AdminCall[ChargebackQuery, NoBody]) -> BaseModel:
    query, runtime = call.query, call.runtime
    department = _department(call, query.department)
    statement = await frozen_statement(runtime.ledger, query.period)
    if statement is None:
        with _naming("invoice_total"):
            invoice = None if query.invoice_total is None else parse_usd(query.invoice_total, "invoice_total")
        # the allocation is checked against the statement's lines too (weights naming no department)
        with _naming("shared_costs" if query.shared_costs else "weights" if query.weights else "method"):
            statement = await live_statement(runtime.ledger, runtime.policy, query.period, _shared_costs(query),
                                             invoice, runtime.admission.clock())
    else:
        given = [name for name in ("invoice_total", "method", "weights", "shared_costs") if getattr(query, name)]
        if given:
            raise errors.InvalidRequest(f"{query.period} is closed: its statement was frozen with its shared costs "
                                        "and invoice total.", param=given[0])
    if department is not None:
        statement = _only(statement, department)
    if query.format == "json":
        return Document(statement_document(statement))
    out = StringIO()
    if query.format == "csv":
        write_statement_csv(statement, out)
    else:
        write_focus(statement, out, bundled_list_prices())
    suffix = "-focus" if query.format == "focus" else ""
    return Download(content=out.getvalue(), media_type=CSV, filename=f"chargeback-{query.period}{suffix}.csv")


_WEIGHT = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*:\s*([0-9]+(?:\.[0-9]+)?)\s*$")


def _shared_costs(query: ChargebackQuery) -> SharedCosts:
    """The allocation the caller names: a shared-costs document, or ``method`` and ``weights``
    (validated as the same document, so that both give the same errors)."""
    if query.shared_costs is not None:
        if query.method is not None or query.weights is not None:
            raise errors.InvalidRequest("Give either shared_costs or method and weights, not both.",
                                        param="shared_costs")
        return parse_shared_costs(query.shared_costs, "shared_costs")
    if query.method is None and query.weights is None:
        return SharedCosts()
    lines = [f"method: {query.method or PROPORTIONAL}"]
    if query.weights is not None:
        pairs = [_WEIGHT.match(pair) for pair in query.weights.split(",")]
        if not all(pairs):
            raise errors.InvalidRequest(f"Bad weights {query.weights!r}: use DEPARTMENT:WEIGHT pairs, "
                                        "comma-separated (ENGINEERING:3,MARKETING:1).", param="weights")
        lines += ["weights:", *(f"  {m[1].upper()}: {m[2]}" for m in pairs if m)]
    return parse_shared_costs("\n".join(lines) + "\n", "method and weights")


@contextmanager
def _naming(param: str) -> Iterator[None]:
    """A refusal of the block's shared costs or amounts names the query parameter ``param``."""
    try:
        yield
    except SharedCostsError as exc:
        exc.param = exc.param or param
        raise


def _only(statement: Statement, department: str) -> Statement:
    """One department's part of a statement: its lines and its usage rows."""
    return replace(statement, lines=tuple(line for line in statement.lines if line.department.id == department),
                   usage=tuple(row for row in statement.usage if row.department == department),
                   corrections=tuple(row for row in statement.corrections if row.department == department))


async def forecast(call: AdminCall[ReportQuery, NoBody]) -> BaseModel:
    _, start, end, now = _period(call, call.query.period)
    department = _department(call, call.query.department)
    policy = call.runtime.policy
    lines = await budget_forecasts(call.runtime.ledger, policy, start, end, now, department)
    report = forecast_report(lines, policy.timezone_name, now)
    return _answer(report, call.query.format, "forecast", None)


async def efficiency_answer(call: AdminCall[ReportQuery, NoBody]) -> BaseModel:
    period, start, end, _ = _period(call, call.query.period)
    department = _department(call, call.query.department)
    tallies = await efficiency(call.runtime.ledger, call.runtime.policy.catalog, start, end, department)
    return _answer(efficiency_report(tallies, period), call.query.format, f"efficiency-{period}", None)


async def simulation(call: AdminCall[ReportQuery, NoBody]) -> BaseModel:
    raw = await read_body(call.request, call.runtime.settings.max_body_bytes)
    if not raw.strip():
        raise errors.InvalidRequest("Send the policy to simulate as the request body (YAML).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.InvalidRequest(f"The policy is not UTF-8 text: {exc}.") from exc
    proposed = parse_policy(text, source="the policy in the request body")
    department = visible_department(call.who, call.query.department)
    period = call.query.period or f"{call.runtime.admission.clock().astimezone(proposed.timezone):%Y-%m}"
    start, end = period_bounds(period, proposed)
    result = await simulate_ledger(proposed, call.runtime.ledger, start, end)
    return _answer(simulation_report(result, proposed), call.query.format, f"simulation-{period}", department)


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/chargeback", "Read the chargeback statement", EVERYONE, chargeback, ChargebackQuery, NoBody,
              Document, downloads=("text/csv",),
              description="The statement of a billing period (the frozen one once closed): `format=json`, `csv` "
                          "(one row per department) or `focus` (FOCUS 1.2 CSV). A manager gets its own line."),
    Operation("GET", "/reports/forecast", "Read the budget forecast", EVERYONE, forecast, ReportQuery, NoBody,
              Document, downloads=("text/csv",),
              description="Per calendar budget: spent so far, projected spend at the period's end and the date "
                          "the limit is projected to be reached, from the mean spend per weekday and per weekend "
                          "day (insufficient data before 3 complete days). A manager gets its department's."),
    Operation("GET", "/reports/efficiency", "Read the efficiency report", EVERYONE, efficiency_answer, ReportQuery,
              NoBody, Document, downloads=("text/csv",),
              description="Per department and model: cached tokens, dollars saved by caching and by downgrades, "
                          "tokens trimmed, cost per call and per 1M tokens."),
    Operation("POST", "/simulate", "Simulate a policy", EVERYONE, simulation, ReportQuery, NoBody, Document,
              raw_body="application/yaml", downloads=("text/csv",),
              description="Replays the period's recorded calls in time order under the policy in the body "
                          "(YAML) through the gateway's admission: per department, calls allowed, downgraded, "
                          "clamped and rejected, cost before and after, and when each budget would have run out. "
                          "A manager gets its department's row."),
]

__all__ = ["OPERATIONS"]
