"""``simulate``: replay recorded calls, in time order, under another policy.

Each usage event is admitted by the gateway's own ``Admission`` (hence the same ``decide()``) over
an in-process counter store, with the clock set to the event's ``admitted_at``, and settled at
once with the tokens it used: the served model's prices for a downgraded call, and the output cut
to the clamped bound for a clamped one. The client's own output bound is not recorded, so the
tokens the call actually produced stand for it. Calls run one after another, so concurrent
reservations (which only ever make admission stricter) are not reproduced. Refused calls of the
ledger have no usage and are not replayed.

A budget runs out on the day of the first call it could not take at its worst case (refused,
downgraded or restricted), or on the day its spend reached its limit, whichever comes first
(calendar budgets only: a rolling window has no date to run out on).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime

from costwarden import errors
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.kinds import Unit
from costwarden.core.money import format_usd
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, Plan, Planner
from costwarden.counters.memory import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.reports.tabular import Cell, Report

PROGRESS_EVERY = 10_000  # events between progress reports
UNKNOWN = "(not in policy)"


@dataclass(slots=True)
class Outcome:
    """What one department's calls would have become."""

    calls: int = 0
    allowed: int = 0  # admitted as asked
    downgraded: int = 0
    clamped: int = 0
    rejected: int = 0
    cost_before_nanos: int = 0
    cost_after_nanos: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rejections per error code


@dataclass(frozen=True, slots=True)
class RunOut:
    """A budget that ran out during the replay, and when."""

    check: BudgetCheck
    on: date
    at: datetime


@dataclass(slots=True)
class Simulation:
    """The replay's result: outcomes per department and the budgets that ran out."""

    departments: dict[str, Outcome] = field(default_factory=dict)
    ran_out: dict[str, RunOut] = field(default_factory=dict)  # by counter window key
    events: int = 0
    first: datetime | None = None
    last: datetime | None = None


class Replay:
    """Replays events one by one under ``policy``; ``feed`` them in time order."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.planner = Planner(policy)
        self._now = datetime.min
        self.admission = Admission(MemoryCounterStore(), clock=lambda: self._now)
        self.result = Simulation()
        self._spent: dict[str, int] = {}  # per calendar budget window, in its unit

    async def feed(self, event: UsageEvent) -> None:
        """Admit, settle and tally one event."""
        result = self.result
        result.events += 1
        result.first = result.first or event.admitted_at
        result.last = event.admitted_at
        known = event.department in self.policy.departments
        outcome = result.departments.get(event.department if known else UNKNOWN)
        if outcome is None:
            outcome = result.departments[event.department if known else UNKNOWN] = Outcome()
        outcome.calls += 1
        outcome.cost_before_nanos += event.cost_nanos
        if not known:
            _reject(outcome, "unknown_department")
            return
        self._now = now = event.admitted_at
        caller = Caller(event.department, event.team, event.key_id, event.user, event.customer or None,
                        tuple(event.tags.items()))
        request = CallRequest(caller, event.model_requested, event.input_tokens, event.output_tokens)
        admitted = await self.admission.admit(event.id, request, self.planner)
        if isinstance(admitted, Decision):
            _reject(outcome, (admitted.denial.error.code if admitted.denial is not None else None) or "refused")
            if admitted.denial is not None and admitted.denial.error in (errors.BudgetExceeded, errors.ModelNotAllowed):
                self._could_not_fit(self.planner.plan(caller, now, now.timestamp()), request, now)
            return
        decision = admitted.decision
        output = min(event.output_tokens, decision.output_tokens) if decision.clamped else event.output_tokens
        settled = await self.admission.settle(admitted, event.input_tokens, output, event.cached_input_tokens)
        outcome.cost_after_nanos += settled.cost_nanos
        if decision.downgraded_from:
            outcome.downgraded += 1
            self._could_not_fit(admitted.plan, request, now)
        if decision.clamped:
            outcome.clamped += 1
        if not decision.downgraded_from and not decision.clamped:
            outcome.allowed += 1
        self._spend(admitted, settled.cost_nanos, event.input_tokens + output)

    def _spend(self, admitted: Admitted, cost: int, tokens: int) -> None:
        for check in admitted.plan.budgets:
            if not check.budget.period.is_calendar:
                continue
            key = check.window.key
            spent = self._spent[key] = self._spent.get(key, 0) + (cost if check.budget.unit == Unit.USD else tokens)
            if spent >= check.budget.limit and key not in self.result.ran_out:
                self._mark(check, admitted.at)

    def _could_not_fit(self, plan: Plan, request: CallRequest, now: datetime) -> None:
        """Mark the budgets whose room no longer held the call's worst case on the requested model."""
        model = self.policy.catalog.resolve(request.model)
        if model is None:
            return
        bound = min(request.output_tokens or model.max_output, model.max_output)
        worst = {Unit.USD: model.cost(request.input_tokens, bound), Unit.TOKENS: request.input_tokens + bound}
        for check in plan.budgets:
            key = check.window.key
            need = worst.get(check.budget.unit)
            if need is None or not check.budget.period.is_calendar or key in self.result.ran_out:
                continue
            if self._spent.get(key, 0) + need > check.budget.limit:
                self._mark(check, now)

    def _mark(self, check: BudgetCheck, at: datetime) -> None:
        self.result.ran_out[check.window.key] = RunOut(check, at.astimezone(self.policy.timezone).date(), at)


def _reject(outcome: Outcome, code: str) -> None:
    outcome.rejected += 1
    outcome.reasons[code] = outcome.reasons.get(code, 0) + 1


async def simulate(policy: Policy, events: AsyncIterable[UsageEvent] | Iterable[UsageEvent],
                   progress: Callable[[int], None] | None = None) -> Simulation:
    """Replay ``events`` (in time order) under ``policy``; ``progress`` gets the count replayed so far."""
    replay = Replay(policy)
    last: datetime | None = None
    if isinstance(events, AsyncIterable):
        async for event in events:
            last = _in_order(event, last)
            await replay.feed(event)
            if progress is not None and replay.result.events % PROGRESS_EVERY == 0:
                progress(replay.result.events)
    else:
        for event in events:
            last = _in_order(event, last)
            await replay.feed(event)
            if progress is not None and replay.result.events % PROGRESS_EVERY == 0:
                progress(replay.result.events)
    if progress is not None:
        progress(replay.result.events)
    return replay.result


async def only_events(items: AsyncIterable[UsageEvent | Rejection]) -> AsyncIterator[UsageEvent]:
    """The usage events of a ledger listing that may hold refused calls too."""
    async for item in items:
        if isinstance(item, UsageEvent):
            yield item


def _in_order(event: UsageEvent, last: datetime | None) -> datetime:
    if last is not None and event.admitted_at < last:
        raise errors.InvalidRequest(f"events must be in time order: {event.id} was admitted at "
                                    f"{event.admitted_at.isoformat()}, before the one replayed before it")
    return event.admitted_at


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


__all__ = ["Outcome", "Replay", "RunOut", "Simulation", "only_events", "simulate", "simulation_report"]
