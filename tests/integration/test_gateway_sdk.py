"""The official SDKs, unchanged but for base_url and key, through the gateway to the mock."""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

from costwarden.mock_upstream import count_input_tokens
from gateway_fixtures import Gateway


def oa(gateway: Gateway, dept: str = "SALES", **kw: object) -> openai.OpenAI:
    return gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.keys[dept], **kw))  # type: ignore[arg-type]


def an(gateway: Gateway, dept: str = "SALES", **kw: object) -> anthropic.Anthropic:
    return gateway.track(anthropic.Anthropic(base_url=gateway.url, api_key=gateway.keys[dept], **kw))  # type: ignore[arg-type]


def events(gateway: Gateway) -> list:  # type: ignore[type-arg]
    return gateway.ledger_query(lambda ledger: ledger.list_events(limit=1000))  # type: ignore[no-any-return]


def test_chat_completion_is_priced_and_recorded(gateway: Gateway) -> None:
    raw = oa(gateway).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there #mock output_tokens=20"}])
    reply = raw.parse()
    assert reply.usage is not None and reply.usage.completion_tokens == 20
    prompt = reply.usage.prompt_tokens
    expected = Decimal(prompt) * Decimal("0.15") / 10**6 + Decimal(20) * Decimal("0.60") / 10**6
    assert Decimal(raw.headers["x-costwarden-cost-usd"]) == expected
    assert raw.headers["x-costwarden-department"] == "SALES"
    assert raw.headers["x-request-id"].startswith("req_")
    assert "e" not in raw.headers["x-costwarden-cost-usd"].lower()
    [event] = events(gateway)
    assert event.id == raw.headers["x-request-id"]
    assert (event.input_tokens, event.output_tokens, event.department) == (prompt, 20, "SALES")
    assert event.cost_nanos == int(expected * 10**9)


def test_chat_stream_with_usage_carries_cost(gateway: Gateway) -> None:
    stream = oa(gateway).chat.completions.create(
        model="gpt-4o-mini", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "stream please #mock output_tokens=12"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok " * 12
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 12
    cost = Decimal(str(usage.model_extra["cost"]))  # type: ignore[index]
    [event] = events(gateway)
    assert event.output_tokens == 12 and Decimal(event.cost_nanos) / 10**9 == cost


def test_chat_stream_without_usage_hides_the_injected_chunk(gateway: Gateway) -> None:
    chunks = list(oa(gateway).chat.completions.create(
        model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi #mock output_tokens=5"}]))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    [event] = events(gateway)
    assert event.output_tokens == 5 and event.cost_nanos > 0  # still metered


def test_completions_embeddings_responses_and_models(gateway: Gateway) -> None:
    client = oa(gateway)
    done = client.completions.create(model="gpt-4o-mini", prompt="Say this is a test", max_tokens=7)
    assert done.usage is not None and done.usage.completion_tokens == 7
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens == 2
    resp = client.responses.create(model="gpt-4o-mini", input="hello #mock output_tokens=3")
    assert resp.usage is not None and resp.usage.output_tokens == 3
    streamed = list(client.responses.create(model="gpt-4o-mini", input="hello #mock output_tokens=4", stream=True))
    assert streamed[-1].type == "response.completed"
    ids = {m.id for m in client.models.list()}
    assert "gpt-4o" in ids and "claude-opus-4-1" in ids
    support_ids = {m.id for m in oa(gateway, "SUPPORT").models.list()}
    assert "gpt-4o" not in support_ids and "gpt-4o-mini" in support_ids
    recorded = events(gateway)
    assert len(recorded) == 4
    assert {e.endpoint for e in recorded} == {"/v1/completions", "/v1/embeddings", "/v1/responses"}


def test_anthropic_messages_plain_and_streaming(gateway: Gateway) -> None:
    client = an(gateway)
    msg = client.messages.create(model="claude-haiku-4-5", max_tokens=50,
                                 messages=[{"role": "user", "content": "hi #mock output_tokens=9 cached=4"}])
    assert msg.usage.output_tokens == 9 and msg.usage.cache_read_input_tokens == 4
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=50,
                                messages=[{"role": "user", "content": "stream #mock output_tokens=6"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok " * 6 and final.usage.output_tokens == 6
    plain, streamed = sorted(events(gateway), key=lambda e: e.stream)
    # Anthropic's input_tokens excludes cache reads; the ledger counts all input, cached included
    assert plain.cached_input_tokens == 4 and plain.input_tokens == msg.usage.input_tokens + 4
    assert streamed.output_tokens == 6 and streamed.stream


def test_input_estimate_covers_what_the_upstream_counts(gateway: Gateway) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"},
                                                 {"role": "user", "content": "naïve café ünïcode " * 40}]}
    oa(gateway).chat.completions.create(**body)  # type: ignore[call-overload]
    [event] = events(gateway)
    assert event.input_tokens == count_input_tokens(body, "/v1/chat/completions")
    assert event.overrun_tokens == 0


def test_sdk_error_classes(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="cw-nope")).models.list()
    unbound = gateway.track(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.unbound, max_retries=0))
    with pytest.raises(openai.BadRequestError) as missing:
        unbound.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "department_required"
    with pytest.raises(openai.BadRequestError) as unknown:
        unbound.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                        extra_headers={"X-Department-ID": "LEGAL"})
    assert unknown.value.code == "unknown_department"
    with pytest.raises(openai.PermissionDeniedError) as mismatch:
        oa(gateway, "HR").chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                                  extra_headers={"X-Department-ID": "SALES"})
    assert mismatch.value.code == "department_mismatch"
    with pytest.raises(openai.NotFoundError) as missing_model:
        oa(gateway).chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    assert missing_model.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError):
        an(gateway).messages.create(model="claude-17", max_tokens=5, messages=[{"role": "user", "content": "x"}])


def test_rate_limit_is_retryable_and_budget_is_not(gateway: Gateway) -> None:
    client = oa(gateway, max_retries=0)
    for _ in range(60):
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert "x-should-retry" not in limited.value.response.headers  # the SDK retries it

    hr = oa(gateway, "HR", max_retries=3)
    with pytest.raises(openai.RateLimitError) as broke:  # the HR budget cannot pay for this worst case
        hr.chat.completions.create(model="gpt-4o", max_tokens=10_000, messages=[{"role": "user", "content": "x" * 4}],
                                   extra_body={"n": 1_000_000})
    assert broke.value.code == "budget_exceeded"
    assert broke.value.response.headers["x-should-retry"] == "false"
    rejected = gateway.ledger_query(lambda ledger: ledger.count_rejections())
    assert rejected == 2  # one rate limit, one budget refusal: the SDK did not retry the budget
