"""Attribution of a call (SPEC §4, §10): every header and body field is bounded and checked
against the policy before anything is stored or counted under it."""

from __future__ import annotations

from datetime import UTC, datetime
from textwrap import dedent

import pytest

from costwarden import errors
from costwarden.app.auth import (
    MAX_ID_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    Attribution,
    KeyDirectory,
    KeyIdentity,
    attribute,
)
from costwarden.core.policy import Policy
from costwarden.core.scopes import Planner, plan_for
from costwarden.ledger.credentials import hash_secret
from costwarden.policy import parse_policy

POLICY = """
version: 1
attribution: {team: TEAM_RULE}
departments:
  SALES: {}
  SUPPORT:
    teams:
      TIER1-DESK: {budgets: [{limit: 300, period: weekly, action: reject}]}
      TIER2: {}
  RESEARCH:
    teams: {LAB: {}}
"""
UNBOUND = KeyIdentity("key_unbound")


def policy(team_rule: str = "optional") -> Policy:
    return parse_policy(dedent(POLICY).replace("TEAM_RULE", team_rule))


def call(p: Policy, key: KeyIdentity = UNBOUND, body: dict[str, object] | None = None, **headers: str) -> Attribution:
    return attribute(p, key, {k.replace("_", "-"): v for k, v in headers.items()}, body or {})


def refused(p: Policy, key: KeyIdentity = UNBOUND, body: dict[str, object] | None = None,
            **headers: str) -> errors.CostwardenError:
    with pytest.raises(errors.CostwardenError) as info:
        call(p, key, body, **headers)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    return info.value


def test_values_within_the_bounds_are_kept() -> None:
    who = call(policy(), x_department_id="support", x_team_id="tier1-desk", x_user_id="u" * MAX_ID_CHARS,
               x_tags=",".join(f"t{i}={'v' * MAX_TAG_CHARS}" for i in range(MAX_TAGS)))
    assert (who.caller.department, who.caller.team, who.caller.user) == ("SUPPORT", "TIER1-DESK", "u" * 128)
    assert len(who.tags) == MAX_TAGS


@pytest.mark.parametrize("header", ["x_user_id", "x_team_id", "x_department_id"])
def test_an_id_longer_than_128_characters_is_refused(header: str) -> None:
    error = refused(policy(), **{"x_department_id": "SUPPORT", header: "a" * (MAX_ID_CHARS + 1)})
    name = {"x_user_id": "X-User-ID", "x_team_id": "X-Team-ID", "x_department_id": "X-Department-ID"}[header]
    assert error.param == name
    assert f"{name} is 129 characters long; the limit is 128" in error.message


def test_an_oversized_id_is_not_echoed_back() -> None:
    error = refused(policy(), x_department_id="SALES", x_user_id="x" * 8 * 1024 * 1024)
    assert len(error.message) < 300 and "8,388,608 characters" in error.message


def test_the_body_user_fields_are_bounded_too() -> None:
    assert call(policy(), body={"user": "ana"}, x_department_id="SALES").caller.user == "ana"
    openai = refused(policy(), body={"user": "u" * 129}, x_department_id="SALES")
    assert openai.param == "user"
    anthropic = refused(policy(), body={"metadata": {"user_id": "u" * 129}}, x_department_id="SALES")
    assert anthropic.param == "metadata.user_id"


def test_tags_are_bounded_in_number_and_length() -> None:
    too_many = refused(policy(), x_department_id="SALES", x_tags=",".join(f"t{i}=v" for i in range(MAX_TAGS + 1)))
    assert too_many.param == "X-Tags" and "at most 32" in too_many.message
    too_long = refused(policy(), x_department_id="SALES", x_tags="project=" + "v" * (MAX_TAG_CHARS + 1))
    assert too_long.param == "X-Tags" and "at most 64 characters" in too_long.message
    huge = refused(policy(), x_department_id="SALES", x_tags="a=b," * 1_000_000)
    assert len(huge.message) < 300


def test_a_tag_carries_one_value() -> None:
    twice = refused(policy(), x_department_id="SALES", x_tags="project=atlas,feature=search,project=zeus")
    assert twice.param == "X-Tags" and "'project' twice, as 'atlas' and 'zeus'" in twice.message
    same = call(policy(), x_department_id="SALES", x_tags="project=atlas, project=atlas")
    assert same.tags == {"project": "atlas"}


def test_a_team_must_exist_in_the_department() -> None:
    error = refused(policy(), x_department_id="SUPPORT", x_team_id="NIGHT-SHIFT")
    assert error.code == "unknown_team" and error.param == "X-Team-ID"
    assert "Unknown team 'NIGHT-SHIFT' in department SUPPORT" in error.message
    assert "TIER1-DESK, TIER2" in error.message
    no_teams = refused(policy(), x_department_id="SALES", x_team_id="ANY")
    assert no_teams.code == "unknown_team" and "it has no teams" in no_teams.message


def test_a_key_bound_to_a_team_the_policy_dropped_is_refused() -> None:
    key = KeyIdentity("key_1", department="SUPPORT", team="OLD-DESK")
    error = refused(policy(), key)
    assert error.code == "unknown_team" and "bound to team 'OLD-DESK'" in error.message
    assert call(policy(), KeyIdentity("key_2", "SUPPORT", "TIER2")).caller.team == "TIER2"


def test_team_optional_by_default() -> None:
    who = call(policy(), x_department_id="SUPPORT")
    assert who.caller.team is None


def test_team_required_where_teams_have_budgets() -> None:
    strict = policy("required")
    error = refused(strict, x_department_id="SUPPORT")
    assert error.code == "team_required" and "X-Team-ID" in error.message and "TIER1-DESK" in error.message
    assert "TIER2" not in error.message  # a team without budgets is not what the rule protects
    assert call(strict, x_department_id="SUPPORT", x_team_id="TIER2").caller.team == "TIER2"
    assert call(strict, KeyIdentity("key_3", "SUPPORT", "TIER1-DESK")).caller.team == "TIER1-DESK"
    # departments whose teams have no budgets, or that have no teams, need none
    assert call(strict, x_department_id="RESEARCH").caller.team is None
    assert call(strict, x_department_id="SALES").caller.team is None


def test_the_team_rule_is_validated() -> None:
    with pytest.raises(errors.PolicyError) as info:
        policy("always")
    assert info.value.problems == ["attribution.team: must be 'required' or 'optional' (got 'always') (line 3)"]


def test_new_user_ids_do_not_fill_the_plan_cache() -> None:
    """Within the bounds, a stream of distinct users costs nothing where no per-user rule applies,
    and the plans stay those ``plan_for`` gives."""
    p = parse_policy(dedent(POLICY).replace("TEAM_RULE", "optional")
                     + "  PER-USER: {per_user: {budgets: [{limit: 5, period: daily, action: reject}]}}\n")
    planner = Planner(p)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    for index in range(1000):
        caller = call(p, x_department_id="SUPPORT", x_user_id=f"user-{index}").caller
        assert planner.plan(caller, now, now.timestamp()) == plan_for(p, caller, now)
    assert len(planner._plans) == 1
    for index in range(10):
        caller = call(p, x_department_id="PER-USER", x_user_id=f"user-{index}").caller
        plan = planner.plan(caller, now, now.timestamp())
        assert plan.budgets[-1].scope.id == f"user:PER-USER/user-{index}"
    assert len(planner._plans) == 11


async def test_a_key_the_directory_no_longer_knows_is_refused_at_its_next_call() -> None:
    # The directory remembers the hashes of the secrets it has seen; a revoked key, gone from the
    # set it re-reads, must still be refused at once, and a key added must be taken at once.
    secret, other = "cw-" + "a" * 43, "cw-" + "b" * 43
    known = {hash_secret(secret): KeyIdentity("key_a", "SALES")}

    async def load() -> dict[str, KeyIdentity]:
        return dict(known)

    keys = KeyDirectory(load)
    await keys.start()
    try:
        for _ in range(2):  # the second time from the remembered hash
            assert keys.authenticate({"authorization": f"Bearer {secret}"}).id == "key_a"
        with pytest.raises(errors.AuthenticationFailed):
            keys.authenticate({"authorization": f"Bearer {other}"})
        known = {hash_secret(other): KeyIdentity("key_b", "SALES")}  # revoked one, created the other
        await keys.stop()  # and start again: it re-reads the keys, as its refresh does every few seconds
        await keys.start()
        with pytest.raises(errors.AuthenticationFailed):
            keys.authenticate({"authorization": f"Bearer {secret}"})
        assert keys.authenticate({"x-api-key": other}).id == "key_b"
    finally:
        await keys.stop()
