"""Each department of SPEC section 2's example policy behaves as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from clock import FakeClock
from costwarden import errors
from costwarden.core.money import usd_to_nanos
from costwarden.core.scopes import Caller, plan_for
from costwarden.engine.governor import Governor
from costwarden.policy import load_policy, parse_policy

EXAMPLE = Path(__file__).parents[2] / "examples" / "policy.yaml"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def governor(clock: FakeClock) -> Governor:
    return Governor(load_policy(EXAMPLE), clock=clock)


async def spend(governor: Governor, clock: FakeClock, department: str, usd: str, **who: str) -> None:
    """Put settled spend on every budget a call of ``department`` touches, as the ledger rebuild does."""
    plan = plan_for(governor.policy, Caller(department, **who), clock())
    await governor.admission.store.load([(c.window, usd_to_nanos(usd)) for c in plan.budgets if c.budget.unit == "usd"])


async def call(governor: Governor, department: str, model: str = "gpt-4o-mini", max_out: int | None = 100,
               input_tokens: int = 1000, **who: str) -> tuple[str, int]:
    async with governor.admit(department=department, model=model, input_tokens=input_tokens,
                              max_output_tokens=max_out, **who) as c:
        await c.settle(input_tokens, min(c.max_output_tokens, 50))
        return c.model, c.max_output_tokens


async def test_marketing_soft_budget_alerts_once_at_80_percent_and_never_blocks(governor: Governor) -> None:
    fired = []
    for _ in range(3):
        async with governor.admit(department="MARKETING", model="gpt-4o", input_tokens=10,
                                  max_output_tokens=10) as c:
            # $300 of input each: 120M tokens at $2.50 / 1M
            settled = await c.settle(input_tokens=120_000_000, output_tokens=0)
            fired.extend(settled.crossings)
    assert [(x.check.scope.id, str(x.fraction)) for x in fired] == [("dept:MARKETING", "0.8")]
    assert fired[0].spent == usd_to_nanos("900")
    # past the $1,000 limit, a soft budget still admits
    async with governor.admit(department="MARKETING", model="gpt-4o", input_tokens=10, max_output_tokens=10) as c:
        await c.settle(input_tokens=200_000_000, output_tokens=0)
    assert await call(governor, "MARKETING", "gpt-4o") == ("gpt-4o", 100)


async def test_engineering_restricted_to_tier_1_after_5000_then_rejected_after_6000(
        governor: Governor, clock: FakeClock) -> None:
    assert (await call(governor, "ENGINEERING", "gpt-4o"))[0] == "gpt-4o"
    await spend(governor, clock, "ENGINEERING", "5000")
    assert (await call(governor, "ENGINEERING", "gpt-4o"))[0] == "gpt-4o-mini"  # downgraded into tier 1
    assert (await call(governor, "ENGINEERING", "gpt-4o-mini"))[0] == "gpt-4o-mini"  # tier 1 keeps counting
    await spend(governor, clock, "ENGINEERING", "999.99")
    with pytest.raises(errors.BudgetExceeded, match=r"Department ENGINEERING has spent \$5,999.99 of its \$6,000.00 monthly budget"):
        await call(governor, "ENGINEERING", "gpt-4o-mini", max_out=100_000, input_tokens=100_000)


async def test_restriction_lasts_until_the_period_ends(governor: Governor, clock: FakeClock) -> None:
    await spend(governor, clock, "ENGINEERING", "5000")
    assert (await call(governor, "ENGINEERING", "gpt-4o"))[0] == "gpt-4o-mini"
    clock.advance(days=30)  # December: a new period, no restriction
    assert (await call(governor, "ENGINEERING", "gpt-4o"))[0] == "gpt-4o"


async def test_hr_is_rejected_at_200(governor: Governor, clock: FakeClock) -> None:
    await spend(governor, clock, "HR", "200")
    with pytest.raises(errors.BudgetExceeded) as refused:
        await call(governor, "HR")
    assert refused.value.message \
        == "Department HR has spent $200.00 of its $200.00 monthly budget; it resets 2026-12-01 00:00 America/New_York."
    assert refused.value.should_retry is False


async def test_hr_output_is_clamped_when_room_is_short(governor: Governor, clock: FakeClock) -> None:
    await spend(governor, clock, "HR", "199.999")  # $0.001 left: 1,666 gpt-4o-mini output tokens after input
    model, bound = await call(governor, "HR", "gpt-4o-mini", max_out=16_000, input_tokens=10)
    assert model == "gpt-4o-mini"
    assert 64 <= bound < 16_000
    cost = governor.policy.catalog["gpt-4o-mini"].cost(10, bound)
    assert cost <= usd_to_nanos("0.001") < governor.policy.catalog["gpt-4o-mini"].cost(10, bound + 1)


async def test_support_may_not_use_tier_3(clock: FakeClock) -> None:
    text = EXAMPLE.read_text().replace(
        "\nmodels:", "\nmodels:\n  expert-x: {provider: openai, tier: 3, input: 5, output: 15}\n ", 1)
    governor = Governor(parse_policy(text), clock=clock)
    assert (await call(governor, "SUPPORT", "gpt-4o"))[0] == "gpt-4o-mini"  # downgraded into tier 1
    with pytest.raises(errors.ModelNotAllowed, match="Department SUPPORT may use tier 1 models; expert-x is tier 3"):
        await call(governor, "SUPPORT", "expert-x")


async def test_per_key_breaker_stops_a_runaway_key(governor: Governor, clock: FakeClock) -> None:
    await spend(governor, clock, "ENGINEERING", "50", key_id="agent-1")
    with pytest.raises(errors.BudgetExceeded, match="Key agent-1 of ENGINEERING"):
        await call(governor, "ENGINEERING", key_id="agent-1")
    assert (await call(governor, "ENGINEERING", key_id="agent-2"))[0] == "gpt-4o-mini"  # other keys unaffected
    clock.advance(hours=1, minutes=1)  # the rolling hour forgets the spend
    assert (await call(governor, "ENGINEERING", key_id="agent-1"))[0] == "gpt-4o-mini"


async def test_sales_requests_per_minute(governor: Governor, clock: FakeClock) -> None:
    for _ in range(60):
        await call(governor, "SALES", input_tokens=10)
    with pytest.raises(errors.RateLimited, match="60 requests per minute") as limited:
        await call(governor, "SALES", input_tokens=10)
    assert limited.value.retry_after is not None and limited.value.retry_after >= 1
    clock.advance(seconds=61)
    await call(governor, "SALES", input_tokens=10)


async def test_sales_tokens_per_minute(governor: Governor) -> None:
    with pytest.raises(errors.RateLimited, match="20,000 tokens per minute"):
        await call(governor, "SALES", "gpt-4o", max_out=5_000, input_tokens=16_000)


async def test_support_team_weekly_budget(governor: Governor, clock: FakeClock) -> None:
    await spend(governor, clock, "SUPPORT", "300", team="TIER1-DESK")
    with pytest.raises(errors.BudgetExceeded, match="Team TIER1-DESK of SUPPORT"):
        await call(governor, "SUPPORT", team="TIER1-DESK")
    await call(governor, "SUPPORT")  # the department itself has no budget


async def test_organization_ceiling(governor: Governor, clock: FakeClock) -> None:
    plan = plan_for(governor.policy, Caller("SALES"), clock())
    org = next(c for c in plan.budgets if c.scope.id == "org")
    await governor.admission.store.load([(org.window, usd_to_nanos("20000"))])
    with pytest.raises(errors.BudgetExceeded, match="The organization has spent"):
        await call(governor, "SALES")


async def test_unknown_model_and_department(governor: Governor) -> None:
    with pytest.raises(errors.ModelNotFound):
        await call(governor, "SALES", "gpt-17")
    with pytest.raises(errors.UnknownDepartment):
        await call(governor, "LEGAL")


async def test_release_on_error_frees_the_reservation(governor: Governor, clock: FakeClock) -> None:
    with pytest.raises(RuntimeError):
        async with governor.admit(department="HR", model="gpt-4o-mini", input_tokens=10, max_output_tokens=10):
            raise RuntimeError("provider down")
    plan = plan_for(governor.policy, Caller("HR"), clock())
    snap = await governor.admission.store.snapshot(plan.windows, (), clock().timestamp())
    assert all(reserved == 0 and spent == 0 for spent, reserved in snap.usage[:len(plan.budgets)])
