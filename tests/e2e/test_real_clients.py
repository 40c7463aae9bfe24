"""Real client libraries pointed at the gateway by base URL alone: the official SDKs with tools,
JSON mode, n > 1 and images by URL; LangChain (OpenAI and Anthropic), invoke and stream; LiteLLM
as a client; and a Claude-Code-shaped Messages request. Each call is checked for its status, its
cost (header or usage) and its ledger row."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from pydantic import BaseModel

from gateway_fixtures import Gateway, start_gateway

# LiteLLM reads its price map from the internet at import unless told to use the bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path_factory.mktemp("clients"), mock_url)


def events_by_id(gateway: Gateway) -> dict[str, Any]:
    found = gateway.ledger_query(lambda ledger: ledger.list_events(limit=10_000))
    return {event.id: event for event in found}


def recorded(gateway: Gateway, request_id: str) -> Any:
    event = events_by_id(gateway)[request_id]
    assert event.cost_nanos > 0 and event.status == "ok"
    return event


def oa(gateway: Gateway, department: str = "SALES") -> openai.OpenAI:
    return gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.keys[department],
                                       max_retries=0))


def an(gateway: Gateway) -> anthropic.Anthropic:
    return gateway.track(anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys["SALES"], max_retries=0))


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}


def test_openai_sdk_tools(gw: Gateway) -> None:
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", tools=[WEATHER], messages=[{"role": "user", "content": "Weather in Paris?"}])
    reply = raw.parse()
    [call] = reply.choices[0].message.tool_calls or []
    arguments = json.loads(call.function.arguments)  # type: ignore[union-attr]
    assert call.function.name == "get_weather" and set(arguments) >= {"city", "unit"}  # type: ignore[union-attr]
    event = recorded(gw, raw.headers["x-request-id"])
    assert Decimal(raw.headers["x-costwarden-cost-usd"]) * 10**9 == event.cost_nanos


def test_openai_sdk_json_mode_and_n(gw: Gateway) -> None:
    raw = oa(gw).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", n=2, max_tokens=200, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Answer in JSON"}])
    reply = raw.parse()
    assert len(reply.choices) == 2
    for choice in reply.choices:
        assert isinstance(json.loads(choice.message.content or ""), dict)
    event = recorded(gw, raw.headers["x-request-id"])
    assert reply.usage is not None and event.output_tokens == reply.usage.completion_tokens


def test_openai_sdk_image_by_url(gw: Gateway) -> None:
    # An image by URL is input the gateway cannot see: it is reserved at the model's context window,
    # more than SALES's 20,000 tokens a minute, so a department without a tpm limit sends it.
    raw = oa(gw, "MARKETING").chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    reply = raw.parse()
    event = recorded(gw, raw.headers["x-request-id"])
    assert reply.usage is not None and event.input_tokens == reply.usage.prompt_tokens


class Forecast(BaseModel):
    city: str
    degrees: int


def test_langchain_openai_invoke_stream_and_structured_output(gw: Gateway) -> None:
    from langchain_openai import ChatOpenAI

    before = len(events_by_id(gw))
    chat = ChatOpenAI(base_url=f"{gw.url}/v1", api_key=gw.keys["SALES"], model="gpt-4o-mini",  # type: ignore[arg-type]
                      max_retries=0)
    assert chat.invoke("Say hello").content
    assert "".join(str(chunk.content) for chunk in chat.stream("Stream hello"))
    forecast = chat.with_structured_output(Forecast).invoke("Weather in Oslo as JSON")
    assert isinstance(forecast, Forecast)
    assert len(events_by_id(gw)) == before + 3


def test_langchain_anthropic_invoke_and_stream(gw: Gateway) -> None:
    from langchain_anthropic import ChatAnthropic

    before = len(events_by_id(gw))
    chat = ChatAnthropic(base_url=gw.url, api_key=gw.keys["SALES"], model="claude-haiku-4-5",  # type: ignore[arg-type, call-arg]
                         max_retries=0, max_tokens=200)  # type: ignore[call-arg]
    assert chat.invoke("Say hello").content
    assert "".join(str(chunk.content) for chunk in chat.stream("Stream hello"))
    assert len(events_by_id(gw)) == before + 2


def test_litellm_as_a_client(gw: Gateway) -> None:
    import litellm

    reply = litellm.completion(model="openai/gpt-4o-mini", api_base=f"{gw.url}/v1", api_key=gw.keys["SALES"],
                               messages=[{"role": "user", "content": "hello from litellm"}], max_retries=0)
    # LiteLLM keeps the SDK client it made in a process-wide cache, open until the interpreter exits
    for client in litellm.in_memory_llm_clients_cache.cache_dict.values():
        if isinstance(client, openai.OpenAI):
            gw.track(client)
    usage = reply.usage  # type: ignore[union-attr]
    assert usage.completion_tokens > 0
    [event] = [e for e in events_by_id(gw).values() if e.input_tokens == usage.prompt_tokens
               and e.output_tokens == usage.completion_tokens and e.model_served == "gpt-4o-mini"][-1:]
    assert event.cost_nanos > 0


def test_claude_code_shaped_messages_request(gw: Gateway) -> None:
    client = an(gw)
    system = [{"type": "text", "text": "You are a coding agent. " * 400, "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "read_file", "description": "Read a file",
              "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}]
    messages = [{"role": "user", "content": "Open README.md"}]
    counted = client.messages.count_tokens(model="claude-sonnet-4-6", system=system, tools=tools,  # type: ignore[arg-type]
                                           messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens > 0
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=2000, system=system, tools=tools, messages=messages,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14"})
    reply = raw.parse()
    kinds = [block.type for block in reply.content]
    assert "thinking" in kinds and "tool_use" in kinds
    event = recorded(gw, raw.headers["x-request-id"])
    assert event.output_tokens == reply.usage.output_tokens
    assert len([e for e in events_by_id(gw).values() if e.endpoint == "/v1/messages/count_tokens"]) == 0


def test_count_tokens_is_not_charged(gw: Gateway) -> None:
    before = events_by_id(gw)
    counted = an(gw).messages.count_tokens(model="claude-haiku-4-5",
                                           messages=[{"role": "user", "content": "how many tokens?"}])
    assert counted.input_tokens > 0
    assert events_by_id(gw).keys() == before.keys()

