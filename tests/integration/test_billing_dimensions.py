"""Every billing dimension a provider reports is charged as it bills it, through the gateway, and
recorded on the event by token type (SPEC §9). Prices: claude-sonnet-4-6 at $3 input, $0.30
cache read, $3.75 5-minute and $6 1-hour cache write, $15 output per 1M tokens
(https://www.anthropic.com/pricing, as of the catalog's date)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import anthropic
import openai

from gateway_fixtures import Gateway, start_gateway

M = Decimal(10**6)
LONG_SYSTEM = "You are a careful assistant for the finance team. " * 300  # well above 1,024 tokens


def an(gateway: Gateway) -> anthropic.Anthropic:
    return gateway.track(anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys["SALES"], max_retries=0))


def event_of(gateway: Gateway, request_id: str):  # type: ignore[no-untyped-def]
    found = gateway.ledger_query(lambda ledger: ledger.list_events(limit=100))
    return next(e for e in found if e.id == request_id)


def test_anthropic_one_hour_cache_write_then_read_is_charged_as_billed(gateway: Gateway) -> None:
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    costs = []
    for question in ("First question?", "Second question?"):
        raw = an(gateway).messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=100, system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": question}])
        usage = raw.parse().usage
        write_1h = usage.cache_creation.ephemeral_1h_input_tokens if usage.cache_creation else 0
        read = usage.cache_read_input_tokens or 0
        expected = (usage.input_tokens * Decimal(3) + write_1h * Decimal(6) + read * Decimal("0.30")
                    + usage.output_tokens * Decimal(15)) / M
        assert Decimal(raw.headers["x-costwarden-cost-usd"]) == expected
        event = event_of(gateway, raw.headers["x-request-id"])
        assert (event.cache_write_1h_tokens, event.cached_input_tokens) == (write_1h, read)
        assert event.input_tokens == usage.input_tokens + write_1h + read
        assert event.model_sent == "claude-sonnet-4-6"
        costs.append((write_1h, read))
    (first_write, first_read), (second_write, second_read) = costs
    assert first_write > 1024 and first_read == 0  # written once, at 2x the input price...
    assert second_write == 0 and second_read == first_write  # ...then read at a tenth of it


def test_reasoning_and_service_tier_are_recorded(gateway: Gateway) -> None:
    client = gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.keys["SALES"], max_retries=0))
    raw = client.chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini-2024-07-18", service_tier="flex", max_tokens=50,
        messages=[{"role": "user", "content": "hello"}])
    reply = raw.parse()
    event = event_of(gateway, raw.headers["x-request-id"])
    assert event.model_sent == "openai/gpt-4o-mini-2024-07-18" and event.model_requested == "gpt-4o-mini"
    assert event.service_tier == (reply.service_tier or "")
    assert reply.usage is not None and event.output_tokens == reply.usage.completion_tokens


CAPPED = """
version: 1
upstreams:
  openai:    {type: openai,    base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY}
  anthropic: {type: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY}
departments:
  SALES: {}
  MARKETING: {}
  ENGINEERING: {}
  SUPPORT: {teams: {TIER1-DESK: {}}}
  HR:
    budgets: [{limit: 0.10, period: monthly, action: reject}]
"""


def test_a_hard_budget_holds_when_input_is_billed_as_one_hour_cache_writes(tmp_path: Path, mock_url: str) -> None:
    """Each call writes a new 1-hour cache (2x the input price): admission prices its worst case
    so, and the settled spend stays under the limit (SPEC §3 invariant 1)."""
    running = start_gateway(tmp_path, mock_url, CAPPED)
    gateway = next(running)
    try:
        client = gateway.track(anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys["HR"], max_retries=0))

        def one(i: int) -> int:
            system = [{"type": "text", "text": f"Case {i}. " + LONG_SYSTEM,
                       "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
            try:
                client.messages.create(model="claude-sonnet-4-6", max_tokens=50, system=system,  # type: ignore[arg-type]
                                       messages=[{"role": "user", "content": "hi"}])
            except anthropic.RateLimitError:
                return 0
            return 1

        with ThreadPoolExecutor(8) as pool:
            served = sum(pool.map(one, range(24)))
        found = gateway.ledger_query(lambda ledger: ledger.list_events(limit=100))
        spent = sum(e.cost_nanos for e in found)
        writes = sum(e.cache_write_1h_tokens for e in found)
        assert served == len(found) > 0 and writes > 0
        assert spent <= 100_000_000  # $0.10
    finally:
        running.close()
