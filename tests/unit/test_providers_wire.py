"""Wire-format knowledge of each endpoint: checks, estimates, forwarding bodies, usage, stream taps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costwarden.errors import InvalidRequest
from costwarden.mock_upstream.usage import count_input_tokens
from costwarden.providers import ENDPOINTS, TokenEstimator, Usage, build_endpoints
from costwarden.providers.jsontext import dumps
from costwarden.providers.sse import EventSplitter
from costwarden.providers.taps import StreamTap

CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MESSAGES = (
    ENDPOINTS[p] for p in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
                           "/v1/messages"))
FALLBACK = build_endpoints(TokenEstimator(use_tokenizer=False))
TokenEstimator().warm_up()  # the bundled encodings load once, here, not inside a timed example
USER = [{"role": "user", "content": "Hello"}]


def test_endpoints_by_path() -> None:
    assert {p: (e.wire, e.kind) for p, e in ENDPOINTS.items()} == {
        "/v1/chat/completions": ("openai", "chat"),
        "/v1/completions": ("openai", "chat"),
        "/v1/embeddings": ("openai", "embedding"),
        "/v1/responses": ("openai", "chat"),
        "/v1/messages": ("anthropic", "chat"),
    }
    assert all(endpoint.path == path for path, endpoint in ENDPOINTS.items())


# -- validate ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("endpoint", "body", "param"), [
    (CHAT, {"messages": USER}, "model"),
    (CHAT, {"model": "", "messages": USER}, "model"),
    (CHAT, {"model": 4, "messages": USER}, "model"),
    (CHAT, {"model": "m"}, "messages"),
    (CHAT, {"model": "m", "messages": []}, "messages"),
    (CHAT, {"model": "m", "messages": "hi"}, "messages"),
    (CHAT, {"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
    (CHAT, {"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    (CHAT, {"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    (CHAT, {"model": "m", "messages": USER, "max_tokens": True}, "max_tokens"),
    (CHAT, {"model": "m", "messages": USER, "max_completion_tokens": "10"}, "max_completion_tokens"),
    (CHAT, {"model": "m", "messages": USER, "stream": "yes"}, "stream"),
    (CHAT, {"model": "m", "messages": USER, "n": 0}, "n"),
    (COMPLETIONS, {"model": "m"}, "prompt"),
    (COMPLETIONS, {"model": "m", "prompt": {"text": "x"}}, "prompt"),
    (COMPLETIONS, {"model": "m", "prompt": [1, "a"]}, "prompt"),
    (EMBEDDINGS, {"model": "m"}, "input"),
    (EMBEDDINGS, {"model": "m", "input": []}, "input"),
    (EMBEDDINGS, {"model": "m", "input": "x", "stream": True}, "stream"),
    (RESPONSES, {"model": "m"}, "input"),
    (RESPONSES, {"model": "m", "input": 3}, "input"),
    (RESPONSES, {"model": "m", "input": "x", "max_output_tokens": -1}, "max_output_tokens"),
    (MESSAGES, {"model": "m", "messages": USER}, "max_tokens"),
    (MESSAGES, {"model": "m", "messages": USER, "max_tokens": 1.5}, "max_tokens"),
    (MESSAGES, {"model": "m", "max_tokens": 10}, "messages"),
    (MESSAGES, {"model": "m", "max_tokens": 10, "messages": USER, "system": 1}, "system"),
])
def test_validate_refuses(endpoint: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        endpoint.validate(body)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert param.split("[")[0].split(".")[0] in caught.value.message


@pytest.mark.parametrize(("endpoint", "body"), [
    (CHAT, {"model": "m", "messages": USER, "max_tokens": 5, "stream": True,
            "stream_options": {"include_usage": False}}),
    (CHAT, {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}),
    (COMPLETIONS, {"model": "m", "prompt": ["a", "b"]}),
    (COMPLETIONS, {"model": "m", "prompt": [[1, 2], [3]]}),
    (EMBEDDINGS, {"model": "m", "input": [1, 2, 3]}),
    (RESPONSES, {"model": "m", "input": [{"role": "user", "content": "x"}], "max_output_tokens": 20}),
    (RESPONSES, {"model": "m", "previous_response_id": "resp_1"}),
    (MESSAGES, {"model": "m", "max_tokens": 10, "messages": USER, "system": [{"type": "text", "text": "s"}]}),
])
def test_validate_accepts(endpoint: Any, body: dict[str, Any]) -> None:
    endpoint.validate(body)


# -- output bound and stream -----------------------------------------------------------------------

def test_requested_output_tokens() -> None:
    assert CHAT.requested_output_tokens({"max_tokens": 50}) == 50
    assert CHAT.requested_output_tokens({"max_completion_tokens": 70}) == 70
    assert CHAT.requested_output_tokens({"max_tokens": 50, "max_completion_tokens": 70}) == 70
    assert CHAT.requested_output_tokens({"max_tokens": 80, "max_completion_tokens": 70}) == 80
    assert CHAT.requested_output_tokens({"max_tokens": True, "max_completion_tokens": "9"}) is None
    assert CHAT.requested_output_tokens({"messages": USER}) is None
    assert COMPLETIONS.requested_output_tokens({"max_tokens": 9}) == 9
    assert RESPONSES.requested_output_tokens({"max_output_tokens": 99}) == 99
    assert MESSAGES.requested_output_tokens({"max_tokens": 1024}) == 1024
    assert EMBEDDINGS.requested_output_tokens({"input": "x"}) == 0


def test_output_multiplier() -> None:
    assert CHAT.output_multiplier({"n": 3}) == 3
    assert CHAT.output_multiplier({}) == 1
    assert COMPLETIONS.output_multiplier({"n": 2, "best_of": 5}) == 5


def test_wants_stream() -> None:
    assert CHAT.wants_stream({"stream": True})
    assert not CHAT.wants_stream({"stream": False})
    assert not CHAT.wants_stream({})
    assert MESSAGES.wants_stream({"stream": True})
    assert not EMBEDDINGS.wants_stream({"stream": True})


# -- prepare -----------------------------------------------------------------------------------------

def prepared(endpoint: Any, body: dict[str, Any], **kwargs: Any) -> tuple[dict[str, Any], bool]:
    result = endpoint.prepare(body, **{"model": "served", "output_bound": None, "stream": False, **kwargs})
    return orjson.loads(result.body), result.client_wants_usage


def test_prepare_replaces_model_and_leaves_the_original_alone() -> None:
    body = {"model": "gpt-4o", "messages": USER, "temperature": 0.7, "stream_options": {"include_usage": False}}
    snapshot = json.dumps(body)
    out, _ = prepared(CHAT, body, stream=True)
    assert out["model"] == "served"
    assert out["temperature"] == 0.7
    assert json.dumps(body) == snapshot


@pytest.mark.parametrize(("endpoint", "body", "expected"), [
    (CHAT, {"max_tokens": 500}, {"max_tokens": 100}),
    (CHAT, {"max_completion_tokens": 500}, {"max_completion_tokens": 100}),
    (CHAT, {"max_tokens": 500, "max_completion_tokens": 400}, {"max_tokens": 100, "max_completion_tokens": 100}),
    (CHAT, {}, {"max_completion_tokens": 100}),
    (COMPLETIONS, {}, {"max_tokens": 100}),
    (RESPONSES, {"max_output_tokens": 300}, {"max_output_tokens": 100}),
    (RESPONSES, {}, {"max_output_tokens": 100}),
    (MESSAGES, {"max_tokens": 4096}, {"max_tokens": 100}),
])
def test_prepare_writes_the_output_bound(endpoint: Any, body: dict[str, Any], expected: dict[str, int]) -> None:
    out, _ = prepared(endpoint, {"model": "m", **body}, output_bound=100)
    assert {k: out.get(k) for k in expected} == expected
    others = set(endpoint.output_fields) - set(expected)
    assert all(k not in out for k in others)


def test_prepare_without_bound_keeps_the_client_fields() -> None:
    out, _ = prepared(CHAT, {"model": "m", "messages": USER, "max_tokens": 42})
    assert out["max_tokens"] == 42 and "max_completion_tokens" not in out


def test_prepare_keeps_anthropic_thinking_below_max_tokens() -> None:
    body = {"model": "m", "max_tokens": 8000, "thinking": {"type": "enabled", "budget_tokens": 6000}}
    out, _ = prepared(MESSAGES, body, output_bound=3000)
    assert out["max_tokens"] == 3000
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 2999}
    out, _ = prepared(MESSAGES, body, output_bound=7000)
    assert out["thinking"]["budget_tokens"] == 6000


@pytest.mark.parametrize("endpoint", [CHAT, COMPLETIONS])
@pytest.mark.parametrize(("options", "asked"), [
    (None, False), ({}, False), ({"include_usage": False}, False), ({"include_usage": True}, True),
])
def test_prepare_forces_usage_in_openai_streams(endpoint: Any, options: dict[str, Any] | None,
                                                 asked: bool) -> None:
    body: dict[str, Any] = {"model": "m", "stream": True}
    if options is not None:
        body["stream_options"] = options
    out, wants = prepared(endpoint, body, stream=True)
    assert out["stream"] is True
    assert out["stream_options"]["include_usage"] is True
    assert wants is asked


def test_prepare_keeps_other_stream_options() -> None:
    out, _ = prepared(CHAT, {"model": "m", "stream_options": {"continuous_usage_stats": True}}, stream=True)
    assert out["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}


def test_prepare_non_stream_and_other_wires() -> None:
    out, wants = prepared(CHAT, {"model": "m", "stream": True}, stream=False)
    assert out["stream"] is False and "stream_options" not in out and wants
    out, wants = prepared(MESSAGES, {"model": "m", "max_tokens": 5}, stream=True)
    assert out["stream"] is True and "stream_options" not in out and wants
    out, wants = prepared(RESPONSES, {"model": "m", "input": "x"}, stream=True)
    assert out["stream"] is True and "stream_options" not in out and wants


# -- usage from complete answers ---------------------------------------------------------------------

def test_usage_openai_chat_and_completions() -> None:
    payload = {"usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                         "prompt_tokens_details": {"cached_tokens": 64},
                         "completion_tokens_details": {"reasoning_tokens": 10}}}
    # reasoning is part of the output, kept apart because it is billed as reasoning
    assert CHAT.usage_from_response(payload) == Usage(100, 64, 20, reasoning_tokens=10)
    assert COMPLETIONS.usage_from_response({"usage": {"prompt_tokens": 5, "completion_tokens": 7}}) == Usage(5, 0, 7)
    assert CHAT.usage_from_response({"choices": []}) is None
    assert CHAT.usage_from_response({"usage": None}) is None


def test_usage_embeddings() -> None:
    assert EMBEDDINGS.usage_from_response({"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(8, 0, 0)


def test_usage_responses() -> None:
    payload = {"object": "response", "usage": {
        "input_tokens": 300, "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 30}, "total_tokens": 340}}
    assert RESPONSES.usage_from_response(payload) == Usage(300, 256, 40, reasoning_tokens=30)


def test_usage_anthropic_normalizes_cache_fields() -> None:
    payload = {"type": "message", "usage": {"input_tokens": 10, "cache_creation_input_tokens": 200,
                                            "cache_read_input_tokens": 1000, "output_tokens": 55}}
    assert MESSAGES.usage_from_response(payload) == Usage(1210, 1000, 55, cache_write_5m_tokens=200)
    assert MESSAGES.usage_from_response({"usage": {"input_tokens": 9, "output_tokens": 3,
                                                   "cache_read_input_tokens": None}}) == Usage(9, 0, 3)


def test_usage_flags_garbage_counts() -> None:
    assert CHAT.usage_from_response({"usage": {"prompt_tokens": "5", "completion_tokens": -2}}) == Usage(
        0, 0, 0, malformed=True)
    assert CHAT.usage_from_response(
        {"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9}}}) == Usage(5, 5, 0)


# -- stream taps ---------------------------------------------------------------------------------------

COST = Decimal("0.0000045")


def add_cost(usage: Usage) -> Mapping[str, object]:
    return {"cost": COST}


def sse(*payloads: object, names: bool = False) -> bytes:
    out = b""
    for payload in payloads:
        if payload == "[DONE]":
            out += b"data: [DONE]\n\n"
        elif isinstance(payload, bytes):
            out += payload
        else:
            head = b"event: " + payload["type"].encode() + b"\n" if names else b""  # type: ignore[index]
            out += head + b"data: " + orjson.dumps(payload) + b"\n\n"
    return out


def chat_chunk(delta: dict[str, Any] | None, usage: Any = None, finish: str | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices, "usage": usage}


CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
              "prompt_tokens_details": {"cached_tokens": 4}}
CHAT_BODY = sse(
    chat_chunk({"role": "assistant", "content": ""}),
    b": keep-alive\n\n",
    chat_chunk({"content": "Hello"}),
    chat_chunk({"content": " there, how are you?"}),  # 20 chars: 5 tokens
    chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":1}"}}]}),
    chat_chunk({}, finish="stop"),
)
CHAT_USAGE_EVENT = sse(chat_chunk(None, CHAT_USAGE))
CHAT_DONE = b"data: [DONE]\n\n"
CHAT_STREAM = CHAT_BODY + CHAT_USAGE_EVENT + CHAT_DONE


def run(make: Callable[[], StreamTap], pieces: list[bytes]) -> tuple[bytes, bytes, StreamTap]:
    tap = make()
    fed = b"".join(tap.feed(piece) for piece in pieces)
    return fed, tap.finish(), tap


def every_split(make: Callable[[], StreamTap], stream: bytes) -> tuple[bytes, bytes, StreamTap]:
    """Run the stream whole, split at every byte boundary, and byte by byte: all must agree."""
    whole = run(make, [stream])
    for cut in range(len(stream) + 1):
        fed, finished, tap = run(make, [stream[:cut], stream[cut:]])
        assert (fed, finished) == whole[:2], cut
        assert tap.usage == whole[2].usage and tap.completed == whole[2].completed
        assert tap.produced_output_tokens == whole[2].produced_output_tokens
    assert run(make, [bytes([b]) for b in stream])[:2] == whole[:2]
    return whole


def chat_tap(wants: bool) -> Callable[[], StreamTap]:
    return lambda: CHAT.stream_tap(client_wants_usage=wants, usage_extra=add_cost)


def test_chat_tap_strips_the_usage_chunk_the_client_did_not_ask_for() -> None:
    fed, finished, tap = every_split(chat_tap(False), CHAT_STREAM)
    assert fed == CHAT_BODY
    assert finished == CHAT_DONE
    assert tap.completed
    assert tap.usage == Usage(12, 4, 7)
    assert tap.produced_output_tokens == 2 + 5 + 2  # "Hello", 20 chars, 7 chars of arguments


def test_chat_tap_injects_the_exact_cost_when_the_client_asked() -> None:
    fed, finished, tap = every_split(chat_tap(True), CHAT_STREAM)
    assert fed.startswith(CHAT_BODY) and finished == CHAT_DONE
    usage_event = fed[len(CHAT_BODY):]
    assert b'"cost":0.0000045' in usage_event
    payload = json.loads(usage_event.removeprefix(b"data: "), parse_float=Decimal)
    assert payload["usage"] == {**CHAT_USAGE, "cost": COST}
    assert payload["choices"] == []
    assert tap.usage == Usage(12, 4, 7)


def test_chat_tap_holds_back_done_and_anything_after_it() -> None:
    tap = chat_tap(True)()
    assert tap.feed(CHAT_BODY) == CHAT_BODY
    assert tap.feed(CHAT_DONE + b": trailing\n\n") == b""
    assert tap.completed
    assert tap.finish() == CHAT_DONE + b": trailing\n\n"


def test_chat_tap_on_a_stream_cut_short() -> None:
    cut = CHAT_BODY[: CHAT_BODY.index(b"there") + 3]
    fed, finished, tap = run(chat_tap(False), [cut])
    assert fed + finished == cut  # the partial event is flushed as it was
    assert not tap.completed and tap.usage is None
    assert tap.produced_output_tokens == 2  # "Hello"; the partial event is not counted


def test_chat_tap_with_crlf_and_multiline_data() -> None:
    stream = (b"data: {\"choices\":[{\"delta\":{\"content\":\"abcd\"}}],\r\n"
              b"data: \"usage\":null}\r\n\r\n"
              b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\r\n\r\n"
              b"data: [DONE]\r\n\r\n")
    fed, finished, tap = every_split(chat_tap(False), stream)
    assert fed == stream[: stream.index(b"data: {\"choices\":[]")]
    assert finished == b"data: [DONE]\r\n\r\n"
    assert tap.usage == Usage(3, 0, 1) and tap.produced_output_tokens == 1


def test_chat_tap_with_line_endings_that_change_midway() -> None:
    stream = (sse(chat_chunk({"content": "abcd"}))
              + sse(chat_chunk({"content": "efgh"})).replace(b"\n", b"\r\n")
              + CHAT_USAGE_EVENT + CHAT_DONE)
    fed, finished, tap = every_split(chat_tap(False), stream)
    assert fed == stream[: -len(CHAT_USAGE_EVENT + CHAT_DONE)]
    assert finished == CHAT_DONE
    assert tap.usage == Usage(12, 4, 7) and tap.produced_output_tokens == 2


def test_completions_tap_counts_text_deltas() -> None:
    stream = sse({"object": "text_completion", "choices": [{"text": "tok ", "index": 0}]},
                 {"object": "text_completion", "choices": [{"text": "tok tok ", "index": 0}]},
                 {"object": "text_completion", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
                 "[DONE]")
    tap = COMPLETIONS.stream_tap(client_wants_usage=False, usage_extra=add_cost)
    fed, finished, tap = every_split(lambda: COMPLETIONS.stream_tap(client_wants_usage=False,
                                                                    usage_extra=add_cost), stream)
    assert b'"choices":[]' not in fed and finished == CHAT_DONE
    assert tap.usage == Usage(2, 0, 3) and tap.produced_output_tokens == 3


ANTHROPIC_START = {"type": "message_start", "message": {
    "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude",
    "usage": {"input_tokens": 25, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
              "output_tokens": 1}}}
ANTHROPIC_DELTAS = [
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " there friend"}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"q\":"}},
    {"type": "content_block_stop", "index": 0},
]
ANTHROPIC_DELTA = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}
ANTHROPIC_STOP = sse({"type": "message_stop"}, names=True)
ANTHROPIC_HEAD = sse(ANTHROPIC_START, *ANTHROPIC_DELTAS, names=True)
ANTHROPIC_STREAM = ANTHROPIC_HEAD + sse(ANTHROPIC_DELTA, names=True) + ANTHROPIC_STOP


def anthropic_tap() -> StreamTap:
    return MESSAGES.stream_tap(client_wants_usage=False, usage_extra=add_cost)


def test_anthropic_tap_usage_cost_and_held_message_stop() -> None:
    fed, finished, tap = every_split(anthropic_tap, ANTHROPIC_STREAM)
    assert finished == ANTHROPIC_STOP
    assert fed.startswith(ANTHROPIC_HEAD)
    delta_event = fed[len(ANTHROPIC_HEAD):]
    assert delta_event.startswith(b"event: message_delta\ndata: ")
    assert b'"cost":0.0000045' in delta_event
    payload = json.loads(delta_event.split(b"data: ", 1)[1], parse_float=Decimal)
    assert payload["usage"] == {"output_tokens": 15, "cost": COST}
    assert tap.completed
    assert tap.usage == Usage(2125, 2000, 15, cache_write_5m_tokens=100)
    assert tap.produced_output_tokens == 1 + 4 + 2


def test_anthropic_tap_cut_before_message_delta_charges_what_was_produced() -> None:
    fed, finished, tap = run(anthropic_tap, [ANTHROPIC_HEAD])
    assert fed == ANTHROPIC_HEAD and finished == b""
    assert not tap.completed
    assert tap.usage == Usage(2125, 2000, 7, cache_write_5m_tokens=100)


def test_anthropic_tap_takes_cumulative_input_from_message_delta() -> None:
    delta = {**ANTHROPIC_DELTA, "usage": {"input_tokens": 30, "output_tokens": 15}}
    _, _, tap = run(anthropic_tap, [ANTHROPIC_HEAD + sse(delta, names=True) + ANTHROPIC_STOP])
    assert tap.usage == Usage(2130, 2000, 15, cache_write_5m_tokens=100)


RESPONSE_USAGE = {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 32}, "output_tokens": 9,
                  "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 59}
RESPONSES_HEAD = sse(
    {"type": "response.created", "sequence_number": 0, "response": {"id": "r", "usage": None}},
    {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hello wor"},
    {"type": "response.output_text.delta", "sequence_number": 2, "delta": "ld"},
    {"type": "response.output_text.done", "sequence_number": 3, "text": "Hello world"},
    names=True)


@pytest.mark.parametrize("final", ["response.completed", "response.incomplete"])
def test_responses_tap_holds_the_final_event_with_usage_and_cost(final: str) -> None:
    terminal = {"type": final, "sequence_number": 4, "response": {"id": "r", "usage": RESPONSE_USAGE}}
    fed, finished, tap = every_split(
        lambda: RESPONSES.stream_tap(client_wants_usage=False, usage_extra=add_cost),
        RESPONSES_HEAD + sse(terminal, names=True))
    assert fed == RESPONSES_HEAD
    assert finished.startswith(f"event: {final}\ndata: ".encode())
    payload = json.loads(finished.split(b"data: ", 1)[1], parse_float=Decimal)
    assert payload["response"]["usage"] == {**RESPONSE_USAGE, "cost": COST}
    assert b'"cost":0.0000045' in finished
    assert tap.completed and tap.usage == Usage(50, 32, 9)
    assert tap.produced_output_tokens == 3 + 1


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(ANTHROPIC_STREAM)), max_size=12))
def test_any_chunking_gives_the_same_bytes(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(ANTHROPIC_STREAM)]
    pieces = [ANTHROPIC_STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert run(anthropic_tap, pieces)[:2] == run(anthropic_tap, [ANTHROPIC_STREAM])[:2]


def test_event_splitter_handles_cr_only_and_flush() -> None:
    splitter = EventSplitter()
    events = splitter.feed(b"event: a\rdata: 1\r\rdata: 2\r")
    assert [(e.name, e.data) for e in events] == [("a", "1")]
    # A CR at the end may be the first half of CRLF: the event waits for the next byte or the end.
    assert splitter.feed(b"\r") == []
    [second] = splitter.flush()
    assert second.data == "2"
    splitter.feed(b"data: [DONE]")
    [last] = splitter.flush()
    assert last.data == "[DONE]" and last.raw == b"data: [DONE]"


# -- exact JSON --------------------------------------------------------------------------------------

def test_dumps_writes_decimals_exactly() -> None:
    assert dumps({"cost": Decimal("4.5E-6"), "n": 1}) == b'{"cost":0.0000045,"n":1}'
    assert dumps({"cost": Decimal("12.500000000")}) == b'{"cost":12.500000000}'
    assert dumps({"seed": 2**70, "cost": Decimal("0.1")}) == b'{"seed":1180591620717411303424,"cost":0.1}'
    with pytest.raises(ValueError, match="not a JSON number"):
        dumps({"cost": Decimal("NaN")})


# -- token estimation ------------------------------------------------------------------------------

def test_fallback_rule() -> None:
    chat = FALLBACK["/v1/chat/completions"]
    assert chat.estimate_input_tokens({"messages": [{"role": "user", "content": "hello"}]}) == 3 + 4 + 2
    assert chat.estimate_input_tokens({"messages": [{"role": "user", "content": "héllo"}]}) == 3 + 4 + 2
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}}
    body: dict[str, Any] = {"messages": [{"role": "user", "content": [{"type": "text", "text": "abcdef"},
                                                                        image, image]}]}
    assert chat.estimate_input_tokens(body) == 3 + 4 + 2 + 2 * 1600
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = {"messages": USER, "tools": tools}
    assert chat.estimate_input_tokens(body) == 3 + 4 + 2 + 4 + -(-len(orjson.dumps(tools)) // 3)
    assert FALLBACK["/v1/embeddings"].estimate_input_tokens({"input": [[1, 2, 3], [4]]}) == 3 + 2 * 4 + 4


def eight_chars_a_token(text: str) -> int:
    """Fewer tokens than the chars/4 floor."""
    return -(-len(text) // 8)


def test_tokenizer_rule_keeps_the_chars_floor() -> None:
    per_char = build_endpoints(TokenEstimator(counter=len))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
    assert per_char["/v1/chat/completions"].estimate_input_tokens(body) == 3 + 4 + 5
    assert per_char["/v1/chat/completions"].estimate(body).floor == 5
    coarse = build_endpoints(TokenEstimator(counter=eight_chars_a_token))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 400}]}
    assert coarse["/v1/chat/completions"].estimate_input_tokens(body) == 3 + 4 + 100
    assert coarse["/v1/chat/completions"].estimate(body).floor == 50
    # A model whose tokenizer is not known gets the byte rule, and so does Anthropic.
    assert coarse["/v1/chat/completions"].estimate_input_tokens({**body, "model": "my-local-llm"}) == 3 + 4 + 134
    messages = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 400}]}
    assert coarse["/v1/messages"].estimate_input_tokens(messages) == 3 + 4 + 134


texts = st.text(max_size=300)
parts = st.one_of(
    texts.map(lambda t: {"type": "text", "text": t}),
    st.just({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
)
tool_calls = st.lists(st.fixed_dictionaries({"id": st.just("c"), "type": st.just("function"), "function":
                      st.fixed_dictionaries({"name": texts, "arguments": texts})}), max_size=2)
chat_messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]),
     "content": st.one_of(texts, st.lists(parts, max_size=3))},
    optional={"tool_calls": tool_calls, "name": texts}), min_size=1, max_size=5)
tool_lists = st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries(
    {"name": texts}, optional={"parameters": st.dictionaries(texts, texts, max_size=2)})}), max_size=2)
anthropic_blocks = st.lists(st.one_of(
    texts.map(lambda t: {"type": "text", "text": t}),
    st.builds(lambda n, q: {"type": "tool_use", "id": "t", "name": n, "input": {"q": q}}, texts, texts),
    st.builds(lambda c: {"type": "tool_result", "tool_use_id": "t", "content": c},
              st.one_of(texts, st.lists(texts.map(lambda t: {"type": "text", "text": t}), max_size=2))),
    st.just({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}),
), max_size=3)
prompts = st.one_of(texts, st.lists(texts, min_size=1, max_size=4),
                    st.lists(st.integers(0, 100_000), min_size=1, max_size=30),
                    st.lists(st.lists(st.integers(0, 100_000), min_size=1, max_size=9), min_size=1, max_size=3))
responses_items = st.lists(st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.one_of(
        texts, st.lists(texts.map(lambda t: {"type": "input_text", "text": t}), max_size=3))}),
    st.builds(lambda n, a: {"type": "function_call", "call_id": "c", "name": n, "arguments": a}, texts, texts),
    st.builds(lambda o: {"type": "function_call_output", "call_id": "c", "output": o}, texts),
), min_size=1, max_size=4)

bodies = st.one_of(
    st.builds(lambda m, t: ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": m, "tools": t}),
              chat_messages, tool_lists),
    st.builds(lambda s, m, t: ("/v1/messages", {"model": "m", "max_tokens": 9, "system": s, "tools": t,
                                                "messages": [{"role": "user", "content": c} for c in m]}),
              st.one_of(texts, anthropic_blocks), st.lists(st.one_of(texts, anthropic_blocks), min_size=1,
                                                           max_size=4), tool_lists),
    st.builds(lambda i, x: ("/v1/responses", {"model": "gpt-4o", "instructions": i, "input": x}),
              st.one_of(st.none(), texts), st.one_of(texts, responses_items)),
    st.builds(lambda p: ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": p}), prompts),
    st.builds(lambda p: ("/v1/embeddings", {"model": "text-embedding-3-small", "input": p}), prompts),
)
COARSE = build_endpoints(TokenEstimator(counter=eight_chars_a_token))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_estimate_is_never_below_the_mock_count(case: tuple[str, dict[str, Any]]) -> None:
    path, body = case
    reported = count_input_tokens(body, path)
    assert FALLBACK[path].estimate_input_tokens(body) >= reported
    assert COARSE[path].estimate_input_tokens(body) >= reported
    assert ENDPOINTS[path].estimate_input_tokens(body) >= reported


def test_usage_by_billed_type() -> None:
    """Each provider's billing dimensions come out as disjoint token types that add up to the totals."""
    anthropic = MESSAGES.usage_from_response({"usage": {
        "input_tokens": 10, "cache_read_input_tokens": 200, "cache_creation_input_tokens": 300,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
        "output_tokens": 40, "server_tool_use": {"web_search_requests": 2}, "service_tier": "priority"}})
    assert anthropic is not None
    assert anthropic.by_type() == {"input": 10, "cached_input": 200, "cache_write_5m": 100, "cache_write_1h": 200,
                                   "output": 40}
    assert (anthropic.input_tokens, anthropic.tool_calls, anthropic.service_tier) == (510, {"web_search": 2}, "priority")
    chat = CHAT.usage_from_response({"service_tier": "flex", "usage": {
        "prompt_tokens": 100, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 12}}})
    assert chat is not None and chat.service_tier == "flex"
    assert chat.by_type() == {"input": 35, "cached_input": 60, "audio": 5, "output": 18, "reasoning": 12}
    assert sum(chat.by_type().values()) == chat.input_tokens + chat.output_tokens
