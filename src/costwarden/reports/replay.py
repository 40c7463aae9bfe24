"""Replaying recorded calls under a policy, with the gateway's ``decide()`` as the only judge.

Each call is judged as ``Admission`` judges it over a memory store (the plan of ``Planner``, the
counters' spend and the restriction flags up at its instant, then ``decide()``) and settled at once
with the tokens it used. The counters are plain integers (replay_counters.py).

``decide()`` is pure, and what it makes of a call (the model served, whether downgraded, or the
refusal's error and the restrictions raised; not its messages) depends only on the policy, the
plan's budgets and limits, the model asked for, the flags up, and which comparisons of a worst
case with a room come out true: each candidate of the model's ``downgrade_to`` chain, with its
output bound, fits the room of each counter or not. That holds while every input fits every
candidate's context window, and outside the one place a number is made from a room: an enforced
``reject`` budget too small for a candidate's worst case clamps the output to what fits when the
input fits. So a call's *signature* (the flags up, and one bit per counter and candidate that does
not fit, plus one per such ``reject`` counter whose room the input alone exceeds) names its verdict,
and the first call of each signature asks ``decide()``; calls of a signature already seen, in a
group of the same structure, get its verdict. A counter whose spend leaves room for the largest
call of every candidate contributes no bits and is not priced. Calls whose input may exceed a
context window, or that fall where ``reject`` clamps, always ask ``decide()``. That every counter
of a route has such room is proven once and holds until a counter's spend passes it (``_prove``).
tests/unit/test_simulate_replay.py holds this replay to the one that admits every call through
``Admission``, on generated policies and calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from itertools import chain

import orjson

from costwarden import errors
from costwarden.core.decision import CallRequest, decide
from costwarden.core.kinds import Unit
from costwarden.core.policy import Policy
from costwarden.core.scopes import BudgetCheck, Caller, Planner, ruled_tag_names
from costwarden.reports.replay_counters import NEVER, Counter, Counters
from costwarden.reports.replay_groups import Group, Memo, Route, Verdict, make_group, make_route
from costwarden.reports.replay_result import UNKNOWN, Outcome, RunOut, Simulation

# One recorded call: admitted at (epoch seconds, as ``datetime.timestamp()`` gives them: exact to
# the microsecond, which ``instant`` gives back), id, department, team, key id, user,
# customer ("" or None: none), model asked for, input tokens, cached input tokens, output tokens, cost in nano-dollars.
# (admitted at, id, department, team, key, user, customer, model, input, cached input, output, cost,
# tags as the ledger's JSON text)
GroupKey = tuple[str, str | None, str | None, str | None, str | None, tuple[tuple[str, str], ...]]
MAX_TAGSETS = 100_000  # distinct tag texts remembered
Row = tuple[float, str, str, str | None, str | None, str | None, str | None, str, int, int, int, int, str]
RAN_OUT_BY = (errors.BudgetExceeded, errors.ModelNotAllowed)
USD, TOKENS = Unit.USD, Unit.TOKENS


def instant(stamp: float) -> datetime:
    """The UTC instant of ``stamp`` epoch seconds."""
    return datetime.fromtimestamp(stamp, UTC)


class Replay:
    """Replays rows one after another under ``policy``; ``run`` them in time order."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.planner = Planner(policy)
        self.counters = Counters()
        self.result = Simulation()
        self._groups: dict[GroupKey, Group | None] = {}
        self._plans: dict[GroupKey, Group] = {}
        self._tag_names = ruled_tag_names(policy)  # empty: tags play no part and are not read
        self._tagsets: dict[str, tuple[tuple[str, str], ...]] = {}
        self._memos: dict[tuple[object, ...], Memo] = {}
        self._last = float("-inf")
        self._epoch = 0  # see _prove
        self.decided = 0  # calls that asked decide()

    def run(self, rows: Iterable[Row]) -> None:
        """Replay ``rows`` (in time order, after the ones replayed before)."""
        groups, result = self._groups, self.result
        tag_names, tagsets = self._tag_names, self._tagsets
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return
        if result.first is None:
            result.first = instant(first[0])
        last = self._last
        count = 0
        for row in chain((first,), rows):
            stamp, ident, department, team, key_id, user, customer, model, inp, cached, out, before, tags = row
            if stamp < last:
                raise errors.InvalidRequest(f"events must be in time order: {ident} was admitted at "
                                            f"{instant(stamp).isoformat()}, before the one replayed before it")
            last = stamp
            count += 1
            tagset = () if not tag_names else tagsets[tags] if tags in tagsets else self._tagset(tags)
            group = groups.get((department, team, key_id, user, customer, tagset))
            if group is None or stamp >= group.valid_until:
                group = self._group(row, stamp, tagset)
                if group is None:
                    outcome = self._outcome(UNKNOWN)
                    outcome.calls += 1
                    outcome.cost_before_nanos += before
                    _reject(outcome, errors.UnknownDepartment.code)
                    continue
            outcome = group.outcome
            outcome.calls += 1
            outcome.cost_before_nanos += before
            route = group.routes.get(model)
            if route is None:
                route = self._route(group, model)
            signature: int | None
            if inp > route.min_context:
                signature = None
            elif route.proven == self._epoch or self._prove(route, int(stamp)):
                signature = 0
            else:
                signature = self._bits(route, inp, out, int(stamp))
            if signature is None:
                self._decide(group, route, row, None)
                continue
            if group.flag_keys:
                signature = self._flags(group, signature, stamp)
                verdict = route.memo.get(signature)
            elif signature:
                verdict = route.memo.get(signature)
            else:
                verdict = route.plain or route.memo.get(0)
                route.plain = verdict
            if verdict is None:
                self._decide(group, route, row, signature)
                continue
            served = verdict.served
            if verdict.flagged:
                self._raise_flags(group, verdict.flagged)
            if served is None:
                outcome.rejected += 1
                reasons = outcome.reasons
                reasons[verdict.code] = reasons.get(verdict.code, 0) + 1
                if verdict.exhausted:
                    self._could_not_fit(route, inp, out, stamp)
                continue
            cost = served.cost(inp, out, cached)
            outcome.cost_after_nanos += cost
            if verdict.downgraded:
                outcome.downgraded += 1
                self._could_not_fit(route, inp, out, stamp)
            else:
                outcome.allowed += 1
            tokens = inp + out
            for counter, in_tokens in group.cal:
                counter.used += tokens if in_tokens else cost
                if counter.used > counter.alarm:
                    self._alarm(counter, stamp)
            if group.rolling:  # _spend_rolling, written out: this runs for every call admitted
                second = int(stamp)
                for counter, unit in group.rolling:
                    amount = cost if unit is USD else tokens if unit is TOKENS else 1
                    counter.used += amount
                    counter.log.append((second, amount))
                    if counter.used > counter.alarm:
                        self._alarm(counter, stamp)
        self._last = last
        result.events += count
        result.last = instant(last)
        self.counters.trim(int(last))

    # -- the slow path: decide() itself --------------------------------------------------------

    def _decide(self, group: Group, route: Route, row: Row, signature: int | None) -> None:
        stamp, _, department, team, key_id, user, customer, model, inp, cached, out, _, _ = row
        now = instant(stamp)
        second = int(stamp)
        caller = Caller(department, team, key_id, user, customer, group.caller.tags)
        plan = self.planner.plan(caller, now, stamp)
        usage = [(counter.exact(second), 0) for counter in group.counters]
        flags = frozenset(k for k in plan.flag_keys if self.counters.flag_up(k, stamp))
        decision = decide(self.policy, CallRequest(caller, model, inp, out), plan, usage, flags, now)
        self.decided += 1
        flagged = tuple(i for i, c in enumerate(plan.budgets) if any(c.flag_key == k for k, _ in decision.new_flags))
        if flagged:
            self._raise_flags(group, flagged)
        outcome = group.outcome
        if decision.denial is not None:
            error = decision.denial.error
            code = error.code or "refused"
            _reject(outcome, code)
            exhausted = error in RAN_OUT_BY
            if exhausted:
                self._could_not_fit(route, inp, out, stamp)
            if signature is not None:
                route.memo[signature] = Verdict(None, code, exhausted=exhausted, flagged=flagged)
            return
        served = decision.model
        assert served is not None
        output = min(out, decision.output_tokens) if decision.clamped else out
        cost = served.cost(inp, output, cached)
        outcome.cost_after_nanos += cost
        downgraded = decision.downgraded_from is not None
        if downgraded:
            outcome.downgraded += 1
            self._could_not_fit(route, inp, out, stamp)
        if decision.clamped:
            outcome.clamped += 1
        elif not downgraded:
            outcome.allowed += 1
        if signature is not None and not decision.clamped:
            route.memo[signature] = Verdict(served, downgraded=downgraded, flagged=flagged)
        tokens = inp + output
        for counter, in_tokens in group.cal:
            counter.used += tokens if in_tokens else cost
            if counter.used > counter.alarm:
                self._alarm(counter, stamp)
        self._spend_rolling(group, cost, tokens, second)

    # -- spend and what it proves --------------------------------------------------------------

    def _spend_rolling(self, group: Group, cost: int, tokens: int, second: int) -> None:
        for counter, unit in group.rolling:
            amount = cost if unit is USD else tokens if unit is TOKENS else 1
            counter.used += amount
            counter.log.append((second, amount))
            if counter.used > counter.alarm:
                self._alarm(counter, second)

    def _prove(self, route: Route, second: int) -> bool:
        """Whether every counter of ``route`` has room for the largest call of every candidate; if
        so, arm the counters to end the proof (a new epoch) when their spend passes that room.

        While ``route.proven`` is the current epoch, no counter has passed the spend at which
        ``route`` proved it roomy: a counter past its ``floor`` starts a new epoch, and a proof sets
        each counter's floor at or below its own bound."""
        blocker = route.blocker
        if blocker is not None and blocker[0].used > blocker[1] and not blocker[0].width:
            return False  # still past its bound: the usual answer while a budget is spent
        for check in route.checks:
            counter, ample_below = check
            if counter.used > ample_below and (not counter.width or counter.exact(second) > ample_below):
                route.blocker = check
                return False
        for counter, ample_below in route.checks:
            if ample_below < counter.floor:
                counter.floor = ample_below
                counter.alarm = min(ample_below, counter.watch)
        route.proven = self._epoch
        return True

    def _alarm(self, counter: Counter, stamp: float) -> None:
        """``counter`` passed its alarm: a new epoch if it passed its floor, and its calendar
        budget runs out if it reached its limit."""
        if counter.used > counter.floor:
            self._epoch += 1
            counter.floor = NEVER
        if counter.used > counter.watch:
            counter.watch = NEVER
            assert counter.check is not None
            if counter.key not in self.result.ran_out:
                self._mark(counter.check, stamp)
        counter.alarm = min(counter.floor, counter.watch)

    # -- signatures ----------------------------------------------------------------------------

    def _bits(self, route: Route, inp: int, out: int, second: int) -> int | None:
        """The bits of the candidates that do not fit each counter (None: decide() must see it)."""
        bits = 0
        candidates = route.candidates
        costs: list[int] | None = None
        shift = 2 * len(candidates)
        for window in route.windows:
            counter = window.counter
            if counter.used <= window.ample_below or (counter.width and counter.exact(second) <= window.ample_below):
                continue
            room = window.limit - counter.used
            unit = window.unit
            if unit is USD:
                if costs is None:
                    costs = [spec.cost(inp, out if out < spec.max_output else spec.max_output) for spec in candidates]
                needs = costs
            elif unit is TOKENS:
                needs = [inp + (out if out < spec.max_output else spec.max_output) for spec in candidates]
            else:
                needs = [1] * len(candidates)
            for k, need in enumerate(needs):
                if need <= room:
                    continue
                bit = 1 << (window.index * shift + 2 * k)
                bits |= bit
                if window.rejects:
                    # decide() clamps the output to the room when the input fits in it: a number
                    alone = candidates[k].cost(inp, 0) if unit is USD else inp
                    if alone <= room:
                        return None
                    bits |= bit << 1
        return bits

    def _flags(self, group: Group, bits: int, stamp: float) -> int:
        """``bits`` with one more bit per restriction flag of the group that is up."""
        flags = self.counters.flags
        for key in group.flag_keys:
            bits = bits << 1 | (flags.get(key, 0.0) > stamp)
        return bits

    def _raise_flags(self, group: Group, budgets: tuple[int, ...]) -> None:
        # A rolling window ends when its plan was made, never after the call: its flag is never
        # up for a later call, whichever plan's end it expires at.
        for index in budgets:
            check = group.plan.budgets[index]
            self.counters.set_flag(check.flag_key, check.window.end.timestamp())

    # -- groups and routes ---------------------------------------------------------------------

    def _tagset(self, text: str) -> tuple[tuple[str, str], ...]:
        """The tags of a ledger JSON text that tag budgets or limits of the policy name, remembered."""
        tags = orjson.loads(text)
        found = tuple(sorted((name, str(tags[name])) for name in self._tag_names if name in tags))
        if len(self._tagsets) < MAX_TAGSETS:
            self._tagsets[text] = found
        return found

    def _group(self, row: Row, stamp: float, tagset: tuple[tuple[str, str], ...] = ()) -> Group | None:
        """The group of ``row``'s caller (with its ruled tags) at ``stamp`` (None for a department
        the policy lacks)."""
        _, _, department, team, key_id, user, customer = row[:7]
        raw = (department, team, key_id, user, customer, tagset)
        dept = self.policy.departments.get(department)
        if dept is None:
            self._groups[raw] = None
            return None
        named = (department, team, key_id if dept.per_key else None, user if dept.per_user else None, customer, tagset)
        group = self._plans.get(named)
        if group is None or stamp >= group.valid_until:
            caller = Caller(department, team, key_id, user, customer, tagset)
            plan = self.planner.plan(caller, instant(stamp), stamp)
            group = self._plans[named] = make_group(caller, plan, self.counters)
            group.outcome = self._outcome(department)
        self._groups[raw] = group
        return group

    def _route(self, group: Group, model: str) -> Route:
        memo = self._memos.setdefault((group.structure, model), {})
        route = group.routes[model] = make_route(self.policy, group, model, memo)
        return route

    def _outcome(self, department: str) -> Outcome:
        outcome = self.result.departments.get(department)
        if outcome is None:
            outcome = self.result.departments[department] = Outcome()
        return outcome

    # -- run-out dates -------------------------------------------------------------------------

    def _could_not_fit(self, route: Route, inp: int, out: int, stamp: float) -> None:
        """Mark the calendar budgets whose room no longer held the call's worst case on the
        model it asked for."""
        model = route.resolved
        if model is None:
            return
        bound = min(out or model.max_output, model.max_output)
        cost: int | None = None
        ran_out = self.result.ran_out
        roomy = inp <= model.context_window
        for counter, limit, check, in_tokens, safe_below in route.calendar:
            if (roomy and counter.used <= safe_below) or check.window.key in ran_out:
                continue
            if in_tokens:
                need = inp + bound
            else:
                need = cost = model.cost(inp, bound) if cost is None else cost
            if counter.used + need > limit:
                self._mark(check, stamp)

    def _mark(self, check: BudgetCheck, stamp: float) -> None:
        at = instant(stamp)
        self.result.ran_out[check.window.key] = RunOut(check, at.astimezone(self.policy.timezone).date(), at)


def _reject(outcome: Outcome, code: str) -> None:
    outcome.rejected += 1
    outcome.reasons[code] = outcome.reasons.get(code, 0) + 1


__all__ = ["Replay", "Row", "instant"]
