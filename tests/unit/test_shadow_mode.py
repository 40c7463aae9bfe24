"""Shadow mode (SPEC §8): a budget or limit with ``enforce: false`` has its decision computed and
recorded ("would reject") but not applied.

Each case decides the same call twice, under the policy as written and with ``enforce: false``
taken out, so the shadow is seen to record exactly what enforcement would have done.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from costwarden import errors
from costwarden.core.decision import CallRequest, Decision, decide
from costwarden.core.kinds import Unit
from costwarden.core.money import usd_to_nanos
from costwarden.core.policy import Policy
from costwarden.core.scopes import Caller, plan_for
from costwarden.policy import parse_policy

NOW = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)
# gpt-4o: $2.50 / $10 per 1M tokens, tier 3, downgrades to gpt-4o-mini (tier 1)
POLICY = """
version: 1
models:
  gpt-4o:      {provider: openai, tier: 3, input: 2.50, output: 10.00, downgrade_to: gpt-4o-mini}
  gpt-4o-mini: {provider: openai, tier: 1, input: 0.15, output: 0.60}
departments:
  HR:
    budgets: [{limit: 10, period: monthly, action: reject, enforce: false}]
  ENGINEERING:
    budgets: [{limit: 10, period: monthly, action: downgrade, enforce: false}]
  OPS:
    budgets: [{limit: 10, period: monthly, action: {restrict_tiers: [1]}, enforce: false}]
  TOKENS:
    budgets: [{limit: 5000, unit: tokens, period: daily, action: reject, enforce: false}]
  SALES:
    limits: {rpm: 1, tpm: 100000, enforce: false}
"""


def decide_at(policy: Policy, department: str, spent: str = "10") -> Decision:
    """Decide a gpt-4o call of ``department`` (worst case $0.0075; $0.00045 on gpt-4o-mini) with
    ``spent`` dollars on every money budget, every token budget full and every limit used up."""
    call = CallRequest(Caller(department), "gpt-4o", input_tokens=1_000, output_tokens=500)
    plan = plan_for(policy, call.caller, NOW)
    usage = [(usd_to_nanos(spent) if c.budget.unit == Unit.USD else c.budget.limit, 0) for c in plan.budgets]
    usage += [(c.limit, 0) for c in plan.limits]
    return decide(policy, call, plan, usage, frozenset(), NOW)


@pytest.fixture(scope="module")
def shadowed() -> Policy:
    return parse_policy(POLICY)


@pytest.fixture(scope="module")
def enforced() -> Policy:
    return parse_policy(POLICY.replace(", enforce: false", ""))


def test_a_shadow_reject_budget_admits_and_records_the_refusal(shadowed: Policy, enforced: Policy) -> None:
    applied = decide_at(enforced, "HR")
    assert applied.denial is not None and applied.denial.error is errors.BudgetExceeded
    shadow = decide_at(shadowed, "HR")
    assert shadow.allowed and shadow.model is not None and shadow.model.id == "gpt-4o"
    assert (shadow.label, shadow.output_tokens) == ("allow", 500)
    assert shadow.shadow == ("would reject: dept:HR budget 0",)
    # the store is not asked to hold the limit either: the reservation may go past it
    assert [hold.limit for hold in shadow.holds] == [None]


def test_a_shadow_token_budget_admits_and_records_the_refusal(shadowed: Policy, enforced: Policy) -> None:
    assert decide_at(enforced, "TOKENS").denial is not None
    shadow = decide_at(shadowed, "TOKENS")
    assert shadow.allowed and shadow.shadow == ("would reject: dept:TOKENS budget 0",)
    assert [(hold.unit, hold.amount, hold.limit) for hold in shadow.holds] == [(Unit.TOKENS, 1_500, None)]


def test_a_shadow_downgrade_serves_the_model_asked_for(shadowed: Policy, enforced: Policy) -> None:
    applied = decide_at(enforced, "ENGINEERING", spent="9.999")  # $0.001 left: only gpt-4o-mini fits
    assert applied.model is not None and (applied.model.id, applied.label) == ("gpt-4o-mini", "downgrade")
    shadow = decide_at(shadowed, "ENGINEERING", spent="9.999")
    assert shadow.model is not None and (shadow.model.id, shadow.label) == ("gpt-4o", "allow")
    assert shadow.downgraded_from is None
    assert shadow.shadow == ("would downgrade: dept:ENGINEERING budget 0",)


def test_a_shadow_restriction_sets_no_flag(shadowed: Policy, enforced: Policy) -> None:
    applied = decide_at(enforced, "OPS")
    assert applied.model is not None and applied.model.id == "gpt-4o-mini" and applied.new_flags
    shadow = decide_at(shadowed, "OPS")
    assert shadow.model is not None and shadow.model.id == "gpt-4o"
    assert shadow.new_flags == ()
    assert shadow.shadow == ("would restrict to tier 1: dept:OPS budget 0",)


def test_a_shadow_rate_limit_admits_and_records_the_limit(shadowed: Policy, enforced: Policy) -> None:
    applied = decide_at(enforced, "SALES")
    assert applied.denial is not None and applied.denial.error is errors.RateLimited
    shadow = decide_at(shadowed, "SALES")
    assert shadow.allowed
    assert shadow.shadow == ("would rate-limit: dept:SALES rpm", "would rate-limit: dept:SALES tpm")
    assert shadow.rate is not None and shadow.rate.remaining_requests == 0
    assert all(hold.limit is None for hold in shadow.holds)  # neither rpm nor tpm is held to its limit


def test_a_call_that_fits_has_no_shadow(shadowed: Policy) -> None:
    assert decide_at(shadowed, "HR", spent="0").shadow == ()


def test_a_refused_call_keeps_the_shadow_decisions_made_before_it() -> None:
    # the organization's budget is only watched; the department's own budget is enforced
    policy = parse_policy(POLICY.replace("departments:", (
        "organization:\n  budgets: [{limit: 10, period: monthly, action: reject, enforce: false}]\n"
        "departments:\n  FINANCE:\n    budgets: [{limit: 10, period: weekly, action: reject}]"), 1))
    refused = decide_at(policy, "FINANCE")
    assert refused.denial is not None and refused.denial.error is errors.BudgetExceeded
    assert refused.shadow == ("would reject: org budget 0",)
