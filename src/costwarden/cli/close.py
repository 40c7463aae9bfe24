"""costwarden close"""

from __future__ import annotations

from datetime import UTC, datetime

from costwarden.cli.common import DbOption, PolicyOption, console, open_ledger, run
from costwarden.cli.report import InvoiceOption, PeriodOption, SharedOption, parse_options, require_policy
from costwarden.core.money import format_dollars
from costwarden.reports import Statement
from costwarden.reports import close as close_period
from costwarden.reports.collect import next_period


def close(
    period: PeriodOption,
    shared_costs: SharedOption = None,
    invoice_total: InvoiceOption = None,
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Close a billing period that has ended: its chargeback statement is frozen as it is now.

    Usage recorded for it later is posted as correction lines in the next open period.
    """
    shared, invoice = parse_options(period, shared_costs, invoice_total)

    async def work() -> Statement:
        ledger = await open_ledger(db)
        try:
            known = await require_policy(ledger, policy)
            return await close_period(ledger, known, period, shared, invoice, datetime.now(UTC))
        finally:
            await ledger.close()

    statement = run(work)
    following = next_period(period)
    console.print(f"Closed {period} ({statement.timezone}): {len(statement.lines)} lines, total "
                  f"{format_dollars(statement.total_cents * 10_000_000)}. Usage recorded for {period} from now on "
                  f"is posted as corrections in the next open period ({following} or later).", highlight=False)

