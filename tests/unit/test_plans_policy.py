"""Policy ``plans:`` and ``customers:`` (SPEC §12): validation with paths and lines, the model they
build, and the customer scope every call of a customer is checked against."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costwarden.core.kinds import Priority, PromptCaching, ScopeKind
from costwarden.core.money import usd_to_nanos
from costwarden.core.scopes import Caller, Planner, plan_for, scopes_of
from costwarden.errors import PolicyError
from costwarden.policy import parse_policy, summarize

GOOD = """
version: 1
upstreams:
  openai:    {type: openai, base_url: http://127.0.0.1:9/v1, tpm: 400000}
  anthropic: {type: anthropic, base_url: http://127.0.0.1:9}
departments:
  PRODUCT: {}
plans:
  silver:
    priority: standard
    rate_card: {markup_pct: 20}
    included_usd: 0
    budgets: [{limit: 500, period: monthly, action: reject}]
    limits: {tpm: 100000}
  gold:
    priority: high
    efficiency:
      prompt_caching: auto
      thin_context: {max_input_tokens: 32000}
    rate_card:
      markup_pct: 35
      models: {claude-sonnet-4-5-20250929: {input: 4.00, output: 20.00, cache_write_5m: 5}}
    included_usd: 12.50
    queue_s: 2.5
customers:
  ACME:   {name: Acme Corp, plan: gold,   department: PRODUCT}
  GLOBEX: {name: Globex,    plan: silver, department: PRODUCT}
"""
NOW = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    return list(caught.value.problems)


def test_plans_and_customers_build_the_model() -> None:
    policy = parse_policy(GOOD)
    gold, silver = policy.plans["gold"], policy.plans["silver"]
    assert gold.priority == Priority.HIGH and silver.priority == Priority.STANDARD
    assert gold.efficiency.prompt_caching == PromptCaching.AUTO
    assert gold.efficiency.thin_context is not None and gold.efficiency.thin_context.max_input_tokens == 32000
    assert silver.efficiency.prompt_caching == PromptCaching.OFF and silver.efficiency.thin_context is None
    assert gold.rate_card.markup_pct == Decimal(35) and silver.rate_card.markup_pct == Decimal(20)
    # a snapshot id in a rate card prices its catalog entry, as events record it
    assert set(gold.rate_card.models) == {"claude-sonnet-4-5"}
    rates = gold.rate_card.models["claude-sonnet-4-5"].rates()
    assert rates["input"] == 4_000_000 and rates["cache_write_5m"] == 5_000_000
    assert rates["cached_input"] == 4_000_000  # unset on the card: the card's input price
    assert gold.included_nanos == usd_to_nanos("12.50") and silver.included_nanos == 0
    assert gold.queue_s == Decimal("2.5") and silver.queue_s == Decimal(10)
    assert silver.rules.budgets[0].limit == usd_to_nanos(500) and silver.rules.limits is not None
    assert policy.customers["ACME"].plan is gold and policy.customers["ACME"].department == "PRODUCT"
    assert policy.customers["GLOBEX"].name == "Globex"
    assert policy.plan_of("ACME") is gold and policy.plan_of(None) is None and policy.plan_of("NOPE") is None
    assert policy.upstreams["openai"].tpm == 400000 and policy.upstreams["anthropic"].tpm is None


def test_a_customer_is_a_scope_with_its_plans_budgets_and_limits() -> None:
    policy = parse_policy(GOOD)
    scopes = scopes_of(policy, Caller("PRODUCT", key_id="k1", customer="GLOBEX"))
    customer = scopes[-1]
    assert customer.id == "customer:GLOBEX" and customer.kind == ScopeKind.CUSTOMER
    assert customer.department == "PRODUCT" and customer.rules == policy.plans["silver"].rules
    plan = plan_for(policy, Caller("PRODUCT", customer="GLOBEX"), NOW)
    assert [check.window.key for check in plan.budgets][-1].startswith("b|customer:GLOBEX|0|monthly|usd")
    assert [(c.scope.id, c.metric) for c in plan.limits] == [("customer:GLOBEX", "tpm")]
    # a plan without budgets or limits adds no counters; a call of no customer has no customer scope
    assert [s.kind for s in scopes_of(policy, Caller("PRODUCT", customer="ACME"))] == ["organization", "department"]
    assert [s.kind for s in scopes_of(policy, Caller("PRODUCT"))] == ["organization", "department"]


def test_the_planner_keys_its_plans_by_customer() -> None:
    policy = parse_policy(GOOD)
    planner = Planner(policy)
    stamp = NOW.timestamp()
    plain = planner.plan(Caller("PRODUCT", key_id="k1"), NOW, stamp)
    globex = planner.plan(Caller("PRODUCT", key_id="k1", customer="GLOBEX"), NOW, stamp)
    again = planner.plan(Caller("PRODUCT", key_id="k1"), NOW, stamp)
    assert len(globex.budgets) == len(plain.budgets) + 1
    assert again is plain
    assert globex == plan_for(policy, Caller("PRODUCT", key_id="k1", customer="GLOBEX"), NOW)


def test_every_mistake_is_reported_with_its_path_and_line() -> None:
    found = problems("""
version: 1
upstreams:
  openai: {type: openai, base_url: http://127.0.0.1:9/v1, tpm: 0}
departments:
  PRODUCT: {}
plans:
  silver:
    priorty: standard
    rate_card: {markup_pct: -5}
  gold:
    priority: urgent
    efficiency:
      prompt_caching: sometimes
      thin_context: {max_input_tokens: 0}
    queue_s: 0
  bronze:
    rate_card: {models: {gpt-4o-mini: {input: 1}}}
customers:
  ACME:   {name: Acme Corp, plan: gold,   department: PRODUCT}
  acme:   {plan: silver, department: PRODUCT}
  GLOBEX: {plan: platinum, department: SALES}
  INITECH: {plan: bronze}
""")
    assert found == [
        "upstreams.openai.tpm: must be > 0 (line 4)",
        "plans.silver: unknown key 'priorty'; allowed keys: budgets, efficiency, included_usd, limits, priority, "
        "queue_s, rate_card (line 9)",
        "plans.silver.rate_card.markup_pct: must be >= 0 (line 10)",
        "plans.gold.priority: must be 'standard' or 'high' (got 'urgent') (line 12)",
        "plans.gold.efficiency.prompt_caching: must be 'auto' or 'off' (got 'sometimes') (line 14)",
        "plans.gold.efficiency.thin_context.max_input_tokens: must be > 0 (line 15)",
        "plans.gold.queue_s: must be > 0 (line 16)",
        "plans.bronze.rate_card.models.gpt-4o-mini.output: is required (line 18)",
        "customers.acme: bad id 'acme': ids match [A-Z0-9][A-Z0-9_-]{0,63} (e.g. MARKETING, TIER1-DESK) (line 21)",
        "customers.GLOBEX.department: unknown department 'SALES' (departments: PRODUCT) (line 22)",
        "customers.GLOBEX.plan: unknown plan 'platinum' (plans: bronze, gold, silver) (line 22)",
        "customers.INITECH.department: is required (line 23)",
    ]


def test_rate_card_models_and_included_amounts_are_checked() -> None:
    found = problems("""
version: 1
departments:
  PRODUCT: {}
plans:
  gold:
    included_usd: 0.0000000001
  Silver: {}
""")
    assert found == [
        "plans.gold.included_usd: 0.0000000001 USD is finer than a nano-dollar (1e-9 USD) (line 7)",
        "plans.Silver: bad name 'Silver': use lower-case letters, digits, '-', '_' or '.' (line 8)",
    ]
    found = problems("""
version: 1
departments:
  PRODUCT: {}
plans:
  gold:
    rate_card:
      models:
        no-such-model: {input: 1, output: 2}
        gpt-4o-mini: {input: 0.30, output: 1.20}
        gpt-4o-mini-2024-07-18: {input: 0.30, output: 1.20}
""")
    assert found == [
        "plans.gold.rate_card.models.no-such-model: unknown model 'no-such-model' (not in the bundled catalog or "
        "the policy's models) (line 9)",
        "plans.gold.rate_card.models.gpt-4o-mini-2024-07-18: 'gpt-4o-mini-2024-07-18' is 'gpt-4o-mini', which this "
        "rate card already prices (line 11)",
    ]


def test_a_policy_without_plans_has_none() -> None:
    policy = parse_policy("version: 1\ndepartments:\n  HR: {}\n")
    assert policy.plans == {} and policy.customers == {}


def test_policy_check_summarizes_plans_and_customers() -> None:
    text = summarize(parse_policy(GOOD))
    assert "openai -> http://127.0.0.1:9/v1 (openai, 400,000 tpm)" in text
    assert "  gold: priority high, prompt caching auto, thin context 32,000 tokens, queue up to 2.5 s" in text
    assert "    rate card: own prices for claude-sonnet-4-5; others markup 35%; $12.50 included" in text
    assert "    rate card: markup 20%" in text and "    budget: $500.00 monthly, action reject" in text
    assert "  ACME: Acme Corp, plan gold, department PRODUCT" in text
