"""The mock upstream, driven over loopback by the official openai and anthropic SDKs."""

from __future__ import annotations

import base64
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import httpx
import httpx2
import openai
import orjson
import pytest
from pydantic import BaseModel, Field

from costwarden.mock_upstream import count_input_tokens, create_app, make_server

DEFAULT = 16
TOK = "tok "


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server("127.0.0.1", port)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, thread)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_ready(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert thread.is_alive(), "mock upstream thread died during startup"
        try:
            if httpx.get(url + "/mock/stats", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.01)  # polling interval, not synchronization: readiness is the 200 above
    raise AssertionError("mock upstream did not become ready")


@pytest.fixture(autouse=True)
def _reset(base_url: str) -> None:
    assert httpx.post(base_url + "/mock/reset").json()["requests"] == 0


@pytest.fixture
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def ant(base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def stats(base_url: str) -> dict[str, Any]:
    response = httpx.get(base_url + "/mock/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def wait_for_requests(base_url: str, count: int) -> dict[str, Any]:
    """Poll the stats until the server has recorded ``count`` requests."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = stats(base_url)
        if current["requests"] >= count:
            return current
        time.sleep(0.01)
    raise AssertionError(f"the server never recorded {count} requests")


# --- the counting rule --------------------------------------------------------------------


def test_count_chat_messages_parts_tools_and_tool_calls() -> None:
    assert count_input_tokens({"messages": [
        {"role": "system", "content": "You are terse."},  # 14 chars -> 4 + 3
        {"role": "user", "content": "Hello there"},  # 11 chars -> 3 + 3
    ]}, "/v1/chat/completions") == 3 + 7 + 6
    parts = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "abcd"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "efgh"},
    ]}]}
    assert count_input_tokens(parts, "chat") == 3 + 3 + 2
    tools = {"messages": [{"role": "user", "content": "Hi"}],
             "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}  # 61 chars
    assert count_input_tokens(tools, "chat.completions") == 3 + (3 + 1) + (3 + 16)
    call = {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "lookup", "arguments": '{"a":1}'}}]}]}
    assert count_input_tokens(call, "chat") == 3 + 3 + 4  # "lookup" + '{"a":1}' = 13 chars


def test_count_anthropic_system_tool_use_and_tool_result() -> None:
    body = {
        "system": "Be brief.",  # 9 chars -> 3
        "messages": [
            {"role": "user", "content": "Hi"},  # 1
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get",
                                               "input": {"q": "x"}}]},  # 'get{"q":"x"}' 12 -> 3
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text", "text": "result!"}]}]},  # 7 -> 2
        ],
    }
    assert count_input_tokens(body, "/v1/messages") == 3 + (3 + 3) + (3 + 1) + (3 + 3) + (3 + 2)
    blocks = {"system": [{"type": "text", "text": "Be brief."}], "messages": body["messages"]}
    assert count_input_tokens(blocks, "messages") == count_input_tokens(body, "messages")


def test_count_responses_completions_and_embeddings() -> None:
    assert count_input_tokens({"instructions": "Sys", "input": "Hello world"}, "/v1/responses") == 3 + 4 + 6
    items = {"input": [
        {"role": "user", "content": [{"type": "input_text", "text": "12345"}]},  # 2
        {"type": "function_call", "name": "fn", "arguments": "{}", "call_id": "c"},  # "fn{}" -> 1
        {"type": "function_call_output", "call_id": "c", "output": "ok"},  # 1
    ]}
    assert count_input_tokens(items, "responses") == 3 + 5 + 4 + 4
    assert count_input_tokens({"prompt": ["abcde", "", [1, 2, 3]]}, "/v1/completions") == 2 + 1 + 3
    assert count_input_tokens({"input": "hello"}, "embeddings") == 2
    assert count_input_tokens({"input": [1, 2, 3, 4, 5]}, "embeddings") == 5
    with pytest.raises(ValueError):
        count_input_tokens({}, "/v1/images")


# --- OpenAI chat completions --------------------------------------------------------------


def test_chat_usage_follows_the_counting_rule(oai: openai.OpenAI, base_url: str) -> None:
    messages: list[Any] = [{"role": "system", "content": "You are a mock."},
                           {"role": "user", "content": "Count me, please."}]
    result = oai.chat.completions.create(model="gpt-4o", messages=messages)
    expected = count_input_tokens({"messages": messages}, "chat")
    assert result.object == "chat.completion"
    assert result.choices[0].message.content == TOK * DEFAULT
    assert result.choices[0].finish_reason == "stop"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (expected, DEFAULT)
    assert result.usage.total_tokens == expected + DEFAULT
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 0
    assert stats(base_url)["models"]["gpt-4o"] == {
        "requests": 1, "input_tokens": expected, "cached_input_tokens": 0, "output_tokens": DEFAULT,
        "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0}


def test_chat_output_limit_truncates(oai: openai.OpenAI) -> None:
    user: Any = [{"role": "user", "content": "hi"}]
    short = oai.chat.completions.create(model="gpt-4o", messages=user, max_tokens=5)
    assert short.usage is not None and short.usage.completion_tokens == 5
    assert short.choices[0].finish_reason == "length"
    newer = oai.chat.completions.create(model="gpt-4o", messages=user, max_completion_tokens=7)
    assert newer.usage is not None and newer.usage.completion_tokens == 7
    roomy = oai.chat.completions.create(model="gpt-4o", messages=user, max_tokens=500)
    assert roomy.usage is not None and roomy.usage.completion_tokens == DEFAULT
    assert roomy.choices[0].finish_reason == "stop"


def test_chat_stream_with_usage_chunk(oai: openai.OpenAI, base_url: str) -> None:
    messages: Any = [{"role": "user", "content": "stream please"}]
    chunks = list(oai.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}))
    *body, last = chunks
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(chunk.usage is None for chunk in body)
    assert body[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in body) == TOK * DEFAULT
    assert body[-1].choices[0].finish_reason == "stop"
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == count_input_tokens({"messages": messages}, "chat")
    assert last.usage.completion_tokens == DEFAULT
    assert stats(base_url)["output_tokens"] == DEFAULT


def test_chat_stream_without_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True, max_tokens=3))
    assert all(chunk.choices for chunk in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == TOK * 3
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_stream_raw_wire_ends_with_done(base_url: str) -> None:
    response = httpx.post(base_url + "/v1/chat/completions", headers={"Authorization": "Bearer k"}, json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True,
        "stream_options": {"include_usage": True}, "max_tokens": 2})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"].startswith("req_")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    assert '"choices":[]' in events[-2] and '"usage":{' in events[-2]
    assert len(events) == 1 + 2 + 1 + 1 + 1  # role, tokens, finish, usage, [DONE]


# --- completions, embeddings, models ------------------------------------------------------


def test_completions_plain_and_streamed(oai: openai.OpenAI) -> None:
    result = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say something", max_tokens=4)
    assert result.object == "text_completion"
    assert result.choices[0].text == TOK * 4
    assert result.usage is not None and result.usage.prompt_tokens == 4  # 13 chars
    chunks = list(oai.completions.create(model="gpt-3.5-turbo-instruct", prompt=["ab", "cdefg"], stream=True,
                                         stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TOK * DEFAULT
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 1 + 2


def test_embeddings_float_and_base64_agree(oai: openai.OpenAI, base_url: str) -> None:
    floats = oai.embeddings.create(model="text-embedding-3-small", input=["hello", "world!"],
                                   encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 1536
    assert floats.usage.prompt_tokens == 2 + 2 and floats.usage.total_tokens == 4
    decoded = oai.embeddings.create(model="text-embedding-3-small", input=["hello", "world!"])  # SDK asks base64
    assert decoded.data[1].embedding == floats.data[1].embedding
    raw = httpx.post(base_url + "/v1/embeddings", headers={"Authorization": "Bearer k"}, json={
        "model": "text-embedding-3-small", "input": "x", "encoding_format": "base64", "dimensions": 8}).json()
    vector = struct.unpack("<8f", base64.b64decode(raw["data"][0]["embedding"]))
    assert list(vector) == floats.data[0].embedding[:8]
    assert stats(base_url)["output_tokens"] == 0


def test_models_lists_in_each_providers_shape(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    assert "gpt-4o" in {model.id for model in oai.models.list()}
    assert "claude-sonnet-4-6" in {model.id for model in ant.models.list()}


# --- Responses API ------------------------------------------------------------------------


def test_responses_plain(oai: openai.OpenAI) -> None:
    result = oai.responses.create(model="gpt-4.1", instructions="Sys", input="Hello world")
    assert result.status == "completed"
    assert result.output_text == TOK * DEFAULT
    assert result.usage is not None
    assert result.usage.input_tokens == 3 + 4 + 6
    assert result.usage.output_tokens == DEFAULT
    assert result.usage.input_tokens_details.cached_tokens == 0


def test_responses_stream_events(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-4.1", input="Hi", stream=True, max_output_tokens=50))
    types = [event.type for event in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[4:-4] == ["response.output_text.delta"] * DEFAULT
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.usage is not None
    assert final.response.usage.input_tokens == count_input_tokens({"input": "Hi"}, "responses")
    assert final.response.output_text == TOK * DEFAULT


def test_responses_truncated_is_incomplete(oai: openai.OpenAI) -> None:
    result = oai.responses.create(model="gpt-4.1", input="Hi", max_output_tokens=4)
    assert result.status == "incomplete"
    assert result.incomplete_details is not None and result.incomplete_details.reason == "max_output_tokens"
    assert result.usage is not None and result.usage.output_tokens == 4
    events = list(oai.responses.create(model="gpt-4.1", input="Hi", max_output_tokens=4, stream=True))
    assert events[-1].type == "response.incomplete"


# --- Anthropic messages -------------------------------------------------------------------


def test_messages_plain(ant: anthropic.Anthropic, base_url: str) -> None:
    body: dict[str, Any] = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hello"}]}
    result = ant.messages.create(model="claude-sonnet-4-6", max_tokens=100, **body)
    expected = count_input_tokens(body, "messages")
    assert result.type == "message" and result.role == "assistant"
    assert result.content[0].type == "text" and result.content[0].text == TOK * DEFAULT
    assert result.stop_reason == "end_turn"
    assert (result.usage.input_tokens, result.usage.output_tokens) == (expected, DEFAULT)
    assert result.usage.cache_read_input_tokens == 0
    assert result.id.startswith("msg_")
    assert stats(base_url)["models"]["claude-sonnet-4-6"]["input_tokens"] == expected


def test_messages_stream_helper_and_raw_events(ant: anthropic.Anthropic) -> None:
    messages: Any = [{"role": "user", "content": "Hello"}]
    with ant.messages.stream(model="claude-haiku-4-5", max_tokens=5, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TOK * 5
    assert final.usage.output_tokens == 5 and final.stop_reason == "max_tokens"
    assert final.usage.input_tokens == count_input_tokens({"messages": messages}, "messages")
    raw = list(ant.messages.create(model="claude-haiku-4-5", max_tokens=2, messages=messages, stream=True))
    assert [event.type for event in raw] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]  # the SDK drops the ping


def test_messages_raw_stream_has_ping_and_named_events(base_url: str) -> None:
    response = httpx.post(base_url + "/v1/messages", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                          json={"model": "claude-haiku-4-5", "max_tokens": 1, "stream": True,
                                "messages": [{"role": "user", "content": "x"}]})
    names = [event.split("\n")[0] for event in response.text.split("\n\n") if event]
    assert names == ["event: message_start", "event: content_block_start", "event: ping",
                     "event: content_block_delta", "event: content_block_stop", "event: message_delta",
                     "event: message_stop"]
    assert response.headers["request-id"].startswith("req_")


def test_messages_count_tokens(ant: anthropic.Anthropic, base_url: str) -> None:
    messages: Any = [{"role": "user", "content": "How many?"}]
    result = ant.messages.count_tokens(model="claude-sonnet-4-6", messages=messages)
    assert result.input_tokens == count_input_tokens({"messages": messages}, "messages")
    assert stats(base_url)["requests"] == 0  # counting is free


# --- directives ---------------------------------------------------------------------------


def test_output_tokens_directive_is_capped_by_the_limit(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    asked: Any = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": "go #mock output_tokens=40"}]
    result = oai.chat.completions.create(model="gpt-4o", messages=asked)
    assert result.usage is not None and result.usage.completion_tokens == 40
    capped = oai.chat.completions.create(model="gpt-4o", messages=asked, max_tokens=10)
    assert capped.usage is not None and capped.usage.completion_tokens == 10
    message = ant.messages.create(model="claude-haiku-4-5", max_tokens=1000, messages=[
        {"role": "user", "content": [{"type": "text", "text": "#mock output_tokens=0"}]}])
    assert message.usage.output_tokens == 0 and message.content[0].type == "text"


def test_cached_directive_per_provider_convention(
        oai: openai.OpenAI, ant: anthropic.Anthropic, base_url: str) -> None:
    messages: Any = [{"role": "user", "content": "long prompt here #mock cached=5"}]
    chat = oai.chat.completions.create(model="gpt-4o", messages=messages)
    total = count_input_tokens({"messages": messages}, "chat")
    assert chat.usage is not None and chat.usage.prompt_tokens == total
    assert chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == 5
    message = ant.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=messages)
    assert message.usage.input_tokens == total - 5
    assert message.usage.cache_read_input_tokens == 5
    totals = stats(base_url)
    assert (totals["input_tokens"], totals["cached_input_tokens"]) == (2 * total, 10)


def test_input_tokens_directive_and_header_directives(oai: openai.OpenAI) -> None:
    result = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "#mock input_tokens=1000 cached=200"}])
    assert result.usage is not None and result.usage.prompt_tokens == 1000
    assert result.usage.prompt_tokens_details is not None
    assert result.usage.prompt_tokens_details.cached_tokens == 200
    by_header = oai.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "#mock output_tokens=9"}],
        extra_headers={"x-mock-output-tokens": "3", "x-mock-input_tokens": "77"})
    assert by_header.usage is not None
    assert (by_header.usage.prompt_tokens, by_header.usage.completion_tokens) == (77, 3)


@pytest.mark.parametrize(("status", "error_class"), [
    (400, openai.BadRequestError),
    (401, openai.AuthenticationError),
    (403, openai.PermissionDeniedError),
    (404, openai.NotFoundError),
    (429, openai.RateLimitError),
    (500, openai.InternalServerError),
    (503, openai.InternalServerError),
])
def test_status_directive_maps_to_openai_exceptions(
        oai: openai.OpenAI, base_url: str, status: int, error_class: type[openai.APIStatusError]) -> None:
    with pytest.raises(error_class) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"#mock status={status}"}])
    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.request_id is not None
    current = stats(base_url)
    assert (current["requests"], current["errors"]) == (0, 1)


@pytest.mark.parametrize(("status", "error_class", "error_type"), [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (403, anthropic.PermissionDeniedError, "permission_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
])
def test_status_directive_maps_to_anthropic_exceptions(
        ant: anthropic.Anthropic, status: int, error_class: type[anthropic.APIStatusError], error_type: str) -> None:
    with pytest.raises(error_class) as caught:
        ant.messages.create(model="claude-haiku-4-5", max_tokens=10, stream=True,
                            messages=[{"role": "user", "content": "x"}],
                            extra_headers={"x-mock-status": str(status)})
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == error_type
    assert body["request_id"].startswith("req_")


def test_bad_directives_are_refused(oai: openai.OpenAI) -> None:
    for text in ("#mock outptu_tokens=3", "#mock output_tokens=many", "#mock status=200"):
        with pytest.raises(openai.BadRequestError):
            oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])


def test_delay_directive(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "#mock delay_ms=200"}])
    assert time.monotonic() - started >= 0.2


async def test_app_latency_applies_to_every_answer() -> None:
    transport = httpx.ASGITransport(app=create_app(latency_ms=150))
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", headers={"x-api-key": "k"}, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
        assert time.monotonic() - started >= 0.15
        assert response.status_code == 200 and response.json()["usage"]["completion_tokens"] == DEFAULT


def test_chunk_delay_paces_the_stream(oai: openai.OpenAI) -> None:
    started = time.monotonic()
    chunks = list(oai.chat.completions.create(
        model="gpt-4o", stream=True, messages=[{"role": "user", "content": "#mock output_tokens=5 chunk_delay_ms=30"}]))
    assert time.monotonic() - started >= 6 * 0.03  # a pause before each token and before the tail
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TOK * 5


@pytest.mark.parametrize("pace", ["", " chunk_delay_ms=5"])
def test_cut_after_drops_openai_stream(oai: openai.OpenAI, base_url: str, pace: str) -> None:
    received: list[str] = []
    stream = oai.chat.completions.create(model="gpt-4o", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "#mock cut_after=3" + pace}])
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            assert chunk.usage is None
            received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == TOK * 3
    current = stats(base_url)
    assert (current["requests"], current["output_tokens"], current["streams_cut"]) == (1, 3, 1)


def test_cut_after_drops_anthropic_stream(ant: anthropic.Anthropic, base_url: str) -> None:
    messages: Any = [{"role": "user", "content": "#mock cut_after=2"}]
    seen: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):  # the SDK's transport sees the body end early
        for event in ant.messages.create(model="claude-haiku-4-5", max_tokens=50, stream=True, messages=messages):
            seen.append(event.type)
    assert seen == ["message_start", "content_block_start", "content_block_delta", "content_block_delta"]
    current = stats(base_url)
    assert current["output_tokens"] == 2
    assert current["input_tokens"] == count_input_tokens({"messages": messages}, "messages")


def test_client_leaving_a_paced_stream_counts_what_was_sent(oai: openai.OpenAI, base_url: str) -> None:
    stream = oai.chat.completions.create(model="gpt-4o", stream=True, messages=[
        {"role": "user", "content": "#mock output_tokens=500 chunk_delay_ms=10"}])
    for count, _chunk in enumerate(stream):
        if count == 3:
            break
    stream.close()
    current = wait_for_requests(base_url, 1)
    assert 3 <= current["output_tokens"] < 500
    assert current["streams_cut"] == 1


# --- auth, malformed requests, stats ------------------------------------------------------


def test_missing_key_is_401_in_each_shape(oai: openai.OpenAI, base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}],
                                    extra_headers={"Authorization": openai.omit})
    assert caught.value.status_code == 401
    response = httpx.post(base_url + "/v1/messages", json={
        "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(base_url + "/v1/models").status_code == 401


def test_malformed_requests_are_400(base_url: str) -> None:
    broken = httpx.post(base_url + "/v1/chat/completions", headers={"Authorization": "Bearer k"},
                        content=b"{not json")
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    no_max = httpx.post(base_url + "/v1/messages", headers={"x-api-key": "k"},
                        json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "x"}]})
    assert no_max.status_code == 400
    assert no_max.json()["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    unknown = httpx.get(base_url + "/v1/nothing-here", headers={"Authorization": "Bearer k"})
    assert unknown.status_code == 404


def test_stats_per_model_and_reset(oai: openai.OpenAI, ant: anthropic.Anthropic, base_url: str) -> None:
    oai.chat.completions.create(model="gpt-4o", max_tokens=2, messages=[{"role": "user", "content": "abcd"}])
    oai.chat.completions.create(model="gpt-4o", max_tokens=3, messages=[{"role": "user", "content": "abcd"}])
    ant.messages.create(model="claude-haiku-4-5", max_tokens=4, messages=[{"role": "user", "content": "abcd"}])
    current = stats(base_url)
    assert current["models"] == {
        "claude-haiku-4-5": {"requests": 1, "input_tokens": 7, "cached_input_tokens": 0, "output_tokens": 4,
                             "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0},
        "gpt-4o": {"requests": 2, "input_tokens": 14, "cached_input_tokens": 0, "output_tokens": 5,
                   "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0},
    }
    assert (current["requests"], current["input_tokens"], current["output_tokens"]) == (3, 21, 9)
    zeroed = httpx.post(base_url + "/mock/reset").json()
    assert zeroed == {"requests": 0, "input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
                      "cache_write_5m_tokens": 0, "cache_write_1h_tokens": 0,
                      "errors": 0, "streams_cut": 0, "models": {}}
    assert stats(base_url) == zeroed


# --- prompt caching -----------------------------------------------------------------------


def advance(base_url: str, seconds: float) -> None:
    """Move the mock's cache clock forward."""
    assert httpx.post(base_url + "/mock/clock", json={"advance_s": seconds}).status_code == 200


def cache_figures(usage: Any) -> tuple[int, int, int, int, int]:
    """input, cache read, cache creation, its 5-minute part and its 1-hour part."""
    creation = usage.cache_creation
    return (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens,
            creation.ephemeral_5m_input_tokens, creation.ephemeral_1h_input_tokens)


def test_anthropic_cache_is_written_then_read_until_its_ttl(ant: anthropic.Anthropic, base_url: str) -> None:
    system: Any = [{"type": "text", "text": "s" * 8000, "cache_control": {"type": "ephemeral"}}]
    messages: Any = [{"role": "user", "content": "Hi"}]
    total = count_input_tokens({"system": system, "messages": messages}, "messages")
    prefix = 3 + 3 + 2000  # the request's overhead, then the system block up to its breakpoint

    def call() -> tuple[int, int, int, int, int]:
        return cache_figures(ant.messages.create(model="claude-sonnet-4-6", max_tokens=4, system=system,
                                                 messages=messages).usage)

    assert call() == (total - prefix, 0, prefix, prefix, 0)
    assert call() == (total - prefix, prefix, 0, 0, 0)
    advance(base_url, 200)
    assert call()[1] == prefix  # a read renews the entry's five minutes...
    advance(base_url, 200)
    assert call()[1] == prefix  # ...so 400 s after the write it is still there
    advance(base_url, 301)
    assert call() == (total - prefix, 0, prefix, prefix, 0)
    served = stats(base_url)
    assert (served["cache_write_5m_tokens"], served["cached_input_tokens"]) == (2 * prefix, 3 * prefix)
    assert served["input_tokens"] == 5 * total and served["cache_write_1h_tokens"] == 0


def test_anthropic_one_hour_and_five_minute_breakpoints(ant: anthropic.Anthropic, base_url: str) -> None:
    system: Any = [{"type": "text", "text": "s" * 8000, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    question = {"type": "text", "text": "q" * 2000, "cache_control": {"type": "ephemeral"}}
    messages: Any = [{"role": "user", "content": [question, {"type": "text", "text": "and then?"}]}]
    long_prefix = 3 + 3 + 2000
    short_prefix = long_prefix + 3 + 500

    def call() -> tuple[int, int, int, int, int]:
        return cache_figures(ant.messages.create(model="claude-opus-4-6", max_tokens=4, system=system,
                                                 messages=messages).usage)

    total = count_input_tokens({"system": system, "messages": messages}, "messages")
    assert call() == (total - short_prefix, 0, short_prefix, short_prefix - long_prefix, long_prefix)
    assert call()[:3] == (total - short_prefix, short_prefix, 0)
    advance(base_url, 301)  # the 5-minute entry is gone, the hour's is not
    assert call() == (total - short_prefix, long_prefix, short_prefix - long_prefix, short_prefix - long_prefix, 0)
    advance(base_url, 3600)
    assert call()[1:] == (0, short_prefix, short_prefix - long_prefix, long_prefix)
    served = stats(base_url)
    assert served["cache_write_1h_tokens"] == 2 * long_prefix
    assert served["cache_write_5m_tokens"] == 3 * (short_prefix - long_prefix)


def test_anthropic_cache_minimum_and_moving_breakpoint(ant: anthropic.Anthropic) -> None:
    def turn(model: str, messages: Any) -> tuple[int, int, int, int, int]:
        return cache_figures(ant.messages.create(model=model, max_tokens=4, messages=messages).usage)

    first: Any = {"role": "user", "content": [{"type": "text", "text": "u" * 6000, "cache_control": {"type": "ephemeral"}}]}
    prefix = 3 + 3 + 1500  # between the two minimums: 1,024 for most models, 2,048 for haiku
    assert turn("claude-haiku-4-5", [first])[1:3] == (0, 0)
    assert turn("claude-haiku-4-5", [first])[1:3] == (0, 0)
    assert turn("claude-sonnet-4-6", [first])[1:3] == (0, prefix)
    # the next turn moves the breakpoint to its last message; the earlier prefix is still found
    plain_first = {"role": "user", "content": [{"type": "text", "text": "u" * 6000}]}
    later: Any = [plain_first, {"role": "assistant", "content": "tok tok"},
                  {"role": "user", "content": [{"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}}]}]
    whole = count_input_tokens({"messages": later}, "messages")
    assert turn("claude-sonnet-4-6", later)[:3] == (0, prefix, whole - prefix)
    assert turn("claude-sonnet-4-6", later)[:3] == (0, whole, 0)


def long_chat(system: str, user: str = "Hi") -> list[Any]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def test_openai_caches_prompt_prefixes_automatically(oai: openai.OpenAI, base_url: str) -> None:
    shared = "p" * 6000

    def cached(messages: list[Any], **extra: Any) -> int:
        usage = oai.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=1, **extra).usage
        assert usage is not None and usage.prompt_tokens_details is not None
        return usage.prompt_tokens_details.cached_tokens or 0

    first = long_chat(shared + "A" * 2000)
    total = count_input_tokens({"messages": first}, "chat")
    assert total == 3 + (3 + 2000) + (3 + 1)
    assert cached(first) == 0
    assert cached(first) == total // 128 * 128 == 1920
    # a prompt that shares 6,000 characters of its first block: 3 + 3 + 1500 tokens, in steps of 128
    assert cached(long_chat(shared + "B" * 2000)) == 1408
    assert cached(first, prompt_cache_key="tenant-2") == 0  # a separate cache
    assert cached(long_chat("short")) == 0 and cached(long_chat("short")) == 0  # under 1,024 tokens
    advance(base_url, 601)  # ten minutes unused: gone
    assert cached(first) == 0
    assert stats(base_url)["cached_input_tokens"] == 1920 + 1408


def test_openai_responses_report_cached_input(oai: openai.OpenAI) -> None:
    text = "r" * 8000
    assert oai.responses.create(model="gpt-4.1", input=text).usage.input_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    usage = oai.responses.create(model="gpt-4.1", input=text).usage
    assert usage is not None
    assert usage.input_tokens_details.cached_tokens == usage.input_tokens // 128 * 128 > 0


def test_cached_directive_overrides_automatic_caching(oai: openai.OpenAI) -> None:
    messages = long_chat("p" * 8000, "#mock cached=0")
    oai.chat.completions.create(model="gpt-4o", messages=messages)
    usage = oai.chat.completions.create(model="gpt-4o", messages=messages).usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0


# --- stored and hidden input --------------------------------------------------------------


def test_previous_response_and_conversation_carry_stored_input(oai: openai.OpenAI, base_url: str) -> None:
    first = oai.responses.create(model="gpt-4.1", input="hello")
    assert first.usage is not None
    context = first.usage.input_tokens + first.usage.output_tokens
    second = oai.responses.create(model="gpt-4.1", input="more", previous_response_id=first.id)
    assert second.usage is not None
    assert second.usage.input_tokens == context + count_input_tokens({"input": "more"}, "responses")
    assert second.previous_response_id == first.id
    with pytest.raises(openai.BadRequestError, match="not found"):
        oai.responses.create(model="gpt-4.1", input="x", previous_response_id="resp_unknown")
    unstored = oai.responses.create(model="gpt-4.1", input="x", store=False)
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model="gpt-4.1", input="x", previous_response_id=unstored.id)
    visible = count_input_tokens({"input": "q #mock stored_tokens=100000"}, "responses")
    forced = oai.responses.create(model="gpt-4.1", input="q #mock stored_tokens=100000",
                                  previous_response_id="resp_elsewhere")
    assert forced.usage is not None and forced.usage.input_tokens == 100_000 + visible
    turns = [oai.responses.create(model="gpt-4.1", input="turn", conversation="conv_1") for _ in range(3)]
    each = count_input_tokens({"input": "turn"}, "responses")
    assert [t.usage.input_tokens for t in turns if t.usage] == [each, 2 * each + 16, 3 * each + 32]
    served = stats(base_url)
    assert served["input_tokens"] == sum(r.usage.input_tokens for r in (first, second, unstored, forced, *turns)
                                         if r.usage)


def test_media_parts_add_input_tokens(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    parts: Any = [{"type": "text", "text": "look #mock media_tokens=700"},
                  {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                  {"type": "file", "file": {"file_id": "file-abc"}}]
    messages: Any = [{"role": "user", "content": parts}]
    visible = count_input_tokens({"messages": messages}, "chat")
    usage = oai.chat.completions.create(model="gpt-4o", messages=messages).usage
    assert usage is not None and usage.prompt_tokens == visible + 2 * 700
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "see #mock media_tokens=50"},
                                               {"type": "input_file", "file_id": "file-1"},
                                               {"type": "input_image", "image_url": "https://example.com/b.png"}]}]
    response = oai.responses.create(model="gpt-4.1", input=items)
    assert response.usage is not None
    assert response.usage.input_tokens == count_input_tokens({"input": items}, "responses") + 100
    content: Any = [{"type": "document", "source": {"type": "url", "url": "https://example.com/c.pdf"}},
                    {"type": "text", "text": "#mock media_tokens=9"}]
    counted = ant.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": content}])
    assert counted.input_tokens == count_input_tokens({"messages": [{"role": "user", "content": content}]},
                                                      "messages") + 9


async def test_media_tokens_per_instance() -> None:
    transport = httpx.ASGITransport(app=create_app(media_tokens=85))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}
    async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
        response = await client.post("/v1/chat/completions", headers={"x-api-key": "k"}, json=body)
    assert response.json()["usage"]["prompt_tokens"] == count_input_tokens(body, "chat") + 85


# --- service tiers, n, structured output, tools, thinking -----------------------------------


def test_service_tier_is_echoed(oai: openai.OpenAI) -> None:
    hi: Any = [{"role": "user", "content": "hi"}]
    tiers: Any = (("flex", "flex"), ("priority", "priority"), ("auto", "default"), (None, "default"))
    for asked, reported in tiers:
        assert oai.chat.completions.create(model="o3-mini", messages=hi, service_tier=asked).service_tier == reported
    chunks = list(oai.chat.completions.create(model="gpt-4o", messages=hi, stream=True, service_tier="priority"))
    assert {chunk.service_tier for chunk in chunks} == {"priority"}
    assert oai.responses.create(model="gpt-4.1", input="hi", service_tier="flex").service_tier == "flex"


def test_n_choices_unary_and_streamed(oai: openai.OpenAI, base_url: str) -> None:
    hi: Any = [{"role": "user", "content": "hi"}]
    result = oai.chat.completions.create(model="gpt-4o", messages=hi, n=3, max_tokens=5)
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert all(c.message.content == TOK * 5 and c.finish_reason == "length" for c in result.choices)
    assert result.usage is not None and result.usage.completion_tokens == 15
    texts = ["", ""]
    usage = None
    for chunk in oai.chat.completions.create(model="gpt-4o", messages=hi, n=2, stream=True,
                                             stream_options={"include_usage": True}):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
        usage = chunk.usage or usage
    assert texts == [TOK * DEFAULT] * 2
    assert usage is not None and usage.completion_tokens == 2 * DEFAULT
    assert stats(base_url)["output_tokens"] == 15 + 2 * DEFAULT


class Forecast(BaseModel):
    city: str
    days: list[Day]
    unit: Literal["celsius", "fahrenheit"]


class Day(BaseModel):
    day: int = Field(ge=1, le=7)
    high: float
    summary: str | None


Forecast.model_rebuild()


def test_structured_output_fits_the_schema(oai: openai.OpenAI, base_url: str) -> None:
    hi: Any = [{"role": "user", "content": "Forecast for Paris?"}]
    parsed = oai.chat.completions.parse(model="gpt-4o", messages=hi, response_format=Forecast)
    forecast = parsed.choices[0].message.parsed
    assert isinstance(forecast, Forecast) and forecast.unit == "celsius" and forecast.days[0].day == 1
    content = parsed.choices[0].message.content
    assert content is not None and parsed.usage is not None
    assert parsed.usage.completion_tokens == -(-len(content) // 4)
    with oai.chat.completions.stream(model="gpt-4o", messages=hi, response_format=Forecast) as stream:
        streamed = stream.get_final_completion().choices[0].message.parsed
    assert streamed == forecast
    plain = oai.chat.completions.create(model="gpt-4o", messages=hi, response_format={"type": "json_object"})
    assert isinstance(json_loads(plain.choices[0].message.content), dict)
    answer = oai.responses.parse(model="gpt-4.1", input="Forecast?", text_format=Forecast)
    assert answer.output_parsed == forecast
    assert answer.usage is not None
    served = stats(base_url)
    assert served["output_tokens"] == 2 * parsed.usage.completion_tokens + (
        plain.usage.completion_tokens if plain.usage else 0) + answer.usage.output_tokens


def json_loads(text: str | None) -> Any:
    assert text is not None
    return orjson.loads(text)


WEATHER_TOOL: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city", "days"], "additionalProperties": False}}}
OTHER_TOOL: Any = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
                   "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}


def test_openai_tool_calls_unary_and_streamed(oai: openai.OpenAI, base_url: str) -> None:
    hi: Any = [{"role": "user", "content": "Weather in Paris?"}]
    result = oai.chat.completions.create(model="gpt-4o", messages=hi, tools=[WEATHER_TOOL, OTHER_TOOL])
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather"
    assert json_loads(call.function.arguments) == {"city": "tok", "days": 1}
    assert result.usage is not None and result.usage.completion_tokens == -(-len(call.function.arguments) // 4)
    fragments: list[str] = []
    with oai.chat.completions.stream(model="gpt-4o", messages=hi, tools=[WEATHER_TOOL, OTHER_TOOL],
                                     tool_choice={"type": "function", "function": {"name": "get_time"}}) as stream:
        for event in stream:
            if event.type == "tool_calls.function.arguments.delta" and event.arguments_delta:
                fragments.append(event.arguments_delta)  # the first chunk names the call, with ""
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_time"
    assert calls[0].function.arguments == "".join(fragments) == '{"zone":"UTC"}' and len(fragments) == 4
    assert final.choices[0].finish_reason == "stop"  # a tool forced by name ends as "stop"
    none = oai.chat.completions.create(model="gpt-4o", messages=hi, tools=[WEATHER_TOOL], tool_choice="none")
    assert none.choices[0].message.content == TOK * DEFAULT
    answered: Any = [*hi, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    after = oai.chat.completions.create(model="gpt-4o", messages=answered, tools=[WEATHER_TOOL])
    assert after.choices[0].message.content == TOK * DEFAULT  # the agent loop ends
    assert stats(base_url)["output_tokens"] == (result.usage.completion_tokens + len(fragments) + 2 * DEFAULT)


def test_responses_function_call_unary_and_streamed(oai: openai.OpenAI) -> None:
    tool: Any = {"type": "function", "name": "get_weather", "strict": True,
                 "parameters": WEATHER_TOOL["function"]["parameters"]}
    result = oai.responses.create(model="gpt-4.1", input="Weather?", tools=[tool])
    item = result.output[0]
    assert item.type == "function_call" and item.name == "get_weather"
    assert json_loads(item.arguments) == {"city": "tok", "days": 1}
    deltas = []
    with oai.responses.stream(model="gpt-4.1", input="Weather?", tools=[tool]) as stream:
        for event in stream:
            if event.type == "response.function_call_arguments.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == item.arguments
    assert final.output[0].type == "function_call" and final.usage is not None
    assert final.usage.output_tokens == len(deltas)


ANTHROPIC_TOOL: Any = {"name": "get_weather", "description": "Weather", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string", "minLength": 5}}, "required": ["city"]}}


def test_anthropic_tool_use_unary_and_streamed(ant: anthropic.Anthropic, base_url: str) -> None:
    hi: Any = [{"role": "user", "content": "Weather in Paris?"}]
    message = ant.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=hi, tools=[ANTHROPIC_TOOL])
    block = message.content[0]
    assert message.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "get_weather" and block.input == {"city": "tokkk"}
    assert message.usage.output_tokens == -(-len('{"city":"tokkk"}') // 4)
    partials = []
    with ant.messages.stream(model="claude-sonnet-4-6", max_tokens=100, messages=hi, tools=[ANTHROPIC_TOOL],
                             tool_choice={"type": "any"}) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partials.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert "".join(partials) == '{"city":"tokkk"}'
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "tokkk"}
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == len(partials)
    result: Any = [*hi, {"role": "assistant", "content": [block.model_dump()]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}]
    after = ant.messages.create(model="claude-sonnet-4-6", max_tokens=100, messages=result, tools=[ANTHROPIC_TOOL])
    assert after.content[0].type == "text" and after.stop_reason == "end_turn"
    assert stats(base_url)["output_tokens"] == 2 * len(partials) + DEFAULT


def test_anthropic_extended_thinking(ant: anthropic.Anthropic, base_url: str) -> None:
    hi: Any = [{"role": "user", "content": "Think, then answer."}]
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    message = ant.messages.create(model="claude-sonnet-4-6", max_tokens=2048, thinking=thinking, messages=hi)
    assert [block.type for block in message.content] == ["thinking", "text"]
    first = message.content[0]
    assert first.type == "thinking" and first.thinking == "hmm " * 32 and first.signature
    assert message.usage.output_tokens == 32 + DEFAULT
    kinds: list[str] = []
    with ant.messages.stream(model="claude-sonnet-4-6", max_tokens=2048, thinking=thinking,
                             messages=[{"role": "user", "content": "#mock thinking_tokens=5 output_tokens=3"}]) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                kinds.append(event.delta.type)
        final = stream.get_final_message()
    assert kinds == ["thinking_delta"] * 5 + ["signature_delta"] + ["text_delta"] * 3
    assert final.content[0].type == "thinking" and final.content[0].thinking == "hmm " * 5
    assert final.content[0].signature and final.usage.output_tokens == 8
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        ant.messages.create(model="claude-sonnet-4-6", max_tokens=2048, messages=hi,
                            thinking={"type": "enabled", "budget_tokens": 100})
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        ant.messages.create(model="claude-sonnet-4-6", max_tokens=1024, messages=hi, thinking=thinking)
    assert stats(base_url)["output_tokens"] == 32 + DEFAULT + 8


def test_structured_output_cut_by_the_limit(oai: openai.OpenAI, base_url: str) -> None:
    hi: Any = [{"role": "user", "content": "hi"}]
    result = oai.chat.completions.create(model="gpt-4o", messages=hi, tools=[WEATHER_TOOL], max_tokens=2)
    choice = result.choices[0]
    assert choice.finish_reason == "length" and choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.arguments == '{"city":'  # two 4-character tokens
    assert stats(base_url)["output_tokens"] == 2
