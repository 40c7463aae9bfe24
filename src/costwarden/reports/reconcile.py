"""Reconciliation with the providers' invoices, one per provider.

Providers invoice calendar months in UTC; budgets and statements follow the policy's timezone.
So each provider's invoice is compared with the ledger's cost of that provider's calls in the
UTC month (``variance = invoice - ledger``), and the hours where the two months differ are shown
on their own, never folded into the variance: in New York, the first 4 hours of November UTC
belong to October's statement (``invoice only``) and the first 5 hours of December UTC to
November's (``statement only``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo

from costwarden.core.periods import month_bounds
from costwarden.ledger import Ledger
from costwarden.reports.shared import SharedCostsError, parse_usd


class Side(StrEnum):
    """Which month boundary hours belong to."""

    INVOICE_ONLY = "invoice only"  # in the provider's UTC month, not in the statement's period
    STATEMENT_ONLY = "statement only"  # in the statement's period, not in the UTC month


@dataclass(frozen=True, slots=True)
class Boundary:
    """Hours at one end of the month that only one of the two months has, and their cost."""

    start: datetime
    end: datetime
    side: Side
    nanos: int

    @property
    def hours(self) -> int:
        return int((self.end - self.start).total_seconds() // 3600)


@dataclass(frozen=True, slots=True)
class ProviderInvoice:
    """One provider's invoice against the ledger."""

    provider: str
    invoice_nanos: int
    ledger_nanos: int  # the provider's calls in the UTC billing month
    boundaries: tuple[Boundary, ...]

    @property
    def variance_nanos(self) -> int:
        return self.invoice_nanos - self.ledger_nanos

    @property
    def statement_nanos(self) -> int:
        """The provider's calls in the statement's period: the UTC month, less its invoice-only
        hours, plus the statement-only ones."""
        shift = sum(b.nanos if b.side == Side.STATEMENT_ONLY else -b.nanos for b in self.boundaries)
        return self.ledger_nanos + shift


def parse_invoice_options(given: Iterable[str]) -> dict[str, int]:
    """``PROVIDER=TOTAL`` options to provider -> nano-dollars; refuses a malformed or repeated one."""
    invoices: dict[str, int] = {}
    for option in given:
        provider, sep, total = option.partition("=")
        provider = provider.strip().lower()
        if not sep or not provider:
            raise SharedCostsError([f"{option!r}: use PROVIDER=TOTAL, e.g. openai=1234.56"], source="--invoice")
        if provider in invoices:
            raise SharedCostsError([f"{provider}: given twice"], source="--invoice")
        invoices[provider] = parse_usd(total, f"--invoice {provider}")
    return invoices


def read_invoice_file(path: Path) -> dict[str, int]:
    """A CSV with the columns ``provider`` and ``total_usd`` (more may follow), one row per provider."""
    try:
        with path.open(encoding="utf-8", newline="") as source:
            rows = list(csv.DictReader(source))
    except OSError as exc:
        raise SharedCostsError([f"cannot read it: {exc.strerror}"], source=str(path)) from exc
    problems, invoices = [], {}
    for number, row in enumerate(rows, start=2):
        provider, total = (row.get("provider") or "").strip().lower(), (row.get("total_usd") or "").strip()
        if not provider or not total:
            problems.append(f"line {number}: needs provider and total_usd")
            continue
        if provider in invoices:
            problems.append(f"line {number}: {provider} is listed twice")
            continue
        try:
            invoices[provider] = parse_usd(total, f"line {number}")
        except SharedCostsError as exc:
            problems += [f"line {number}: {message}" for message in exc.problems]
    if problems or not invoices:
        raise SharedCostsError(problems or ["no invoice rows (columns: provider,total_usd)"], source=str(path))
    return invoices


def boundary_windows(period: str, tz: ZoneInfo) -> list[tuple[datetime, datetime, Side]]:
    """The hours at each end where the UTC month and the policy's month differ."""
    local_start, local_end = month_bounds(period, tz)
    utc_start, utc_end = month_bounds(period, ZoneInfo("UTC"))
    windows = []
    for utc_edge, local_edge, at_start in ((utc_start, local_start, True), (utc_end, local_end, False)):
        if utc_edge == local_edge:
            continue
        early, late = min(utc_edge, local_edge), max(utc_edge, local_edge)
        # At the start, hours after the UTC edge but before the local one are the invoice's only.
        utc_first = utc_edge < local_edge
        side = Side.INVOICE_ONLY if utc_first == at_start else Side.STATEMENT_ONLY
        windows.append((early, late, side))
    return windows


async def provider_invoices(ledger: Ledger, period: str, tz: ZoneInfo,
                            invoices: Mapping[str, int]) -> tuple[ProviderInvoice, ...]:
    """Each invoiced provider against the ledger's UTC month and the boundary hours."""
    utc_start, utc_end = month_bounds(period, ZoneInfo("UTC"))
    month = await _by_provider(ledger, utc_start, utc_end)
    edges = [(start, end, side, await _by_provider(ledger, start, end))
             for start, end, side in boundary_windows(period, tz)]
    return tuple(
        ProviderInvoice(provider, invoices[provider], month.get(provider, 0),
                        tuple(Boundary(start, end, side, costs.get(provider, 0)) for start, end, side, costs in edges))
        for provider in sorted(invoices))


async def _by_provider(ledger: Ledger, start: datetime, end: datetime) -> dict[str, int]:
    rows = await ledger.totals(start.astimezone(UTC), end.astimezone(UTC), group_by=("provider",))
    return {str(row.groups["provider"]): row.cost_nanos for row in rows}


__all__ = ["Boundary", "ProviderInvoice", "Side", "boundary_windows", "parse_invoice_options", "provider_invoices",
           "read_invoice_file"]
