"""Shadow mode through the gateway: a budget or limit with ``enforce: false`` lets the call through,
says what it would have done in ``x-costwarden-shadow``, and records it on the ledger event."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from gateway_fixtures import UPSTREAMS, Gateway, start_gateway

# A gpt-4o-mini call's worst case is far above $0.000001, so each of these budgets is exceeded
# by every call. HR's is only watched; ENGINEERING's is the same budget, enforced.
POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.000001, period: monthly, action: reject, enforce: false}]
  ENGINEERING:
    budgets: [{limit: 0.000001, period: monthly, action: reject}]
  SALES:
    limits: {rpm: 1, enforce: false}
  MARKETING:
    budgets: [{limit: 0.000001, period: monthly, action: reject, enforce: false}]
    per_key:
      budgets: [{limit: 0.000001, period: 1h, action: reject}]
  SUPPORT: {teams: {TIER1-DESK: {}}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("shadow"), mock_url, POLICY)


def call(gw: Gateway, department: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", headers={"Authorization": f"Bearer {gw.keys[department]}"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)


def test_a_shadow_budget_serves_every_call_and_records_what_it_would_have_done(gateway: Gateway) -> None:
    enforced = call(gateway, "ENGINEERING")
    assert enforced.status_code == 429 and enforced.json()["error"]["code"] == "budget_exceeded"
    replies = [call(gateway, "HR") for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert {r.headers["x-costwarden-shadow"] for r in replies} == {"would reject: dept:HR budget 0"}
    events = gateway.ledger_query(lambda ledger: ledger.list_events(limit=20))
    recorded = {e.id: e for e in events}
    for reply in replies:
        event = recorded[reply.headers["x-request-id"]]
        assert event.shadow == ("would reject: dept:HR budget 0",)
        assert event.cost_nanos > 0  # charged as usual
    # the spend now stands above the limit the budget would have held
    assert sum(recorded[r.headers["x-request-id"]].cost_nanos for r in replies) > 1_000


def test_a_shadow_rate_limit_serves_the_call_past_the_limit(gateway: Gateway) -> None:
    first, second = call(gateway, "SALES"), call(gateway, "SALES")
    assert (first.status_code, second.status_code) == (200, 200)
    assert "x-costwarden-shadow" not in first.headers
    assert second.headers["x-costwarden-shadow"] == "would rate-limit: dept:SALES rpm"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    events = gateway.ledger_query(lambda ledger: ledger.list_events(limit=20))
    shadows = {e.id: e.shadow for e in events}
    assert shadows[first.headers["x-request-id"]] == ()
    assert shadows[second.headers["x-request-id"]] == ("would rate-limit: dept:SALES rpm",)


def test_a_refused_call_records_the_shadow_decisions_made_before_the_refusal(gateway: Gateway) -> None:
    refused = call(gateway, "MARKETING")  # the department's budget is watched, the key's enforced
    assert refused.status_code == 429 and "Key " in refused.json()["error"]["message"]
    rejections = gateway.ledger_query(lambda ledger: ledger.list_rejections(limit=20))
    rejection = next(r for r in rejections if r.id == refused.headers["x-request-id"])
    assert rejection.shadow == ("would reject: dept:MARKETING budget 0",)
