"""The HTTP edge answers every path in the API's error shape, and a policy stored by one gateway
reaches another on the same ledger within seconds (SPEC §10), one generation per call."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from gateway_fixtures import Gateway, policy_text, start_gateway

ADMIN = "admin-secret-for-tests"


@pytest.mark.parametrize(("method", "path", "status", "anthropic"), [
    ("POST", "/v1/nope", 404, False),
    ("GET", "/v1/chat/completions", 405, False),
    ("GET", "/v1/messages", 405, True),
    ("GET", "/nothing/here", 404, False),
])
def test_unknown_paths_and_methods_answer_in_the_api_shape(gateway: Gateway, method: str, path: str,
                                                          status: int, anthropic: bool) -> None:
    reply = httpx.request(method, gateway.url + path, headers={"Authorization": f"Bearer {gateway.keys['SALES']}"})
    assert reply.status_code == status
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    error = body["error"]
    assert error["message"]
    if anthropic:
        assert body["type"] == "error" and error["type"] == "not_found_error" if status == 404 else True
    else:
        assert error["type"] == "invalid_request_error"


def test_a_policy_reloaded_on_one_gateway_reaches_another_within_seconds(tmp_path: Path, mock_url: str) -> None:
    db_url = f"sqlite:///{tmp_path}/shared.db"
    first = start_gateway(tmp_path / "one", mock_url, db_url=db_url, admin_token=ADMIN)
    one = next(first)
    try:
        second = start_gateway(tmp_path / "two", mock_url, db_url=db_url, admin_token=ADMIN)
        two = next(second)
        try:
            headers = {"Authorization": f"Bearer {ADMIN}"}
            before = httpx.get(f"{two.url}/admin/v1/policy", headers=headers).json()
            stricter = policy_text(mock_url, """
version: 1
upstreams:
  openai:    {type: openai,    base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  anthropic: {type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
departments:
  SALES: {tiers: [1]}
  MARKETING: {}
  ENGINEERING: {}
  HR: {}
  SUPPORT: {teams: {TIER1-DESK: {}}}
""")
            reloaded = httpx.post(f"{one.url}/admin/v1/policy/reload", headers=headers,
                                  content=stricter.encode(), timeout=30)
            assert reloaded.status_code == 200, reloaded.text
            deadline = time.monotonic() + 5.0
            version = before["version"]
            while time.monotonic() < deadline and version == before["version"]:
                version = httpx.get(f"{two.url}/admin/v1/policy", headers=headers).json()["version"]
                time.sleep(0.1)  # polling interval, not synchronization
            assert version == reloaded.json()["version"]
            call = httpx.post(f"{two.url}/v1/chat/completions", timeout=30,
                              headers={"Authorization": f"Bearer {two.keys['SALES']}"},
                              json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
            assert call.status_code in (200, 403), call.text
            assert call.status_code == 403 or call.headers.get("x-costwarden-downgraded-from") == "gpt-4o"
        finally:
            second.close()
    finally:
        first.close()
