"""Tag budgets (SPEC §13) below the HTTP edge: a call's tag scopes and plans, the hard cap over the
memory store and over Redis shared by two replicas, refusals, alerts, shadow decisions, budget
status, and tag counters rebuilt from either ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from redis.asyncio import Redis

from clock import FakeClock
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.events import UsageEvent
from costwarden.core.kinds import ScopeKind
from costwarden.core.notifications import threshold_notification
from costwarden.core.policy import Policy
from costwarden.core.scopes import Caller, Planner, plan_for, scopes_of
from costwarden.counters import CounterStore, MemoryCounterStore
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.engine.governor import Governor
from costwarden.engine.rebuild import rebuild_counters
from costwarden.engine.status import budget_status
from costwarden.errors import BudgetExceeded
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from costwarden.reports.budget_forecast import budget_forecasts
from costwarden.reports.simulate import simulate

ATLAS = (("project", "atlas"),)
# house, 1,000 input + 50 output tokens: $1.05 a call at worst, $1.00 without output. The atlas
# project may spend ten worst cases across every department; HR and SALES have no cap.
POLICY = """
version: 1
models:
  house: {provider: openai, tier: 1, input: 1000, output: 1000}
departments:
  HR: {}
  SALES: {}
tags:
  project:
    atlas:
      budgets: [{limit: 10.50, period: monthly, action: reject}]
    hermes:
      budgets: [{limit: 4, period: monthly, alert_at: [0.5], action: alert}]
    apollo:
      budgets: [{limit: 0.000001, period: monthly, action: reject, enforce: false}]
    zeus: {}
  feature:
    search:
      limits: {rpm: 100}
"""


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY)


def request(department: str, *tags: tuple[str, str]) -> CallRequest:
    return CallRequest(Caller(department, tags=tags), "house", 1000, 50)  # 50 < 64: never clamped


# ---------------------------------------------------------------- scopes and plans


def test_a_call_falls_in_the_scope_of_each_of_its_tags_that_has_rules(policy: Policy) -> None:
    scopes = scopes_of(policy, Caller("HR", tags=(("feature", "search"), ("owner", "x"), ("project", "zeus"),
                                                 ("project", "atlas"))))
    assert [(s.id, s.kind, s.label, s.department) for s in scopes[2:]] == [
        ("tag:feature=search", ScopeKind.TAG, "Feature search", None),
        ("tag:project=atlas", ScopeKind.TAG, "Project atlas", None),
    ]
    # the order of X-Tags does not matter, and a tag value the policy does not name adds nothing
    assert scopes == scopes_of(policy, Caller("HR", tags=(("project", "atlas"), ("feature", "search"))))
    assert [s.id for s in scopes_of(policy, Caller("HR", tags=(("project", "mars"),)))] == ["org", "dept:HR"]


def test_the_planner_shares_one_plan_between_calls_whose_tags_select_the_same_scopes(policy: Policy) -> None:
    planner, now = Planner(policy), FakeClock()()
    stamp = now.timestamp()
    atlas = planner.plan(Caller("HR", tags=ATLAS), now, stamp)
    assert atlas is planner.plan(Caller("HR", tags=(("run", "7"), *ATLAS)), now, stamp)
    plain = planner.plan(Caller("HR", tags=(("project", "mars"),)), now, stamp)
    assert plain is planner.plan(Caller("HR"), now, stamp) and plain is not atlas
    assert atlas == plan_for(policy, Caller("HR", tags=ATLAS), now)
    # both departments count on the one counter of the tag's budget
    [hr_window] = [c.window for c in atlas.budgets]
    [sales_window] = [c.window for c in planner.plan(Caller("SALES", tags=ATLAS), now, stamp).budgets]
    assert hr_window.key == sales_window.key and hr_window.key.startswith("b|tag:project=atlas|0|monthly|usd")


# ---------------------------------------------------------------- admission


def _department(i: int, replicas: int) -> str:
    return ("HR", "SALES")[i // replicas % 2]  # each replica sees both departments


async def _burst(admission: list[Admission], planner: Planner, calls: int) -> list[Admitted | Decision]:
    """``calls`` admissions at once, alternating the given admissions, and on each HR and SALES."""
    return await asyncio.gather(*(admission[i % len(admission)].admit(
        f"c{i}", request(_department(i, len(admission)), *ATLAS), planner) for i in range(calls)))


async def _hard_cap_holds(admissions: list[Admission], planner: Planner) -> None:
    outcomes = await _burst(admissions, planner, 400)
    admitted = [o for o in outcomes if isinstance(o, Admitted)]
    assert len(admitted) == 10  # exactly the ten worst cases the $10.50 fit
    refused = [o for o in outcomes if isinstance(o, Decision)]
    # neither department has a budget of its own: the tag's counter, shared by both, refused them
    assert {_department(i, len(admissions)) for i, o in enumerate(outcomes)
            if isinstance(o, Decision)} == {"HR", "SALES"}
    assert refused[0].denial is not None
    assert refused[0].denial.message.startswith(
        "Project atlas (calls tagged project=atlas) has spent $10.50 of its $10.50 monthly budget; it resets "
        "2026-12-01 00:00 UTC.")
    exc = refused[0].denial.exception()
    assert isinstance(exc, BudgetExceeded) and exc.budget_scope == "tag:project=atlas"
    settled = await asyncio.gather(*(admissions[0].settle(a, 1000, 50) for a in admitted))
    assert sum(s.cost_nanos for s in settled) == 10_500_000_000  # settled spend reaches the cap, never past it
    assert not any(isinstance(o, Admitted) for o in await _burst(admissions, planner, 20))
    # an untagged call, and one tagged with another project, are not held by the atlas budget
    for free in (request("HR"), request("SALES", ("project", "zeus"))):
        assert isinstance(await admissions[0].admit("free", free, planner), Admitted)


async def test_a_hard_tag_budget_holds_across_departments(policy: Policy) -> None:
    await _hard_cap_holds([Admission(MemoryCounterStore(), FakeClock())], Planner(policy))


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[list[CounterStore]]:
    """Two Redis stores on one empty server, as two gateway replicas."""
    client = Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    pair: list[CounterStore] = [RedisCounterStore.from_url(redis_url, replica="a"),
                                RedisCounterStore.from_url(redis_url, replica="b")]
    await pair[0].replace([], "build-1")
    try:
        yield pair
    finally:
        for store in pair:
            await store.close()


@pytest.mark.service
async def test_a_hard_tag_budget_holds_across_two_replicas_sharing_redis(policy: Policy,
                                                                        replicas: list[CounterStore]) -> None:
    clock = FakeClock()
    await _hard_cap_holds([Admission(store, clock) for store in replicas], Planner(policy))


async def test_a_soft_tag_budget_alerts_once_with_a_sentence(policy: Policy) -> None:
    admission, planner = Admission(MemoryCounterStore(), FakeClock()), Planner(policy)
    hermes = ("project", "hermes")
    first = await admission.admit("a", request("HR", hermes), planner)
    second = await admission.admit("b", request("SALES", hermes), planner)
    third = await admission.admit("c", request("SALES", hermes), planner)
    assert isinstance(first, Admitted) and isinstance(second, Admitted) and isinstance(third, Admitted)
    assert not (await admission.settle(first, 1000, 0)).crossings  # $1.00 of $4.00: not at 50% yet
    [crossing] = (await admission.settle(second, 1000, 0)).crossings
    assert not (await admission.settle(third, 1000, 0)).crossings  # each threshold fires once
    note = threshold_notification(crossing.check, crossing.fraction, crossing.spent, policy.timezone)
    assert note.text == ("Project hermes has reached 50% of its $4.00 monthly budget ($2.00 spent); "
                         "it resets 2026-12-01.")
    assert (note.scope, note.department, note.kind) == ("tag:project=hermes", None, "threshold")


async def test_a_shadow_tag_budget_serves_the_call_and_says_what_it_would_have_done(policy: Policy) -> None:
    admission, planner = Admission(MemoryCounterStore(), FakeClock()), Planner(policy)
    outcome = await admission.admit("a", request("HR", ("project", "apollo")), planner)
    assert isinstance(outcome, Admitted)
    assert outcome.decision.shadow == ("would reject: tag:project=apollo budget 0",)


async def test_budget_status_lists_tag_budgets_for_the_organization_only(policy: Policy) -> None:
    store, clock = MemoryCounterStore(), FakeClock()
    admission, planner = Admission(store, clock), Planner(policy)
    for department in ("HR", "SALES"):
        admitted = await admission.admit(department, request(department, *ATLAS), planner)
        assert isinstance(admitted, Admitted)
        await admission.settle(admitted, 1000, 0)
    statuses = await budget_status(policy, store.snapshot, clock())
    rows = {s.scope.id: (s.spent, s.budget.limit, s.scope.label) for s in statuses}
    assert rows == {"tag:project=atlas": (2_000_000_000, 10_500_000_000, "Project atlas"),
                    "tag:project=hermes": (0, 4_000_000_000, "Project hermes"),
                    "tag:project=apollo": (0, 1_000, "Project apollo")}
    assert not await budget_status(policy, store.snapshot, clock(), department="HR")  # a manager's view
    assert Decimal(0) < next(s for s in statuses if s.scope.id == "tag:project=atlas").utilization_pct


# ---------------------------------------------------------------- rebuilt from the ledger


def _event(event_id: str, department: str, tags: dict[str, str], cost: int) -> UsageEvent:
    at = FakeClock()()
    return UsageEvent(id=event_id, admitted_at=at, finished_at=at, department=department, model_requested="house",
                      model_served="house", provider="openai", endpoint="/v1/chat/completions", tags=tags,
                      input_tokens=1000, output_tokens=0, cost_nanos=cost)


async def test_tag_counters_are_rebuilt_from_the_ledger(policy: Policy, ledger_url: str) -> None:
    ledger = await Ledger.open(ledger_url)
    try:
        for event in (_event("a", "HR", {"project": "atlas", "feature": "search"}, 1_000_000_000),
                      _event("b", "SALES", {"project": "atlas"}, 2_000_000_000),
                      _event("c", "SALES", {"project": "hermes"}, 300_000_000),
                      _event("d", "HR", {"project": "mars"}, 7),
                      _event("e", "HR", {}, 11)):
            await ledger.record(event)
        store = MemoryCounterStore()
        await rebuild_counters(policy, store, ledger, FakeClock()())
    finally:
        await ledger.close()
    statuses = await budget_status(policy, store.snapshot, FakeClock()())
    assert {s.scope.id: s.spent for s in statuses} == {
        "tag:project=atlas": 3_000_000_000, "tag:project=hermes": 300_000_000, "tag:project=apollo": 0}
    # the rebuilt counter holds: $3.00 spent leaves room for seven $1.05 worst cases of $10.50
    admission, planner = Admission(store, FakeClock()), Planner(policy)
    outcomes = [await admission.admit(f"x{i}", request("HR", *ATLAS), planner) for i in range(8)]
    assert [isinstance(o, Admitted) for o in outcomes] == [True] * 7 + [False]


async def test_the_forecast_of_a_tag_budget_counts_its_tagged_calls(policy: Policy, tmp_path: Path) -> None:
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/forecast.db")
    now = FakeClock()() + timedelta(hours=1)
    try:
        for event in (_event("a", "HR", {"project": "atlas"}, 1_000_000_000),
                      _event("b", "SALES", {"project": "atlas", "feature": "search"}, 2_000_000_000),
                      _event("c", "SALES", {"project": "None"}, 5), _event("d", "HR", {}, 7)):
            await ledger.record(event)
        lines = await budget_forecasts(ledger, policy, datetime(2026, 11, 1, tzinfo=UTC),
                                       datetime(2026, 12, 1, tzinfo=UTC), now)
    finally:
        await ledger.close()
    spent = {line.check.scope.id: line.projection.spent for line in lines}
    assert spent == {"tag:project=atlas": 3_000_000_000, "tag:project=hermes": 0, "tag:project=apollo": 0}


async def test_simulate_replays_calls_under_their_tag_budgets(policy: Policy) -> None:
    # twelve $1.00 calls tagged atlas, from both departments: the $10.50 cap refuses the last two
    events = [_event(f"e{i:02}", ("HR", "SALES")[i % 2], {"project": "atlas"}, 1_000_000_000) for i in range(12)]
    result = await simulate(policy, events)
    assert {d: (o.calls, o.rejected) for d, o in result.departments.items()} == {"HR": (6, 1), "SALES": (6, 1)}
    [run_out] = result.ran_out.values()
    assert run_out.check.scope.id == "tag:project=atlas"


async def test_the_library_governor_takes_a_calls_tags(policy: Policy) -> None:
    governor = Governor(policy, clock=FakeClock())
    for _ in range(10):
        async with governor.admit(department="SALES", model="house", input_tokens=1000, max_output_tokens=50,
                                  tags={"project": "atlas"}) as call:
            await call.settle(1000, 50)
    with pytest.raises(BudgetExceeded, match=r"^Project atlas \(calls tagged project=atlas\)"):
        async with governor.admit(department="HR", model="house", input_tokens=1000, max_output_tokens=50,
                                  tags={"project": "atlas"}):
            pass


async def test_a_tag_rate_limit_counts_the_calls_of_every_department(policy: Policy) -> None:
    admission, planner = Admission(MemoryCounterStore(), FakeClock()), Planner(policy)
    search = ("feature", "search")
    outcomes = [await admission.admit(f"r{i}", request(("HR", "SALES")[i % 2], search), planner) for i in range(101)]
    assert all(isinstance(o, Admitted) for o in outcomes[:100])
    refused = outcomes[100]
    assert isinstance(refused, Decision) and refused.denial is not None
    assert refused.denial.message.startswith(
        "Feature search (calls tagged feature=search) is limited to 100 requests per minute and has used 100")
