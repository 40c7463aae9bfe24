"""Rate-limit hints are true (SPEC §9), through a real gateway.

After a burst that fills a 10-requests-per-minute window, a client that waits exactly the
``retry-after`` it was given gets in on its next try, and one that tries a second earlier is
refused. The window is a real 60-second sliding window, so the main test waits about a minute,
once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from gateway_fixtures import UPSTREAMS, Gateway, start_gateway

POLICY = UPSTREAMS + """
departments:
  SALES:
    limits: {rpm: 10}
  MARKETING:
    limits: {rpm: 2, tpm: 100000}
  HR: {}
  ENGINEERING: {}
  SUPPORT: {teams: {TIER1-DESK: {}}}
"""
CHAT = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("hints"), mock_url, POLICY)


def next_second(after: float = 0.02) -> None:
    """Wait until just after the wall clock's next whole second, so the refusals below fall early in
    their second: a try one second before ``retry-after`` then lands well before the room returns."""
    time.sleep(1 - time.time() % 1 + after)


def test_waiting_exactly_retry_after_gets_in_and_a_second_less_does_not(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.keys['SALES']}"},
                      timeout=30) as client:
        next_second()
        first = client.post("/v1/chat/completions", json=CHAT)
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "10"
        assert first.headers["x-ratelimit-remaining-requests"] == "9"
        assert first.headers["x-ratelimit-reset-requests"] == "60s"  # this call leaves the window in a minute
        for _ in range(9):
            assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

        next_second()
        refused = client.post("/v1/chat/completions", json=CHAT)
        seen = time.monotonic()
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        wait = int(refused.headers["retry-after"])
        assert 45 <= wait <= 59  # the burst's first call leaves 60 s after it was made, a second or more ago
        assert refused.headers["x-ratelimit-limit-requests"] == "10"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert int(refused.headers["x-ratelimit-reset-requests"].removesuffix("s")) >= wait  # the last call leaves
        again = client.post("/v1/chat/completions", json=CHAT)
        assert again.status_code == 429 and wait - 1 <= int(again.headers["retry-after"]) <= wait

        time.sleep(max(0.0, seen + wait - 1 - time.monotonic()))
        early = client.post("/v1/chat/completions", json=CHAT)
        assert early.status_code == 429, "a try a second before retry-after got in"
        assert early.headers["retry-after"] == "1"

        time.sleep(max(0.0, seen + wait - time.monotonic()))
        on_time = client.post("/v1/chat/completions", json=CHAT)
        # in: so none of the three refusals took room in the window
        assert on_time.status_code == 200, on_time.text


def test_messages_answers_carry_anthropic_rate_limit_names(gateway: Gateway) -> None:
    headers = {"x-api-key": gateway.keys["MARKETING"], "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        ok = client.post("/v1/messages", json=MESSAGES)
        assert ok.status_code == 200, ok.text
        assert ok.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert ok.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert ok.headers["anthropic-ratelimit-tokens-limit"] == "100000"
        assert int(ok.headers["anthropic-ratelimit-tokens-remaining"]) < 100_000
        reset = datetime.strptime(ok.headers["anthropic-ratelimit-requests-reset"], "%Y-%m-%dT%H:%M:%SZ")
        assert 58 <= reset.replace(tzinfo=UTC).timestamp() - time.time() <= 60
        assert ok.headers["x-ratelimit-limit-requests"] == "2"  # OpenAI's names stay
        assert client.post("/v1/messages", json=MESSAGES).status_code == 200
        refused = client.post("/v1/messages", json=MESSAGES)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
        assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "anthropic-ratelimit-tokens-reset" in refused.headers
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.keys['MARKETING']}"},
                      timeout=30) as client:
        chat = client.post("/v1/chat/completions", json=CHAT)
        assert chat.status_code == 429
        assert "x-ratelimit-remaining-requests" in chat.headers
        assert not any(name.startswith("anthropic-") for name in chat.headers)  # only on /v1/messages
