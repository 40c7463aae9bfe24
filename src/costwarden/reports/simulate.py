"""``simulate``: replay recorded calls, in time order, under another policy.

Each usage event is judged by the gateway's own ``decide()``, as ``Admission`` judges it over an
in-process counter store with the clock set to the event's ``admitted_at``, and settled at once
with the tokens it used: the served model's prices for a downgraded call, and the output cut to
the clamped bound for a clamped one (replay.py; calls whose verdict is known from one alike are
not decided again). The client's own output bound is not recorded, so the tokens the call
actually produced stand for it. Calls run one after another, so concurrent reservations (which
only ever make admission stricter) are not reproduced. Refused calls of the ledger have no usage
and are not replayed.

A budget runs out on the day of the first call it could not take at its worst case (refused,
downgraded or restricted), or on the day its spend reached its limit, whichever comes first
(calendar budgets only: a rolling window has no date to run out on).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime
from itertools import islice
from operator import attrgetter

from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.kinds import Unit
from costwarden.core.money import format_usd
from costwarden.core.policy import Policy
from costwarden.ledger import Ledger
from costwarden.ledger.rows import dump_tags
from costwarden.reports.replay import Replay, Row
from costwarden.reports.replay_result import UNKNOWN, Outcome, RunOut, Simulation
from costwarden.reports.replay_source import ledger_rows
from costwarden.reports.tabular import Cell, Report

PROGRESS_EVERY = 10_000  # events between progress reports


_FIELDS = attrgetter("id", "department", "team", "key_id", "user", "customer", "model_requested", "input_tokens",
                     "cached_input_tokens", "output_tokens", "cost_nanos")


def event_row(event: UsageEvent) -> Row:
    """The fields of ``event`` a replay reads (a customer of "" is no customer, as None is)."""
    return (event.admitted_at.timestamp(), *_FIELDS(event), dump_tags(event.tags))


def replay_rows(policy: Policy, rows: Iterable[Row], progress: Callable[[int], None] | None = None) -> Simulation:
    """Replay ``rows`` (in time order) under ``policy``; ``progress`` gets the count replayed so far,
    every ``PROGRESS_EVERY`` rows."""
    replay = Replay(policy)
    if progress is None:
        replay.run(rows)
        return replay.result
    for chunk in _chunks(iter(rows)):
        replay.run(chunk)
        progress(replay.result.events)
    progress(replay.result.events)
    return replay.result


async def simulate(policy: Policy, events: AsyncIterable[UsageEvent] | Iterable[UsageEvent],
                   progress: Callable[[int], None] | None = None) -> Simulation:
    """Replay ``events`` (in time order) under ``policy``; ``progress`` gets the count replayed so far."""
    if not isinstance(events, AsyncIterable):
        return replay_rows(policy, map(event_row, events), progress)
    replay = Replay(policy)
    chunk: list[Row] = []
    async for event in events:
        chunk.append(event_row(event))
        if len(chunk) == PROGRESS_EVERY:
            replay.run(chunk)
            chunk.clear()
            if progress is not None:
                progress(replay.result.events)
    replay.run(chunk)
    if progress is not None:
        progress(replay.result.events)
    return replay.result


async def simulate_ledger(policy: Policy, ledger: Ledger, since: datetime, until: datetime,
                          progress: Callable[[int], None] | None = None) -> Simulation:
    """Replay the ledger's calls admitted in [since, until) under ``policy``, in a worker thread
    that reads them with a raw cursor (replay_source.py)."""
    return await ledger.read(lambda conn: replay_rows(policy, ledger_rows(conn, since, until), progress))


async def only_events(items: AsyncIterable[UsageEvent | Rejection]) -> AsyncIterator[UsageEvent]:
    """The usage events of a ledger listing that may hold refused calls too."""
    async for item in items:
        if isinstance(item, UsageEvent):
            yield item


def _chunks(rows: Iterator[Row]) -> Iterator[list[Row]]:
    while chunk := list(islice(rows, PROGRESS_EVERY)):
        yield chunk


COLUMNS = ("department", "calls", "allowed", "downgraded", "clamped", "rejected", "cost_before_usd",
           "cost_after_usd", "saved_usd", "budget_runs_out", "rejections")


def simulation_report(result: Simulation, policy: Policy) -> Report:
    """One row per department: what its calls would have become and when its budgets ran out."""
    by_department: dict[str | None, list[RunOut]] = {}
    for run_out in sorted(result.ran_out.values(), key=lambda r: (r.at, r.check.scope.id)):
        by_department.setdefault(run_out.check.scope.department, []).append(run_out)
    rows: list[dict[str, Cell]] = []
    for department in sorted(result.departments):
        o = result.departments[department]
        rows.append({
            "department": department, "calls": o.calls, "allowed": o.allowed, "downgraded": o.downgraded,
            "clamped": o.clamped, "rejected": o.rejected, "cost_before_usd": format_usd(o.cost_before_nanos),
            "cost_after_usd": format_usd(o.cost_after_nanos),
            "saved_usd": format_usd(o.cost_before_nanos - o.cost_after_nanos),
            "budget_runs_out": "; ".join(_run_out_text(r) for r in by_department.get(department, [])) or None,
            "rejections": ", ".join(f"{code} {n}" for code, n in sorted(o.reasons.items())) or None,
        })
    budgets = [{"scope": r.check.scope.id, "label": r.check.scope.label, "period": r.check.budget.period.text,
                "unit": str(r.check.budget.unit),
                "limit": format_usd(r.check.budget.limit) if r.check.budget.unit == Unit.USD else r.check.budget.limit,
                "period_start": r.check.window.start.isoformat(), "ran_out_on": r.on.isoformat(),
                "ran_out_at": r.at.isoformat()}
               for r in sorted(result.ran_out.values(), key=lambda r: (r.at, r.check.scope.id))]
    org = [r for r in by_department.get(None, [])]
    notes = [f"Replayed {result.events} events" + (f" from {result.first:%Y-%m-%d %H:%M} to "
                                                   f"{result.last:%Y-%m-%d %H:%M} UTC" if result.first and result.last
                                                   else "") + f" under policy version {policy.version}."]
    notes += [f"Organization: {_run_out_text(r)}" for r in org]
    notes.append("Allowed counts calls admitted as asked; a call both clamped and downgraded counts in both.")
    return Report("Simulation", COLUMNS, rows, tuple(notes), {"budgets_run_out": budgets})


def _run_out_text(run_out: RunOut) -> str:
    check = run_out.check
    limit = format_usd(check.budget.limit) if check.budget.unit == Unit.USD else f"{check.budget.limit} tokens"
    return f"{check.scope.label} {check.budget.period.text} {limit} ran out on {run_out.on.isoformat()}"


__all__ = ["UNKNOWN", "Outcome", "RunOut", "Simulation", "event_row", "only_events", "replay_rows", "simulate",
           "simulate_ledger", "simulation_report"]
