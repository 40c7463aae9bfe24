"""The straightforward replay that ``simulate`` must agree with: every event admitted by the
gateway's own ``Admission`` over a ``MemoryCounterStore``, with the clock at its ``admitted_at``,
and settled at once. Slow, and plainly right: the tests compare the fast replay with it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from costwarden import errors
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.events import UsageEvent
from costwarden.core.kinds import Unit
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, Plan, Planner
from costwarden.counters.memory import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.reports.replay_result import UNKNOWN, Outcome, RunOut, Simulation


class ReferenceReplay:
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


async def replay_reference(policy: Policy, events: Iterable[UsageEvent]) -> Simulation:
    """Replay ``events`` (in time order) under ``policy`` the straightforward way."""
    replay = ReferenceReplay(policy)
    for event in events:
        await replay.feed(event)
    return replay.result
