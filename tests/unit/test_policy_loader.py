"""Loading policy files: the SPEC example, exact numbers, and a precise message for every mistake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from textwrap import dedent

import pytest

from costwarden.core.money import usd_to_nanos
from costwarden.core.policy import RESTRICT, Policy
from costwarden.errors import PolicyError
from costwarden.policy import load_policy, parse_policy, summarize

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UNIT_MESSAGE = "unknown tier 4: tiers are 1 (cheap), 2 (standard) and 3 (expert)"


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(dedent(text), source="test.yaml")
    return info.value.problems


@pytest.fixture(scope="module")
def example() -> Policy:
    return load_policy(EXAMPLES / "policy.yaml")


# ---------------------------------------------------------------- valid policies


def test_spec_example_settings(example: Policy) -> None:
    assert example.version == 1
    assert example.timezone_name == "America/New_York"
    assert (example.attribution.header, example.attribution.require) == ("X-Department-ID", True)
    assert set(example.upstreams) == {"openai", "anthropic"}
    assert example.upstreams["openai"].base_url == "https://api.openai.com/v1"
    assert example.upstreams["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    [org_budget] = example.organization.budgets
    assert (org_budget.limit, org_budget.period.kind, org_budget.action.kind) == (
        20_000 * 10**9, "monthly", "reject")
    assert org_budget.is_hard


def test_spec_example_departments(example: Policy) -> None:
    assert list(example.departments) == ["MARKETING", "ENGINEERING", "HR", "SALES", "SUPPORT"]
    marketing = example.departments["MARKETING"]
    assert marketing.name == "Marketing"
    assert marketing.notify == ("mailto:cmo@example.com",)
    [soft] = marketing.rules.budgets
    assert (soft.limit, soft.alert_at, soft.action.kind, soft.is_hard) == (
        usd_to_nanos(1000), (Decimal("0.8"),), "alert", False)

    engineering = example.departments["ENGINEERING"]
    restrict, ceiling = engineering.rules.budgets
    assert restrict.action.kind == RESTRICT and restrict.action.tiers == frozenset({1})
    assert restrict.alert_at == (Decimal("0.5"), Decimal("0.8"))
    assert ceiling.limit == usd_to_nanos(6000)
    [breaker] = engineering.per_key.budgets
    assert (breaker.limit, breaker.period.kind, breaker.period.seconds) == (50 * 10**9, "rolling", 3600)

    assert example.departments["HR"].rules.budgets[0].limit == 200 * 10**9
    sales = example.departments["SALES"]
    assert sales.tiers == frozenset({1, 2, 3}) and sales.models is None
    assert sales.rules.limits is not None
    assert (sales.rules.limits.tpm, sales.rules.limits.rpm) == (20_000, 60)

    support = example.departments["SUPPORT"]
    assert support.tiers == frozenset({1})
    desk = support.teams["TIER1-DESK"]
    assert desk.name == "TIER1-DESK"
    assert (desk.rules.budgets[0].limit, desk.rules.budgets[0].period.kind) == (300 * 10**9, "weekly")


def test_spec_example_catalog(example: Policy) -> None:
    gpt4o = example.catalog["gpt-4o"]
    assert (gpt4o.tier, gpt4o.downgrade_to, gpt4o.context_window) == (3, "gpt-4o-mini", 128_000)
    assert gpt4o.input.usd_per_million == Decimal("2.50")
    assert example.catalog["gpt-4o-mini"].cached_input is not None
    assert example.catalog["gpt-4o-mini"].cached_input.picos_per_token == 75_000
    # No upstream serves google in this policy, so Gemini models are left out, not errors.
    assert "gemini-2.5-pro" not in example.catalog
    assert "claude-sonnet-4-5" in example.catalog


def test_policy_keeps_its_yaml_text() -> None:
    text = (EXAMPLES / "policy.yaml").read_text(encoding="utf-8")
    assert parse_policy(text).source == text


def test_demo_policy_points_both_upstreams_at_the_mock(example: Policy) -> None:
    demo = load_policy(EXAMPLES / "policy-demo.yaml")
    assert {name: (up.type, up.base_url, up.api_key_env) for name, up in demo.upstreams.items()} == {
        "openai": ("openai", "http://127.0.0.1:8100/v1", "MOCK_API_KEY"),
        "anthropic": ("anthropic", "http://127.0.0.1:8100", "MOCK_API_KEY"),
    }
    assert demo.departments == example.departments
    assert demo.organization == example.organization


def test_default_upstreams_serve_every_bundled_provider() -> None:
    policy = parse_policy("departments: {HR: {}}\n")
    assert {name: (up.type, up.base_url, up.api_key_env) for name, up in policy.upstreams.items()} == {
        "openai": ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "anthropic": ("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        "google": ("openai", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY"),
    }
    assert "gemini-2.5-flash" in policy.catalog
    assert policy.timezone_name == "UTC"
    assert policy.departments["HR"].tiers == frozenset({1, 2, 3})


def test_policy_models_override_the_catalog_field_by_field() -> None:
    policy = parse_policy(dedent("""\
        models:
          gpt-4o: {input: 2.00}
          in-house: {provider: openai, tier: 2, input: 0.000001, output: 1}
    """))
    gpt4o = policy.catalog["gpt-4o"]
    assert gpt4o.input.usd_per_million == Decimal("2.00")
    assert (gpt4o.output.usd_per_million, gpt4o.max_output, gpt4o.downgrade_to) == (
        Decimal("10.00"), 16_384, "gpt-4o-mini")
    assert gpt4o.price_version == "2.00/1.25/10.00@policy"  # a new price drops the bundled date
    house = policy.catalog["in-house"]
    assert (house.kind, house.cached_input, house.input.picos_per_token) == ("chat", None, 1)


def test_numbers_are_exact_and_codes_keep_their_text() -> None:
    policy = parse_policy(dedent("""\
        departments:
          NO:
            cost_center: 0041
            gl_account: 6100-200
            budgets:
              - {limit: 1000.10, period: 90m, alert_at: [0.1, 0.25, 0.1], action: downgrade}
              - {limit: 1_000_000, unit: tokens, period: daily, action: reject, enforce: false}
    """))
    department = policy.departments["NO"]  # a YAML 1.1 boolean word stays a department id
    assert (department.cost_center, department.gl_account) == ("0041", "6100-200")
    usd, tokens = department.rules.budgets
    assert usd.limit == 1_000_100_000_000
    assert usd.alert_at == (Decimal("0.1"), Decimal("0.25"))
    assert (tokens.unit, tokens.limit, tokens.enforce, tokens.is_hard) == ("tokens", 1_000_000, False, False)


def test_yaml_anchors_and_merge_keys_work() -> None:
    policy = parse_policy(dedent("""\
        departments:
          HR: &base
            tiers: [1]
            limits: {tpm: 1000, rpm: 10}
          LEGAL:
            <<: *base
            tiers: [1, 2]
    """))
    legal = policy.departments["LEGAL"]
    assert legal.tiers == frozenset({1, 2})
    assert legal.rules == policy.departments["HR"].rules


def test_summary_reads_like_the_policy(example: Policy) -> None:
    text = summarize(example)
    for expected in (
        "timezone: America/New_York",
        "models: 42 (17 anthropic, 25 openai)",  # the bundled catalog, less google (no upstream)
        "budget: $20,000.00 monthly, action reject",
        "MARKETING: Marketing",
        "budget: $1,000.00 monthly, alert at 80%, action alert",
        "budget: $5,000.00 monthly, alert at 50%, 80%, action restrict to tier 1",
        "per key:\n      budget: $50.00 rolling 1h, action reject",
        "limits: 20,000 tpm, 60 rpm",
        "team TIER1-DESK\n      budget: $300.00 weekly, action reject",
    ):
        assert expected in text


# ---------------------------------------------------------------- invalid policies


def test_wrong_types_are_named() -> None:
    assert problems_of("""\
        attribution: {require: "yes"}
        departments:
          HR:
            name: 5
            tiers: 1
            budgets: [{limit: "100", period: monthly, action: reject}]
    """) == [
        "attribution.require: must be true or false (got 'yes') (line 1)",
        "departments.HR.name: must be text (got the number 5) (line 4)",
        "departments.HR.tiers: must be a list (got the number 1) (line 5)",
        "departments.HR.budgets[0].limit: must be a number (got '100') (line 6)",
    ]


def test_negative_limit() -> None:
    assert problems_of("""\
        departments:
          HR:
            budgets:
              - {limit: 200, period: monthly, action: reject}
              - limit: -5
                period: monthly
                action: reject
    """) == ["departments.HR.budgets[1].limit: must be > 0 (line 5)"]


def test_unknown_tier() -> None:
    assert problems_of("""\
        models:
          house: {provider: openai, tier: 0, input: 1, output: 1}
        departments:
          SALES: {tiers: [1, 4]}
          HR:
            budgets: [{limit: 5, period: daily, action: {restrict_tiers: [4]}}]
    """) == [
        "models.house.tier: unknown tier 0: tiers are 1 (cheap), 2 (standard) and 3 (expert) (line 2)",
        f"departments.SALES.tiers[1]: {UNIT_MESSAGE} (line 4)",
        f"departments.HR.budgets[0].action: {UNIT_MESSAGE} (line 6)",
    ]


def test_downgrade_cycle_is_reported_once_with_the_loop() -> None:
    assert problems_of("""\
        models:
          gpt-4o-mini: {downgrade_to: gpt-4o}
          a: {provider: openai, tier: 2, input: 1, output: 2, downgrade_to: b}
          b: {provider: openai, tier: 1, input: 1, output: 1, downgrade_to: a}
    """) == [
        "models.gpt-4o-mini.downgrade_to: downgrade chain loops: gpt-4o-mini -> gpt-4o -> gpt-4o-mini (line 2)",
        "models.a.downgrade_to: downgrade chain loops: a -> b -> a (line 3)",
    ]


def test_downgrade_to_must_name_a_known_model_of_the_same_kind() -> None:
    assert problems_of("""\
        models:
          gpt-4o: {downgrade_to: gpt-4o-micro}
          text-embedding-3-large: {downgrade_to: gpt-4o-mini}
    """) == [
        "models.gpt-4o.downgrade_to: unknown model 'gpt-4o-micro' "
        "(not in the bundled catalog or the policy's models) (line 2)",
        "models.text-embedding-3-large.downgrade_to: 'gpt-4o-mini' is of kind chat, "
        "but 'text-embedding-3-large' is of kind embedding (line 3)",
    ]


def test_unknown_model_in_allow_list() -> None:
    assert problems_of("""\
        upstreams:
          openai: {type: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
        departments:
          HR:
            models: [gpt-4o-mini, gpt-4o-mimi, gemini-2.5-pro]
    """) == [
        "departments.HR.models[1]: unknown model 'gpt-4o-mimi' "
        "(not in the bundled catalog or the policy's models) (line 5)",
        "departments.HR.models[2]: model 'gemini-2.5-pro' is served by provider 'google', "
        "which has no entry in upstreams (line 5)",
    ]


def test_policy_model_provider_needs_an_upstream() -> None:
    assert problems_of("""\
        upstreams:
          openai: {type: openai, base_url: https://api.openai.com/v1}
        models:
          mistral-large: {provider: mistral, tier: 3, input: 2, output: 6}
    """) == [
        "models.mistral-large.provider: provider 'mistral' has no entry in upstreams "
        "(upstreams: openai) (line 4)",
    ]


def test_new_model_needs_provider_tier_input_and_output() -> None:
    assert problems_of("""\
        models:
          house: {tier: 1, input: 0.5}
    """) == [
        "models.house: a model that is not in the bundled catalog needs provider, tier, input "
        "and output; missing: provider, output (line 2)",
    ]


def test_unknown_keys_list_the_allowed_ones() -> None:
    assert problems_of("""\
        timezone: UTC
        departmens: {}
        departments:
          HR:
            budgets:
              - {limit: 5, period: daily, action: reject, alert: [0.5]}
    """) == [
        "(top level): unknown key 'departmens'; allowed keys: alerts, attribution, customers, departments, models, "
        "on_store_failure, organization, plans, tags, timezone, upstreams, version (line 2)",
        "departments.HR.budgets[0]: unknown key 'alert'; allowed keys: action, alert_at, enforce, "
        "limit, period, unit (line 6)",
    ]


def test_bad_period() -> None:
    assert problems_of("""\
        organization:
          budgets: [{limit: 100, period: fortnightly, action: alert}]
    """) == [
        "organization.budgets[0].period: unknown period 'fortnightly': use monthly, weekly, daily "
        "or a rolling window like 90m, 1h, 7d (line 2)",
    ]


def test_bad_timezone() -> None:
    assert problems_of("timezone: Mars/Olympus_Mons\n") == [
        "timezone: unknown timezone 'Mars/Olympus_Mons': use an IANA name like America/New_York (line 1)",
    ]


def test_bad_department_and_team_ids() -> None:
    assert problems_of("""\
        departments:
          marketing: {}
          SUPPORT:
            teams:
              tier 1: {}
    """) == [
        "departments.marketing: bad id 'marketing': ids match [A-Z0-9][A-Z0-9_-]{0,63} "
        "(e.g. MARKETING, TIER1-DESK) (line 2)",
        "departments.SUPPORT.teams.tier 1: bad id 'tier 1': ids match [A-Z0-9][A-Z0-9_-]{0,63} "
        "(e.g. MARKETING, TIER1-DESK) (line 5)",
    ]


def test_bad_notify_target() -> None:
    assert problems_of("""\
        departments:
          HR:
            notify: ["mailto:hr@example.com", "slack:#hr", "log:", "mailto:"]
    """) == [
        "departments.HR.notify[1]: unknown notify target 'slack:#hr': use mailto:ADDRESS, https://URL, "
        "http://URL or log: (line 3)",
        "departments.HR.notify[3]: unknown notify target 'mailto:': use mailto:ADDRESS, https://URL, "
        "http://URL or log: (line 3)",
    ]


def test_an_upstream_url_a_client_cannot_use_is_refused() -> None:
    # each used to pass, and every call through it failed with a 500 from the HTTP client
    assert problems_of("""\
        upstreams:
          openai: {type: openai, base_url: "http://127.0.0.1:99999/v1", api_key_env: K}
          anthropic: {type: anthropic, base_url: "http://:8100", api_key_env: K}
          google: {type: openai, base_url: "http://mock:port/v1", api_key_env: K}
    """) == [
        "upstreams.openai.base_url: bad port in 'http://127.0.0.1:99999/v1': use a number from 1 to 65535 (line 2)",
        "upstreams.anthropic.base_url: must be an http:// or https:// URL (got 'http://:8100') (line 3)",
        "upstreams.google.base_url: bad port in 'http://mock:port/v1': use a number from 1 to 65535 (line 4)",
    ]
    assert problems_of("""\
        departments:
          HR:
            notify: ["https://hooks.example.com/x", "http://127.0.0.1:99999/hook"]
    """) == ["departments.HR.notify[1]: bad port in 'http://127.0.0.1:99999/hook': use a number from 1 to 65535 "
             "(line 3)"]


def test_bad_action_and_inexact_limits() -> None:
    assert problems_of("""\
        departments:
          HR:
            budgets:
              - {limit: 5, period: daily, action: block}
              - {limit: 0.0000000001, period: daily, action: reject}
              - {limit: 10.5, unit: tokens, period: daily, action: reject}
    """) == [
        "departments.HR.budgets[0].action: unknown action 'block': use alert, reject, downgrade "
        "or {restrict_tiers: [1]} (line 4)",
        "departments.HR.budgets[1].limit: 1E-10 USD is finer than a nano-dollar (1e-9 USD) (line 5)",
        "departments.HR.budgets[2].limit: a token limit must be a whole number of tokens (got 10.5) (line 6)",
    ]


def test_duplicate_keys_are_errors() -> None:
    assert problems_of("""\
        departments:
          HR: {}
          HR: {tiers: [1]}
    """) == ["departments.HR: duplicate key 'HR' (line 3)"]


def test_yaml_syntax_error_has_its_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("version: 1\ndepartments:\n  HR: {tiers: [1, 2}\n", source="broken.yaml")
    [problem] = info.value.problems
    assert problem.startswith("YAML syntax error: ")
    assert problem.endswith("(line 3)")
    assert str(info.value).startswith("broken.yaml is invalid:")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(text: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    assert info.value.problems == [
        "(top level): the file is empty; a policy is a mapping with departments, models, upstreams... (line 1)"
    ]


def test_not_a_mapping() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("- HR\n- SALES\n")
    assert info.value.problems == ["(top level): a policy must be a mapping (got a list) (line 1)"]


def test_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as info:
        load_policy(missing)
    assert info.value.problems == [f"file not found: {missing}"]
    assert str(info.value).startswith(f"{missing} is invalid:")


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("departments:\n  HR: {tiers: [1]}\n", encoding="utf-8")
    assert load_policy(path).departments["HR"].tiers == frozenset({1})


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    problems = problems_of("""\
        timezone: Nowhere/Land
        models:
          a: {provider: openai, tier: 1, input: 1, output: 1, downgrade_to: b}
          b: {provider: openai, tier: 1, input: 1, output: 1, downgrade_to: a}
        departments:
          hr:
            budgets: [{limit: 0, period: monthly, action: reject}]
          SALES:
            models: [nope]
            notify: [slack]
            limits: {tpm: 1.5}
    """)
    assert problems == [
        "timezone: unknown timezone 'Nowhere/Land': use an IANA name like America/New_York (line 1)",
        "models.a.downgrade_to: downgrade chain loops: a -> b -> a (line 3)",
        "departments.hr: bad id 'hr': ids match [A-Z0-9][A-Z0-9_-]{0,63} (e.g. MARKETING, TIER1-DESK) (line 6)",
        "departments.hr.budgets[0].limit: must be > 0 (line 7)",
        "departments.SALES.models[0]: unknown model 'nope' (not in the bundled catalog or the policy's "
        "models) (line 9)",
        "departments.SALES.notify[0]: unknown notify target 'slack': use mailto:ADDRESS, https://URL, "
        "http://URL or log: (line 10)",
        "departments.SALES.limits.tpm: must be a whole number (got the number 1.5) (line 11)",
    ]


def test_yaml_quirks_numbers_in_exponent_form_and_foreign_tags() -> None:
    policy = parse_policy("departments:\n  HR:\n    budgets: [{limit: 2e6, unit: tokens, period: 1d, action: alert}]\n")
    assert policy.departments["HR"].rules.budgets[0].limit == 2_000_000
    assert problems_of("""\
        timezone: !env TZ
        departments:
          HR:
            budgets: [{limit: "2e6", unit: tokens, period: 1d, action: alert}]
    """) == [
        "timezone: unsupported YAML tag !env (line 1)",
        "departments.HR.budgets[0].limit: must be a number (got '2e6') (line 4)",
    ]


# ---------------------------------------------------------------- tags (SPEC §13)


def test_the_tags_section_gives_each_tag_value_its_rules() -> None:
    policy = parse_policy(dedent("""\
        departments: {HR: {}}
        tags:
          project:
            atlas:
              budgets: [{limit: 10.50, period: monthly, action: reject}]
            apollo:
              budgets: [{limit: 0.000001, period: monthly, action: reject, enforce: false}]
            zeus: {}
          feature:
            search:
              limits: {rpm: 100}
    """))
    atlas = policy.tags[("project", "atlas")]
    [budget] = atlas.rules.budgets
    assert (budget.limit, budget.period.text, budget.action.kind, budget.is_hard) == (10_500_000_000, "monthly",
                                                                                    "reject", True)
    assert atlas.scope_id == "tag:project=atlas"
    assert not policy.tags[("project", "zeus")].rules
    assert policy.tags[("feature", "search")].rules.limits is not None
    assert policy.tags[("project", "apollo")].rules.budgets[0].enforce is False
    summary = summarize(policy)
    assert "tags: 4\n  feature=search:\n    limits: 100 rpm\n" in summary
    assert "  project=zeus: no budgets or limits" in summary


def test_tag_mistakes_are_listed_with_their_paths_and_lines() -> None:
    assert problems_of("""\
        departments: {HR: {}}
        tags:
          project:
            atlas:
              budgets: [{limit: 0, period: monthly, action: rejec}]
              notify: [log:]
            "big bang": {}
          "a=b": {}
          feature: [search]
          cost_center: {budgets: []}
    """) == [
        "tags.project.atlas.budgets[0].action: unknown action 'rejec': use alert, reject, downgrade or "
        "{restrict_tiers: [1]} (line 5)",
        "tags.project.atlas.budgets[0].limit: must be > 0 (line 5)",
        "tags.project.atlas: unknown key 'notify'; allowed keys: budgets, limits (line 6)",
        "tags.project.big bang: bad tag value 'big bang': letters, digits and _ . : / - only, at most 64 "
        "characters, as in X-Tags (line 7)",
        "tags.a=b: bad tag name 'a=b': letters, digits and _ . : / - only, at most 64 characters, as in "
        "X-Tags (line 8)",
        "tags.feature: must be a mapping of the tag's values to their rules, e.g. {atlas: {budgets: [...]}} "
        "(got a list) (line 9)",
        "tags.cost_center.budgets: must be a mapping (got a list) (line 10)",
    ]
    assert problems_of("tags: [project]\n") == ["tags: must be a mapping (got a list) (line 1)"]


def test_a_number_as_a_tag_value_is_its_text() -> None:
    policy = parse_policy("departments: {HR: {}}\ntags: {release: {2026: {budgets: "
                          "[{limit: 1, period: daily, action: reject}]}}}\n")
    assert list(policy.tags) == [("release", "2026")]
