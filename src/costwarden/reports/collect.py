"""Statements from the ledger: live ones for open periods, frozen ones for closed periods.

A period is closed by storing its statement (``close``). The ledger is append-only, so usage that
arrives for a closed period later (an interrupted call settled on restart, an import, a stream that
finished after the close) is exactly the difference between the ledger's totals for the period now
and what was billed for it: the frozen statement's usage plus the corrections already posted in
later closed statements. That difference is posted, per day, department, model and price, as
correction lines of the next open period; the closed statement is never rewritten.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from costwarden.core.catalog import Catalog
from costwarden.core.metadata import MetadataVersion, changes, merged, relevant
from costwarden.core.periods import month_bounds
from costwarden.core.policy import Policy
from costwarden.errors import InvalidRequest
from costwarden.ledger import Ledger
from costwarden.ledger.closings import Closing
from costwarden.reports import codec
from costwarden.reports.chargeback import compute_statement, department_infos
from costwarden.reports.codes import info_on
from costwarden.reports.reconcile import provider_invoices
from costwarden.reports.shared import SharedCosts
from costwarden.reports.statement import Counts, Statement, UsageKey, UsageRow

GROUPS = ("day", "department", "model_served", "provider", "price_version", "team", "user", "tag:project")


class PeriodClosed(InvalidRequest):
    """The period's statement is frozen and cannot be recomputed or closed again."""

    code = "period_closed"


def period_bounds(period: str, policy: Policy) -> tuple[datetime, datetime]:
    """The UTC instants bounding billing period ``YYYY-MM`` in the policy's timezone."""
    try:
        return month_bounds(period, policy.timezone)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def previous_period(period: str) -> str:
    """``2026-01`` -> ``2025-12``."""
    year, month = int(period[:4]), int(period[5:7])
    return f"{year - 1}-12" if month == 1 else f"{year}-{month - 1:02d}"


def next_period(period: str) -> str:
    """``2026-12`` -> ``2027-01``."""
    year, month = int(period[:4]), int(period[5:7])
    return f"{year + 1}-01" if month == 12 else f"{year}-{month + 1:02d}"


async def period_usage(ledger: Ledger, start: datetime, end: datetime, catalog: Catalog) -> list[UsageRow]:
    """The ledger's usage in [start, end) per UTC day, department, model, provider and price version."""
    rows = await ledger.totals(start, end, group_by=GROUPS)
    usage = []
    for row in rows:
        model = str(row.groups["model_served"])
        day = row.groups["day"]
        assert isinstance(day, date)
        spec = catalog.get(model)
        usage.append(UsageRow(
            day=day, department=str(row.groups["department"]), model=model,
            provider=str(row.groups["provider"]), price_version=str(row.groups["price_version"] or ""),
            counts=Counts(row.requests, row.input_tokens, row.cached_input_tokens, row.output_tokens, row.cost_nanos,
                          row.cache_write_5m_tokens, row.cache_write_1h_tokens, row.reasoning_tokens,
                          row.audio_input_tokens),
            tier=spec.tier if spec is not None else None, team=_text(row.groups["team"]),
            user=_text(row.groups["user"]), project=_text(row.groups["tag:project"]),
        ))
    return usage


def _text(value: object) -> str | None:
    return None if value is None else str(value)


async def frozen_statement(ledger: Ledger, period: str) -> Statement | None:
    """The statement stored when ``period`` was closed, or None."""
    stored = await ledger.frozen_statement(period)
    if stored is None:
        return None
    closed_at, body = stored
    try:
        statement = codec.loads(body)
    except ValueError as exc:
        raise InvalidRequest(f"the frozen statement of {period} cannot be read: {exc}") from exc
    return replace(statement, closed_at=closed_at)


async def live_statement(ledger: Ledger, policy: Policy, period: str, shared: SharedCosts,
                         invoice_nanos: int | None, now: datetime,
                         invoices: Mapping[str, int] | None = None) -> Statement:
    """The statement of ``period`` computed from the ledger now, with the corrections of closed
    periods posted to it when it is open; ``invoices`` are provider -> invoice total of the
    provider's UTC month, reconciled per provider."""
    start, end = period_bounds(period, policy)
    closed = await ledger.closed_periods()
    usage = await period_usage(ledger, start, end, policy.catalog)
    corrections = [] if period in closed else await pending_corrections(ledger, period, closed, policy.catalog)
    refused = await ledger.rejection_totals(start, end, group_by=("department",))
    rejections = {str(row.groups["department"]): row.requests for row in refused if row.groups["department"]}
    per_provider = await provider_invoices(ledger, period, policy.timezone, invoices) if invoices else ()
    last_day = (end - timedelta(microseconds=1)).astimezone(UTC).date()
    first_day = min([start.astimezone(UTC).date(), *(row.day for row in corrections)])
    versions = relevant(await metadata_history(ledger, policy, now), first_day, last_day)
    infos = [info_on(info, versions, last_day) for info in department_infos(policy)]
    statement = compute_statement(period, policy.timezone_name, start, end, infos, usage,
                                  rejections, shared, now, corrections, invoice_nanos, per_provider)
    # A period closed without a stored statement (through the ledger alone) is computed live, as closed.
    return replace(statement, closed_at=closed.get(period), metadata=versions)


async def metadata_history(ledger: Ledger, policy: Policy, now: datetime) -> list[MetadataVersion]:
    """The departments' recorded names and codes, with the changes ``policy`` makes to them as if it
    were adopted ``now`` (a policy file given to a report, not yet adopted by a server)."""
    history = await ledger.department_metadata()
    return merged(history, changes(history, policy, now.astimezone(UTC).date()))


async def pending_corrections(ledger: Ledger, period: str, closed: Mapping[str, datetime],
                              catalog: Catalog) -> list[UsageRow]:
    """UsageRow of the closed periods just before ``period`` that their statements did not bill.

    ``period`` is the next open period of every closed period in the unbroken run of closed periods
    that ends just before it; later statements of that run may have posted corrections already.
    A closed period whose count of calls in the ledger is what its statement and the later ones
    billed has nothing new (the ledger is append-only): it costs one count over its rollups, and
    neither its statement nor its usage is read.
    """
    run = []
    earlier = previous_period(period)
    while earlier in closed:
        run.append(earlier)
        earlier = previous_period(earlier)
    summaries = {p: _summary_of(text) for p, text in (await ledger.statement_summaries(run)).items()}
    statements: dict[str, Statement | None] = {}

    async def statement(of: str) -> Statement | None:
        if of not in statements:
            statements[of] = await frozen_statement(ledger, of)
        return statements[of]

    corrections: list[UsageRow] = []
    for i, earlier in enumerate(run):
        if await _billed_in_full(ledger, earlier, [summaries.get(p) for p in run[:i + 1]]):
            continue
        frozen = await statement(earlier)
        if frozen is None:
            continue
        later = [s for p in run[:i] if _may_correct(summaries.get(p), earlier) and (s := await statement(p)) is not None]
        billed = [*frozen.usage, *(row for s in later for row in s.corrections if row.corrects == earlier)]
        live = await period_usage(ledger, frozen.start, frozen.end, catalog)
        corrections += _difference(live, billed, earlier)
    return sorted(corrections, key=lambda row: (row.corrects or "", row.key))


def summary(statement: Statement) -> str:
    """What ``statement`` bills, in the few bytes stored beside it (``schema.SUMMARY_COLUMNS``)."""
    billed: dict[str, int] = defaultdict(int)
    billed[statement.period] += sum(row.counts.requests for row in statement.usage)
    for row in statement.corrections:
        if row.corrects is not None:
            billed[row.corrects] += row.counts.requests
    return json.dumps({"start": statement.start.isoformat(), "end": statement.end.isoformat(), "billed": billed},
                      sort_keys=True)


def _summary_of(text: str | None) -> dict[str, Any] | None:
    return None if text is None else dict(json.loads(text))


def _may_correct(summary: dict[str, Any] | None, period: str) -> bool:
    """Whether a later statement (by its summary) may hold corrections of ``period``."""
    return summary is None or int(summary["billed"].get(period, 0)) != 0


async def _billed_in_full(ledger: Ledger, period: str, summaries: Sequence[dict[str, Any] | None]) -> bool:
    """Whether the ledger holds no more calls of closed ``period`` than its statement (the last of
    ``summaries``) and the later ones (the others) billed; False when one has no summary."""
    if any(s is None for s in summaries):
        return False
    own = summaries[-1]
    assert own is not None
    billed = sum(int(s["billed"].get(period, 0)) for s in summaries if s is not None)
    start, end = datetime.fromisoformat(own["start"]), datetime.fromisoformat(own["end"])
    return sum(row.requests for row in await ledger.totals(start, end)) == billed


def _difference(live: Sequence[UsageRow], billed: Sequence[UsageRow], corrects: str) -> list[UsageRow]:
    """Per ledger group, what the ledger holds now beyond what was billed."""
    if not any(row.detailed for row in billed):  # frozen without team, user and project: compare coarsely
        live = [row.coarse() for row in live]
    owed: dict[UsageKey, Counts] = defaultdict(Counts)
    rows: dict[UsageKey, UsageRow] = {}
    for row in live:
        owed[row.key] = owed[row.key] + row.counts
        rows[row.key] = row
    for row in billed:
        owed[row.key] = owed[row.key] - row.counts
        rows.setdefault(row.key, row)
    return [replace(rows[key], counts=counts, corrects=corrects) for key, counts in owed.items() if counts]


async def close(ledger: Ledger, policy: Policy, period: str, shared: SharedCosts, invoice_nanos: int | None,
                now: datetime, invoices: Mapping[str, int] | None = None, *, closed_by: str | None = None,
                policy_version: int | None = None) -> Statement:
    """Close ``period``: compute its statement and store it, frozen, with who closed it and the
    policy version. Refuses a period that has not ended yet, or whose statement is frozen already
    (PeriodClosed)."""
    _, end = period_bounds(period, policy)
    existing = await frozen_statement(ledger, period)
    if existing is not None:
        raise PeriodClosed(f"{period} was closed on {_when(existing.closed_at)}; its statement is frozen")
    if end > now:
        raise InvalidRequest(f"{period} has not ended: it ends {end.astimezone(policy.timezone):%Y-%m-%d %H:%M} "
                             f"{policy.timezone_name}; a period can be closed once it has ended")
    closed_at = (await ledger.closed_periods()).get(period, now)
    statement = await live_statement(ledger, policy, period, shared, invoice_nanos, now, invoices)
    statement = replace(statement, closed_at=closed_at)
    stored_at = await ledger.freeze_statement(period, codec.dumps(statement), now, closed_by=closed_by,
                                              policy_version=policy_version, summary=summary(statement))
    if stored_at is None:  # closed by someone else meanwhile
        raise PeriodClosed(f"{period} was closed meanwhile; its statement is frozen")
    return replace(statement, closed_at=stored_at)


async def reopen(ledger: Ledger, period: str, by: str, reason: str, now: datetime) -> Closing:
    """Reopen a closed period so that it can be restated (closed again): its frozen statement moves
    to the period's history. Refused while a later period is closed, since that period's statement
    may hold corrections of this one that a restatement would bill twice."""
    if not reason.strip():
        raise InvalidRequest("give the reason for reopening: it is kept with the reopened statement")
    closed = await ledger.closed_periods()
    later = sorted(p for p in closed if p > period)
    if later:
        raise InvalidRequest(f"{', '.join(later)} {'is' if len(later) == 1 else 'are'} closed after {period}: "
                             f"reopen {later[-1]} first (latest first), since a later statement may hold "
                             f"corrections of {period}")
    reopened = await ledger.reopen_statement(period, by, reason.strip(), now)
    if reopened is None:
        raise InvalidRequest(f"{period} has no frozen statement to reopen")
    return reopened


def _when(at: datetime | None) -> str:
    return "an unknown date" if at is None else f"{at:%Y-%m-%d %H:%M} UTC"


__all__ = [
    "PeriodClosed",
    "close",
    "frozen_statement",
    "live_statement",
    "metadata_history",
    "next_period",
    "pending_corrections",
    "period_bounds",
    "period_usage",
    "previous_period",
    "reopen",
]
