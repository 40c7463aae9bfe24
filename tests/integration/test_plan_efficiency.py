"""Plans' efficiency features through a real gateway, with the official SDKs, to the mock:
prompt caching breakpoints and cache keys, thin context, and what the event records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from costwarden.ledger import Ledger
from costwarden.providers import ENDPOINTS
from costwarden.providers.trimming import thin
from gateway_fixtures import UPSTREAMS, Gateway, start_gateway

POLICY = UPSTREAMS + """
departments:
  PRODUCT: {}
plans:
  silver: {priority: standard, rate_card: {markup_pct: 20}}
  gold:
    priority: high
    efficiency: {prompt_caching: auto, thin_context: {max_input_tokens: 4000}}
    rate_card: {markup_pct: 35}
customers:
  ACME:   {name: Acme Corp, plan: gold,   department: PRODUCT}
  GLOBEX: {name: Globex,    plan: silver, department: PRODUCT}
"""
SYSTEM = "You answer questions about Acme's invoices, carefully and briefly. " * 100  # ~1,700 tokens
FILLER = "Here is some more context about the account and its history. " * 20


@pytest.fixture
def plans_gateway(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    db_url = f"sqlite:///{tmp_path}/ledger.db"

    async def customer_keys() -> dict[str, str]:
        ledger = await Ledger.open(db_url)
        try:
            return {customer: (await ledger.create_key("PRODUCT", customer=customer))[1]
                    for customer in ("ACME", "GLOBEX")}
        finally:
            await ledger.close()

    keys = asyncio.run(customer_keys())
    httpx.post(f"{mock_url}/mock/reset")
    for running in start_gateway(tmp_path, mock_url, POLICY, db_url=db_url):
        running.keys.update(keys)
        yield running


def client(gateway: Gateway, customer: str) -> anthropic.Anthropic:
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys[customer])
    gateway.track(sdk)
    return sdk


def turns(count: int, question: str = "And the next one?") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for n in range(count):
        messages += [{"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": f"answer {n}"}]
    return [*messages, {"role": "user", "content": question}]


def events(gateway: Gateway) -> list[Any]:
    return gateway.ledger_query(lambda ledger: ledger.list_events(limit=100))  # type: ignore[no-any-return]


def test_gold_calls_read_the_cache_silver_calls_do_not(plans_gateway: Gateway) -> None:
    usages = {}
    for customer in ("ACME", "GLOBEX"):
        sdk = client(plans_gateway, customer)
        for count in (1, 2, 3):
            reply = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=20, system=SYSTEM,
                                        messages=turns(count))  # type: ignore[arg-type]
        usages[customer] = reply.usage
    gold, silver = usages["ACME"], usages["GLOBEX"]
    assert (gold.cache_read_input_tokens or 0) > 1500 and (gold.cache_creation_input_tokens or 0) > 0
    assert not silver.cache_read_input_tokens and not silver.cache_creation_input_tokens
    recorded = {event.customer for event in events(plans_gateway)}
    assert recorded == {"ACME", "GLOBEX"}


def test_a_client_cache_control_is_forwarded_as_it_is(plans_gateway: Gateway) -> None:
    sdk = client(plans_gateway, "ACME")
    system = [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    for _ in range(2):
        reply = sdk.messages.create(model="claude-sonnet-4-6", max_tokens=20, system=system,  # type: ignore[arg-type]
                                    messages=turns(2))  # type: ignore[arg-type]
    # Only the client's 1h breakpoint: the first call wrote it for 1h, nothing was written at 5m.
    assert reply.usage.cache_read_input_tokens and reply.usage.cache_read_input_tokens > 1500
    event = events(plans_gateway)[-1]
    assert event.cache_write_5m_tokens == 0 and event.cache_write_1h_tokens > 0


def test_openai_calls_get_the_customer_as_cache_key(plans_gateway: Gateway) -> None:
    def call(customer: str, cache_key: str | None = None) -> int:
        sdk = plans_gateway.track(openai.OpenAI(base_url=f"{plans_gateway.url}/v1",
                                                api_key=plans_gateway.keys[customer]))
        extra = {"prompt_cache_key": cache_key} if cache_key else {}
        reply = sdk.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}], **extra)
        return int(reply.usage.prompt_tokens_details.cached_tokens or 0)

    # The mock keeps separate caches per key: ACME's first call is cold even though GLOBEX (no
    # key) sent the same prompt before, and its second call reads ACME's own cache.
    call("GLOBEX")
    assert call("ACME") == 0
    assert call("ACME") > 1024
    assert call("ACME", cache_key="mine") == 0  # the client's own key is kept


def test_thin_context_trims_the_oldest_turns_and_says_so(plans_gateway: Gateway) -> None:
    sdk = client(plans_gateway, "ACME")
    messages = []
    for n in range(8):
        messages += [{"role": "user", "content": f"{n}: {FILLER}"},
                     {"role": "assistant", "content": [
                         {"type": "tool_use", "id": f"tu_{n}", "name": "lookup", "input": {"n": n}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"tu_{n}",
                                                   "content": FILLER}]},
                     {"role": "assistant", "content": f"done {n}"}]
    messages.append({"role": "user", "content": "summarise"})
    raw = sdk.messages.with_raw_response.create(model="claude-sonnet-4-6", max_tokens=20, system="Be brief.",
                                                messages=messages)  # type: ignore[arg-type]
    removed = int(raw.headers["x-costwarden-context-trimmed"])
    reply = raw.parse()
    sent = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) + (
        reply.usage.cache_creation_input_tokens or 0)
    assert removed > 0 and sent < 4000
    assert events(plans_gateway)[-1].trimmed_tokens == removed
    # Silver is never trimmed.
    raw = client(plans_gateway, "GLOBEX").messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=20, system="Be brief.", messages=messages)  # type: ignore[arg-type]
    assert "x-costwarden-context-trimmed" not in raw.headers


def test_a_request_that_cannot_fit_is_refused_naming_the_plan(plans_gateway: Gateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        client(plans_gateway, "ACME").messages.create(model="claude-sonnet-4-6", max_tokens=20,
                                                     messages=[{"role": "user", "content": FILLER * 20}])
    assert "context_length_exceeded" in str(refused.value.body) and "'gold'" in str(refused.value.body)
    [rejection] = plans_gateway.ledger_query(lambda ledger: ledger.list_rejections(limit=10))
    assert rejection.code == "context_length_exceeded"


def test_trimmed_requests_are_accepted_by_the_sdks_and_the_mock(mock_url: str) -> None:
    """A trimmed body goes through each SDK's typed call, unchanged, to the mock."""
    conversation: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for n in range(6):
        conversation += [{"role": "user", "content": f"{n}: {FILLER}"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": f"c{n}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                         {"role": "tool", "tool_call_id": f"c{n}", "content": FILLER},
                         {"role": "assistant", "content": "ok"}]
    conversation.append({"role": "user", "content": "last"})
    chat = ENDPOINTS["/v1/chat/completions"]
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": conversation}
    done = thin(body, anthropic=False, limit=1500, plan="gold",
                measure=lambda b: chat.estimate(b, model="gpt-4o-mini").tokens)
    assert done.removed_tokens > 0
    with openai.OpenAI(base_url=f"{mock_url}/v1", api_key="sk-test") as sdk:
        reply = sdk.chat.completions.create(**done.body)
    assert reply.usage is not None and reply.usage.prompt_tokens < 1500

    messages: list[dict[str, Any]] = []
    for n in range(6):
        messages += [{"role": "user", "content": f"{n}: {FILLER}"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{n}", "name": "f", "input": {}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": FILLER}]},
                     {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": "last"})
    endpoint = ENDPOINTS["/v1/messages"]
    body = {"model": "claude-sonnet-4-6", "max_tokens": 10, "system": "Be brief.", "messages": messages}
    done = thin(body, anthropic=True, limit=1500, plan="gold", measure=lambda b: endpoint.estimate(b).tokens)
    kept = done.body["messages"]
    assert done.removed_tokens > 0 and kept[0]["role"] == "user" and isinstance(kept[0]["content"], str)
    with anthropic.Anthropic(base_url=mock_url, api_key="sk-ant-test") as sdk:
        answer = sdk.messages.create(**done.body)
    assert answer.usage.input_tokens < 1500


def test_a_call_over_the_upstream_capacity_gets_429_with_retry_after(tmp_path: Path, mock_url: str) -> None:
    policy = POLICY.replace("api_key_env: ANTHROPIC_API_KEY}", "api_key_env: ANTHROPIC_API_KEY, tpm: 3000}") \
        .replace("silver: {priority: standard,", "silver: {priority: standard, queue_s: 0.5,")
    db_url = f"sqlite:///{tmp_path}/ledger.db"

    async def key() -> str:
        ledger = await Ledger.open(db_url)
        try:
            return (await ledger.create_key("PRODUCT", customer="GLOBEX"))[1]
        finally:
            await ledger.close()

    secret = asyncio.run(key())
    for running in start_gateway(tmp_path, mock_url, policy, db_url=db_url):
        sdk = running.track(anthropic.Anthropic(base_url=running.url, api_key=secret, max_retries=0))
        sdk.messages.create(model="claude-sonnet-4-6", max_tokens=2500, messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(anthropic.RateLimitError) as refused:
            sdk.messages.create(model="claude-sonnet-4-6", max_tokens=1000, messages=[{"role": "user", "content": "hi"}])
        assert "capacity_exceeded" in str(refused.value.body)
        assert 50 <= int(refused.value.response.headers["retry-after"]) <= 61
        # the refused call holds nothing: the department's usage counts the first call only
        [event] = events(running)
        assert event.output_tokens == 16
