"""costwarden report chargeback"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.console import Console

from costwarden import errors
from costwarden.cli.common import DbOption, PolicyOption, fail, open_ledger, policy_for, run
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

FORMATS = ("table", "csv", "json", "focus")
_PERIOD = re.compile(r"\d{4}-(0[1-9]|1[0-2])")

app = typer.Typer(help="Reports over the ledger.", no_args_is_help=True)

PeriodOption = Annotated[str, typer.Option("--period", help="Billing period YYYY-MM: a calendar month in the policy's timezone.")]
SharedOption = Annotated[Path | None, typer.Option("--shared-costs", help="YAML or JSON file: allocation method (proportional, even, fixed), weights, shared items (see docs/chargeback.md).")]
InvoiceOption = Annotated[str | None, typer.Option("--invoice-total", help="Provider invoice total in USD to reconcile to; the variance is shown and allocated.")]


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


@app.command("chargeback")
def chargeback(
    period: PeriodOption,
    fmt: Annotated[str, typer.Option("--format", help="table, csv, json, or focus (FOCUS 1.2 CSV).")] = "table",
    shared_costs: SharedOption = None,
    invoice_total: InvoiceOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")] = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """The chargeback statement of a billing period, one line per department.

    A closed period prints the statement frozen when it was closed.
    """
    if fmt not in FORMATS:
        raise fail(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    shared, invoice = parse_options(period, shared_costs, invoice_total)

    async def work() -> Statement:
        ledger = await open_ledger(db)
        try:
            frozen = await frozen_statement(ledger, period)
            if frozen is not None:
                if shared_costs is not None or invoice_total is not None:
                    raise fail(f"{period} is closed: its statement was frozen with its shared costs and "
                               "invoice total; drop --shared-costs and --invoice-total to print it")
                return frozen
            known = await require_policy(ledger, policy)
            return await live_statement(ledger, known, period, shared, invoice, datetime.now(UTC))
        finally:
            await ledger.close()

    statement = run(work)
    with ExitStack() as stack:
        out: TextIO = sys.stdout if output is None else stack.enter_context(
            output.open("w", encoding="utf-8", newline=""))
        RENDERERS[fmt](statement, out)


def _table(statement: Statement, out: TextIO) -> None:
    # Wide enough for every column when the output is a file or a pipe.
    write_table(statement, Console(file=out, width=None if out.isatty() else 180, no_color=not out.isatty()))


def _json(statement: Statement, out: TextIO) -> None:
    out.write(json.dumps(statement_document(statement), indent=2, ensure_ascii=False) + "\n")


RENDERERS: dict[str, Callable[[Statement, TextIO], object]] = {
    "table": _table, "csv": write_csv, "json": _json, "focus": write_focus,
}
