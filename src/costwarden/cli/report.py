"""costwarden report chargeback | forecast | efficiency | customers"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console

from costwarden import errors
from costwarden.app.bootstrap import policy_for
from costwarden.cli.common import DbOption, PolicyOption, fail, ledger_at, run
from costwarden.core.periods import BILLING_PERIOD
from costwarden.core.policy import Policy
from costwarden.ledger import Ledger
from costwarden.reports import (
    SharedCosts,
    Statement,
    frozen_statement,
    live_statement,
    load_shared_costs,
    parse_usd,
    statement_document,
    write_csv,
    write_focus,
    write_table,
)
from costwarden.reports.breakdown import Dimension, breakdown
from costwarden.reports.budget_forecast import budget_forecasts, forecast_report
from costwarden.reports.collect import period_bounds
from costwarden.reports.customers import customers, customers_report
from costwarden.reports.efficiency import efficiency, efficiency_report
from costwarden.reports.focus import bundled_list_prices
from costwarden.reports.journal import CLEARING_ACCOUNT, journal
from costwarden.reports.reconcile import parse_invoice_options, read_invoice_file
from costwarden.reports.tabular import Format, Report, write_report

FORMATS = ("table", "csv", "json", "focus")
_PERIOD = BILLING_PERIOD

app = typer.Typer(help="Reports over the ledger.", no_args_is_help=True)

PeriodOption = Annotated[str, typer.Option("--period", help="Billing period YYYY-MM: a calendar month in the policy's timezone.")]
SharedOption = Annotated[Path | None, typer.Option("--shared-costs", help="YAML or JSON file: allocation method (proportional, even, fixed), weights, shared items (see docs/chargeback.md).")]
InvoiceOption = Annotated[str | None, typer.Option("--invoice-total", help="Provider invoice total in USD to reconcile to; the variance is shown and allocated.")]
ProviderInvoiceOption = Annotated[list[str] | None, typer.Option("--invoice", help="PROVIDER=TOTAL: one provider's invoice for the UTC month (repeatable); reconciled per provider.")]
InvoiceFileOption = Annotated[Path | None, typer.Option("--invoice-file", help="CSV of provider,total_usd: the providers' invoices for the UTC month.")]


def parse_invoices(invoice: list[str] | None, invoice_file: Path | None,
                   invoice_total: str | None) -> dict[str, int] | None:
    """--invoice PROVIDER=TOTAL or --invoice-file, as provider -> nano-dollars (None if neither)."""
    if invoice and invoice_file is not None:
        raise fail("give --invoice or --invoice-file, not both")
    if (invoice or invoice_file is not None) and invoice_total is not None:
        raise fail("give invoices per provider (--invoice, --invoice-file) or one --invoice-total, not both")
    try:
        if invoice_file is not None:
            return read_invoice_file(invoice_file)
        return parse_invoice_options(invoice) if invoice else None
    except errors.CostwardenError as exc:
        raise fail(exc.message) from exc


def parse_options(period: str, shared_costs: Path | None,
                  invoice_total: str | None) -> tuple[SharedCosts, int | None]:
    """Check --period and read --shared-costs and --invoice-total before touching the database."""
    if not _PERIOD.fullmatch(period):
        raise fail(f"bad billing period {period!r}: use YYYY-MM, e.g. 2026-11")
    try:
        shared = load_shared_costs(shared_costs) if shared_costs is not None else SharedCosts()
        invoice = parse_usd(invoice_total, "--invoice-total") if invoice_total is not None else None
    except errors.CostwardenError as exc:
        raise fail(exc.message) from exc
    return shared, invoice


async def require_policy(ledger: Ledger, path: str | None) -> Policy:
    """``--policy``, else the latest stored policy; a clear error when there is neither."""
    policy = await policy_for(ledger, path)
    if policy is None:
        raise fail("no policy: give --policy FILE (this database has no policy stored by a server)")
    return policy


async def frozen_or_none(ledger: Ledger, period: str, policy: str | None) -> Statement | None:
    """The frozen statement of ``period`` if it is closed. A ``--policy`` given is loaded first, so
    that a wrong one is an error even where the frozen statement does not need it."""
    if policy is not None:
        await require_policy(ledger, policy)
    return await frozen_statement(ledger, period)


@app.command("chargeback")
def chargeback(
    period: PeriodOption,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json, or focus (FOCUS 1.2 CSV).")] = "table",
    shared_costs: SharedOption = None,
    invoice_total: InvoiceOption = None,
    invoice: ProviderInvoiceOption = None,
    invoice_file: InvoiceFileOption = None,
    by: Annotated[str | None, typer.Option("--by", help="Break each department line down by team, user or tag:project.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")] = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """The chargeback statement of a billing period, one line per department.

    A closed period prints the statement frozen when it was closed.
    """
    if fmt not in FORMATS:
        raise fail(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    dimension = _dimension(by, fmt)
    shared, total = parse_options(period, shared_costs, invoice_total)
    invoices = parse_invoices(invoice, invoice_file, invoice_total)

    async def work() -> Statement:
        async with ledger_at(db) as ledger:
            frozen = await frozen_or_none(ledger, period, policy)
            if frozen is not None:
                if shared_costs is not None or invoice_total is not None or invoices:
                    raise fail(f"{period} is closed: its statement was frozen with its shared costs and "
                               "invoice total; drop --shared-costs and --invoice-total to print it")
                return frozen
            known = await require_policy(ledger, policy)
            return await live_statement(ledger, known, period, shared, total, datetime.now(UTC), invoices)

    statement = run(work)
    if dimension is not None:
        emit(breakdown(statement, dimension), Format(fmt), output)
        return
    with ExitStack() as stack:
        out: TextIO = sys.stdout if output is None else stack.enter_context(
            output.open("w", encoding="utf-8", newline=""))
        RENDERERS[fmt](statement, out)


def _dimension(by: str | None, fmt: str) -> Dimension | None:
    if by is None:
        return None
    try:
        dimension = Dimension(by)
    except ValueError:
        raise fail(f"unknown --by {by!r}: use {', '.join(Dimension)}") from None
    if fmt == "focus":
        raise fail("--by does not apply to FOCUS, whose rows carry team, user and project in Tags")
    return dimension


async def statement_for(db: str | None, policy: str | None, period: str) -> Statement:
    """The frozen statement of a closed period, else the live one (no shared costs or invoice)."""
    async with ledger_at(db) as ledger:
        frozen = await frozen_or_none(ledger, period, policy)
        if frozen is not None:
            return frozen
        known = await require_policy(ledger, policy)
        return await live_statement(ledger, known, period, SharedCosts(), None, datetime.now(UTC))


@app.command("journal")
def journal_command(
    period: PeriodOption,
    clearing_account: Annotated[str, typer.Option("--clearing-account", help="The account credited.")] = CLEARING_ACCOUNT,
    fmt: Annotated[str, typer.Option("--format", help="table, csv (for a GL import) or json.")] = "table",
    shared_costs: SharedOption = None,
    output: OutputOption = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """A general-ledger journal entry for a period's statement: a debit per cost center and GL
    account, a credit to the AI clearing account (the frozen statement once the period is closed)."""
    chosen = report_format(fmt)
    shared, _ = parse_options(period, shared_costs, None)

    async def work() -> Statement:
        if shared_costs is None:
            return await statement_for(db, policy, period)
        async with ledger_at(db) as ledger:
            if await frozen_or_none(ledger, period, policy) is not None:
                raise fail(f"{period} is closed: its statement was frozen with its shared costs; drop --shared-costs")
            known = await require_policy(ledger, policy)
            return await live_statement(ledger, known, period, shared, None, datetime.now(UTC))

    emit(journal(run(work), clearing_account), chosen, output)


def _table(statement: Statement, out: TextIO) -> None:
    # Wide enough for every column when the output is a file or a pipe.
    write_table(statement, Console(file=out, width=None if out.isatty() else 180, no_color=not out.isatty()))


def _json(statement: Statement, out: TextIO) -> None:
    out.write(json.dumps(statement_document(statement), indent=2, ensure_ascii=False) + "\n")


RENDERERS: dict[str, Callable[[Statement, TextIO], object]] = {
    "table": _table, "csv": write_csv, "json": _json,
    "focus": lambda statement, out: write_focus(statement, out, bundled_list_prices()),
}


FormatOption = Annotated[str, typer.Option("--format", help="table, csv or json.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")]


def report_format(fmt: str) -> Format:
    """--format of the flat reports, checked before touching the database."""
    try:
        return Format(fmt)
    except ValueError:
        raise fail(f"unknown format {fmt!r}: use {', '.join(Format)}") from None


def emit(report: Report, fmt: Format, output: Path | None) -> None:
    """Write a flat report to --output or standard output."""
    with ExitStack() as stack:
        out: TextIO = sys.stdout if output is None else stack.enter_context(
            output.open("w", encoding="utf-8", newline=""))
        write_report(report, fmt, out)


def current_period(policy: Policy, now: datetime) -> str:
    """The billing period containing ``now`` in the policy's timezone."""
    return f"{now.astimezone(policy.timezone):%Y-%m}"


@app.command("forecast")
def forecast(
    period: Annotated[str | None, typer.Option("--period", help="Billing period YYYY-MM (default: the current one).")] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Per budget: spent so far, projected spend at the period's end and the date the limit is
    projected to be reached, from the mean spend per weekday and per weekend day."""
    chosen = report_format(fmt)
    if period is not None and not _PERIOD.fullmatch(period):
        raise fail(f"bad billing period {period!r}: use YYYY-MM, e.g. 2026-11")

    async def work() -> Report:
        async with ledger_at(db) as ledger:
            known = await require_policy(ledger, policy)
            now = datetime.now(UTC)
            start, end = period_bounds(period or current_period(known, now), known)
            lines = await budget_forecasts(ledger, known, start, end, now)
            return forecast_report(lines, known.timezone_name, now)

    emit(run(work), chosen, output)


@app.command("efficiency")
def efficiency_command(
    period: PeriodOption,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Per department: cached tokens and what caching saved, what downgrades saved, tokens trimmed,
    and the cost per call and per 1M tokens of each model."""
    chosen = report_format(fmt)
    parse_options(period, None, None)

    async def work() -> Report:
        async with ledger_at(db) as ledger:
            known = await require_policy(ledger, policy)
            start, end = period_bounds(period, known)
            return efficiency_report(await efficiency(ledger, known.catalog, start, end), period)

    emit(run(work), chosen, output)


@app.command("customers")
def customers_command(
    period: PeriodOption,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer.")] = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Per business customer: plan, usage, cost, the invoice at its rate card (included amount, then
    billable, to the cent), cache reads and writes, tokens trimmed, dollars saved, latency p50/p95."""
    chosen = report_format(fmt)
    parse_options(period, None, None)

    async def work() -> Report:
        async with ledger_at(db) as ledger:
            known = await require_policy(ledger, policy)
            start, end = period_bounds(period, known)
            only = customer.upper() if customer else None
            lines = await customers(ledger, known, start, end, only)
            if only is not None and not lines:
                raise fail(f"unknown customer {only!r}: the policy does not declare it and it has no calls in {period}")
            return customers_report(lines, period, with_plans=only is None)

    emit(run(work), chosen, output)
