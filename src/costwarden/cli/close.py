"""costwarden close | reopen"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from costwarden.cli.common import (
    DbOption,
    PolicyOption,
    audit,
    cli_actor,
    console,
    ledger_at,
    run,
)
from costwarden.cli.report import (
    InvoiceFileOption,
    InvoiceOption,
    PeriodOption,
    ProviderInvoiceOption,
    SharedOption,
    parse_invoices,
    parse_options,
    require_policy,
)
from costwarden.core.audit import AuditAction
from costwarden.core.money import format_dollars
from costwarden.core.policy import Policy
from costwarden.ledger import Ledger
from costwarden.ledger.closings import Closing
from costwarden.reports import Statement
from costwarden.reports import close as close_period
from costwarden.reports.collect import next_period
from costwarden.reports.collect import reopen as reopen_period


def close(
    period: PeriodOption,
    shared_costs: SharedOption = None,
    invoice_total: InvoiceOption = None,
    invoice: ProviderInvoiceOption = None,
    invoice_file: InvoiceFileOption = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Close a billing period that has ended: its chargeback statement is frozen as it is now.

    Usage recorded for it later is posted as correction lines in the next open period.
    """
    shared, total = parse_options(period, shared_costs, invoice_total)
    invoices = parse_invoices(invoice, invoice_file, invoice_total)

    async def work() -> tuple[Statement, Closing | None]:
        async with ledger_at(db) as ledger:
            known = await require_policy(ledger, policy)
            version = await stored_version(ledger, known)
            closed = await close_period(ledger, known, period, shared, total, datetime.now(UTC), invoices,
                                        closed_by=cli_actor().id, policy_version=version)
            closing = await ledger.statement_closing(period)
            await audit(ledger, AuditAction.PERIOD_CLOSED, period, None,
                        {"lines": len(closed.lines), "total_cents": closed.total_cents, "policy_version": version,
                         "checksum": None if closing is None else closing.checksum,
                         "restatement": None if closing is None else closing.restatement})
            return closed, closing

    statement, closing = run(work)
    following = next_period(period)
    console.print(f"Closed {period} ({statement.timezone}): {len(statement.lines)} lines, total "
                  f"{format_dollars(statement.total_cents * 10_000_000)}. Usage recorded for {period} from now on "
                  f"is posted as corrections in the next open period ({following} or later).", highlight=False,
                  soft_wrap=True)
    if closing is not None:
        restated = f", restatement {closing.restatement}" if closing.restatement else ""
        version = "a policy file not stored in the ledger" if closing.policy_version is None \
            else f"policy version {closing.policy_version}"
        console.print(f"Closed by {closing.closed_by} at {closing.closed_at:%Y-%m-%d %H:%M:%S} UTC under {version}"
                      f"{restated}; checksum {closing.checksum}", highlight=False, soft_wrap=True)


async def stored_version(ledger: Ledger, policy: Policy) -> int | None:
    """The ledger's version of ``policy``: the latest stored one when it has the same text."""
    latest = await ledger.latest_policy_version()
    return latest.id if latest is not None and latest.yaml == policy.source else None


def reopen(
    period: PeriodOption,
    reason: Annotated[str, typer.Option("--reason", help="Why the period is reopened (kept with the reopened statement and in the audit log).")],
    db: DbOption = None,
) -> None:
    """Reopen a closed period to restate it: its frozen statement is kept in the period's history
    and the period is open until it is closed again. Refused while a later period is closed."""
    parse_options(period, None, None)

    async def work() -> Closing:
        async with ledger_at(db) as ledger:
            reopened = await reopen_period(ledger, period, cli_actor().id, reason, datetime.now(UTC))
            await audit(ledger, AuditAction.PERIOD_REOPENED, period, None,
                        {"reason": reopened.reason, "checksum": reopened.checksum,
                         "restatement": reopened.restatement, "closed_at": reopened.closed_at.isoformat(),
                         "closed_by": reopened.closed_by})
            return reopened

    reopened = run(work)
    console.print(f"Reopened {period} (closed {reopened.closed_at:%Y-%m-%d %H:%M} UTC by {reopened.closed_by}, "
                  f"checksum {reopened.checksum}): kept in its history with the reason. Close it again to "
                  "restate it.", highlight=False, soft_wrap=True)

