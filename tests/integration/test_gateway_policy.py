"""The SPEC example policy's actions, seen through HTTP headers and the ledger."""

from __future__ import annotations

from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, start_gateway


def call(gw: Gateway, key: str, model: str, text: str = "hi", path: str = "/v1/chat/completions",
         **extra: object) -> httpx.Response:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(f"{gw.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_engineering_is_downgraded_after_its_first_budget(gateway: Gateway) -> None:
    first = call(gateway, gateway.keys["ENGINEERING"], "gpt-4o")
    assert first.status_code == 200 and "x-costwarden-downgraded-from" not in first.headers
    # one call whose upstream reports 2 billion input tokens: $5,000 of gpt-4o input
    huge = call(gateway, gateway.keys["ENGINEERING"], "gpt-4o", "#mock input_tokens=2000000000 output_tokens=1")
    assert huge.status_code == 200
    after = call(gateway, gateway.keys["ENGINEERING-AGENT"], "gpt-4o", max_tokens=100)
    assert after.status_code == 200
    assert after.headers["x-costwarden-downgraded-from"] == "gpt-4o"
    assert after.json()["model"].startswith("gpt-4o-mini")
    events = gateway.ledger_query(lambda ledger: ledger.list_events(limit=10))
    overrun = next(e for e in events if e.id == huge.headers["x-request-id"])
    assert overrun.overrun_tokens > 0  # more input reported than estimated is recorded, not hidden
    served = next(e for e in events if e.id == after.headers["x-request-id"])
    assert (served.model_requested, served.model_served, served.decision) == ("gpt-4o", "gpt-4o-mini", "downgrade")
    # the key that spent $5,000 in an hour is now stopped by the per-key breaker
    breaker = call(gateway, gateway.keys["ENGINEERING"], "gpt-4o-mini")
    assert breaker.status_code == 429 and breaker.json()["error"]["code"] == "budget_exceeded"
    assert "Key " in breaker.json()["error"]["message"] and "rolling 1h" in breaker.json()["error"]["message"]


def test_support_gets_tier_1_models_only(gateway: Gateway) -> None:
    reply = call(gateway, gateway.keys["SUPPORT"], "gpt-4o")
    assert reply.status_code == 200 and reply.headers["x-costwarden-downgraded-from"] == "gpt-4o"
    claude = httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway.keys["SUPPORT"]}, timeout=30,
                        json={"model": "claude-opus-4-1", "max_tokens": 50, "messages": [{"role": "user", "content": "x"}]})
    assert claude.status_code == 200 and claude.json()["model"].startswith("claude-haiku-4-5")


def test_hr_output_is_clamped_near_its_limit(gateway: Gateway) -> None:
    # $199.999... spent via one reported-usage call, then a call whose worst case no longer fits
    spend = call(gateway, gateway.keys["HR"], "gpt-4o-mini", "#mock input_tokens=1333326666 output_tokens=1",
                 max_tokens=1)
    assert spend.status_code == 200
    clamped = call(gateway, gateway.keys["HR"], "gpt-4o-mini", max_tokens=16_000)
    assert clamped.status_code == 200, clamped.text
    bound = int(clamped.headers["x-costwarden-max-tokens-clamped"])
    assert 64 <= bound < 16_000
    refused = call(gateway, gateway.keys["HR"], "gpt-4o", max_tokens=16_000, n=100)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith("Department HR has spent $")
    assert refused.headers["x-should-retry"] == "false"


def test_rate_limit_headers(gateway: Gateway) -> None:
    reply = call(gateway, gateway.keys["SALES"], "gpt-4o-mini", max_tokens=10)
    assert reply.headers["x-ratelimit-limit-requests"] == "60"
    assert reply.headers["x-ratelimit-remaining-requests"] == "59"
    assert reply.headers["x-ratelimit-limit-tokens"] == "20000"
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) < 20000
    assert reply.headers["x-ratelimit-reset-requests"].endswith("s")
    remaining = reply.headers["x-costwarden-budget-remaining-usd"]
    assert remaining.startswith("19999.99")  # only the organization's $20,000 budget applies to SALES


OPEN_POLICY = UPSTREAMS + "attribution: {require: false}\ndepartments:\n  HR: {}\n" + PLAIN_DEPARTMENTS


def test_calls_without_a_department_are_unattributed_when_allowed(tmp_path: Path, mock_url: str) -> None:
    with contextmanager(start_gateway)(tmp_path, mock_url, OPEN_POLICY) as gw:
        reply = call(gw, gw.unbound, "gpt-4o-mini")
        assert reply.status_code == 200
        assert reply.headers["x-costwarden-department"] == "UNATTRIBUTED"
        named = httpx.post(f"{gw.url}/v1/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {gw.unbound}", "X-Department-ID": "hr"},
                           json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
        assert named.headers["x-costwarden-department"] == "HR"


SOFT_POLICY = UPSTREAMS + """
departments:
  MARKETING:
    budgets: [{limit: 0.01, period: monthly, action: alert}]
  HR: {}
""" + PLAIN_DEPARTMENTS.replace("  MARKETING: {}\n", "")


def test_budget_remaining_is_what_the_tightest_budget_has_left_after_the_call(tmp_path: Path, mock_url: str) -> None:
    for gateway in start_gateway(tmp_path, mock_url, SOFT_POLICY):
        key = gateway.keys["MARKETING"]
        first = call(gateway, key, "gpt-4o-mini", max_tokens=1000)
        assert first.status_code == 200
        cost = Decimal(first.headers["x-costwarden-cost-usd"])
        assert Decimal(first.headers["x-costwarden-budget-remaining-usd"]) == Decimal("0.01") - cost
        # a soft budget never blocks: a call whose worst case overruns its room is served, and
        # once the budget is spent there is nothing left, whatever the call's estimate was
        over = call(gateway, key, "gpt-4o-mini", "#mock input_tokens=100000", max_tokens=1000)
        assert over.status_code == 200 and over.headers["x-costwarden-budget-remaining-usd"] == "0"
        after = call(gateway, key, "gpt-4o-mini", max_tokens=1000)
        assert after.status_code == 200 and after.headers["x-costwarden-budget-remaining-usd"] == "0"


LIMITED_POLICY = UPSTREAMS + """
departments:
  HR:
    limits: {rpm: 5, tpm: 100000}
    budgets: [{limit: 0.0002, period: monthly, action: reject}]
  SALES:
    limits: {tpm: 100000}
""" + PLAIN_DEPARTMENTS.replace("  SALES: {}\n", "")


def test_a_budget_refusal_carries_the_rate_limit_headers_without_counting_itself(tmp_path: Path,
                                                                                   mock_url: str) -> None:
    for gateway in start_gateway(tmp_path, mock_url, LIMITED_POLICY):
        key = gateway.keys["HR"]
        admitted = call(gateway, key, "gpt-4o", max_tokens=10)
        assert admitted.status_code == 200 and admitted.headers["x-ratelimit-remaining-requests"] == "4"
        used_tokens = 100_000 - int(admitted.headers["x-ratelimit-remaining-tokens"])
        for reply in (call(gateway, key, "gpt-4o", max_tokens=1000),
                      call(gateway, key, "claude-opus-4-1", path="/v1/messages", max_tokens=1000)):
            assert reply.status_code == 429 and reply.json()["error"]["code"] == "budget_exceeded"
            assert reply.headers["x-ratelimit-limit-requests"] == "5"
            assert reply.headers["x-ratelimit-remaining-requests"] == "4"  # the refused calls take no room
            assert reply.headers["x-ratelimit-limit-tokens"] == "100000"
            assert 100_000 - int(reply.headers["x-ratelimit-remaining-tokens"]) <= used_tokens
            assert 0 < int(reply.headers["x-ratelimit-reset-requests"].removesuffix("s")) <= 60
        assert reply.headers["anthropic-ratelimit-requests-remaining"] == "4"
        # a call larger than the token limit itself: a 429 no wait cures, so SDKs are told not to retry
        too_big = call(gateway, gateway.keys["SALES"], "gpt-4o-mini", "hello " * 100_000, max_tokens=10)
        assert too_big.status_code == 429 and too_big.json()["error"]["code"] == "rate_limit_exceeded"
        assert too_big.headers["x-should-retry"] == "false" and "retry-after" not in too_big.headers


RESTRICTED_POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.001, period: monthly, action: {restrict_tiers: [1]}}]
""" + PLAIN_DEPARTMENTS


def test_models_lists_only_the_tiers_a_tripped_restriction_still_serves(tmp_path: Path, mock_url: str) -> None:
    for gateway in start_gateway(tmp_path, mock_url, RESTRICTED_POLICY):
        client = gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.keys["HR"], max_retries=0))
        assert {model.tier for model in client.models.list().data} == {1, 2, 3}
        assert client.models.retrieve("gpt-4o").id == "gpt-4o"
        tripped = call(gateway, gateway.keys["HR"], "gpt-4o", max_tokens=1000)  # its worst case does not fit
        assert tripped.status_code == 200 and tripped.headers["x-costwarden-downgraded-from"] == "gpt-4o"
        assert {model.tier for model in client.models.list().data} == {1}
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o")
        assert client.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
