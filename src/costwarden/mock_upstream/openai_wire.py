"""OpenAI wire format: chat completions, completions, embeddings, models and error bodies.

The Responses API lives in ``responses_wire``. Bodies follow the public API reference; the
optional fields real responses carry are included so that clients parsing them strictly work.
"""

from __future__ import annotations

import array
import base64
from functools import lru_cache
from typing import Any

from costwarden.mock_upstream.ids import Stamp
from costwarden.mock_upstream.plan import Plan
from costwarden.mock_upstream.sse import DONE, StreamScript, constant, data_frame
from costwarden.mock_upstream.usage import OUTPUT_TOKEN

FINGERPRINT = "fp_mock"

MODELS = (
    ("gpt-4o", "system"),
    ("gpt-4o-mini", "system"),
    ("gpt-4.1", "system"),
    ("gpt-4.1-mini", "system"),
    ("o3-mini", "system"),
    ("gpt-3.5-turbo-instruct", "system"),
    ("text-embedding-3-small", "system"),
    ("text-embedding-3-large", "system"),
)
MODELS_CREATED = 1_700_000_000

_ERROR_TYPES = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def usage(plan: Plan) -> dict[str, Any]:
    """Chat / completions usage; ``prompt_tokens`` includes the cached ones."""
    return {
        "prompt_tokens": plan.input_tokens,
        "completion_tokens": plan.output_tokens,
        "total_tokens": plan.input_tokens + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish(plan: Plan) -> str:
    if plan.truncated:
        return "length"
    return "tool_calls" if plan.output.tool_call is not None and not plan.output.forced_tool else "stop"


def call_id(stamp: Stamp) -> str:
    """The id of the answer's tool call."""
    return "call_" + stamp.item_id.removeprefix("msg_")


def _message(plan: Plan, stamp: Stamp) -> dict[str, Any]:
    call = plan.output.tool_call
    if call is None:
        return {"role": "assistant", "content": plan.output.text, "refusal": None, "annotations": []}
    return {"role": "assistant", "content": None, "refusal": None, "annotations": [],
            "tool_calls": [{"id": call_id(stamp), "type": "function",
                            "function": {"name": call.tool_name, "arguments": call.text}}]}


def chat_completion(plan: Plan, stamp: Stamp) -> dict[str, Any]:
    """A ``chat.completion`` object with ``n`` identical choices."""
    message = _message(plan, stamp)
    finish = _finish(plan)
    return {
        "id": stamp.id,
        "object": "chat.completion",
        "created": stamp.created,
        "model": plan.model,
        "choices": [{"index": index, "message": message, "logprobs": None, "finish_reason": finish}
                    for index in range(plan.choices)],
        "usage": usage(plan),
        "service_tier": plan.service_tier,
        "system_fingerprint": FINGERPRINT,
    }


def chat_stream(plan: Plan, stamp: Stamp) -> StreamScript:
    """``chat.completion.chunk`` events: a role chunk per choice, one chunk per token (the
    choices' tokens interleaved; a tool call's as ``tool_calls`` argument fragments), a finish
    chunk per choice, the usage chunk (``choices: []``) when ``stream_options.include_usage``,
    then ``[DONE]``."""

    def chunk(choices: list[dict[str, Any]]) -> bytes:
        payload: dict[str, Any] = {
            "id": stamp.id,
            "object": "chat.completion.chunk",
            "created": stamp.created,
            "model": plan.model,
            "service_tier": plan.service_tier,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if plan.include_usage:
            payload["usage"] = None  # every chunk but the last carries a null usage
        return data_frame(payload)

    def choice(index: int, delta: dict[str, Any], finish: str | None) -> list[dict[str, Any]]:
        return [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]

    call = plan.output.tool_call
    first: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    if call is not None:
        first = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"index": 0, "id": call_id(stamp), "type": "function",
             "function": {"name": call.tool_name, "arguments": ""}}]}
    n = plan.choices
    head = b"".join(chunk(choice(index, first, None)) for index in range(n))
    tail = b"".join(chunk(choice(index, {}, _finish(plan))) for index in range(n))
    if plan.include_usage:
        tail += data_frame({
            "id": stamp.id,
            "object": "chat.completion.chunk",
            "created": stamp.created,
            "model": plan.model,
            "service_tier": plan.service_tier,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage(plan),
        })
    segment = plan.output.segments[-1]

    def delta(text: str) -> dict[str, Any]:
        if call is None:
            return {"content": text}
        return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}

    if segment.filler and n == 1:
        token = constant(chunk(choice(0, delta(OUTPUT_TOKEN), None)))
    else:
        fillers = [chunk(choice(index, delta(OUTPUT_TOKEN), None)) for index in range(n)] if segment.filler else []

        def token(event: int) -> bytes:
            index, position = event % n, event // n
            if fillers:
                return fillers[index]
            return chunk(choice(index, delta(segment.token(position)), None))

    return StreamScript(head=head, token=token, tail=tail + DONE)


def completion(plan: Plan, stamp: Stamp) -> dict[str, Any]:
    """A legacy ``text_completion`` object."""
    return {
        "id": stamp.id,
        "object": "text_completion",
        "created": stamp.created,
        "model": plan.model,
        "choices": [{"text": plan.output.text, "index": 0, "logprobs": None,
                     "finish_reason": _finish(plan)}],
        "usage": usage(plan),
        "system_fingerprint": FINGERPRINT,
    }


def completion_stream(plan: Plan, stamp: Stamp) -> StreamScript:
    """``text_completion`` chunks, the usage chunk when asked for, then ``[DONE]``."""

    def chunk(text: str, finish: str | None) -> bytes:
        return data_frame({
            "id": stamp.id,
            "object": "text_completion",
            "created": stamp.created,
            "model": plan.model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "system_fingerprint": FINGERPRINT,
        })

    tail = chunk("", _finish(plan))
    if plan.include_usage:
        tail += data_frame({
            "id": stamp.id,
            "object": "text_completion",
            "created": stamp.created,
            "model": plan.model,
            "choices": [],
            "usage": usage(plan),
            "system_fingerprint": FINGERPRINT,
        })
    return StreamScript(head=b"", token=constant(chunk(OUTPUT_TOKEN, None)), tail=tail + DONE)


def embeddings(plan: Plan, body: dict[str, Any]) -> dict[str, Any]:
    """An embeddings ``list``: one vector per input item, as floats or base64 little-endian float32."""
    items = body["input"]
    count = len(items) if isinstance(items, list) and not all(isinstance(v, int) for v in items) else 1
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
        dimensions = 3072 if plan.model.endswith("-large") else 1536
    as_base64 = body.get("encoding_format") == "base64"
    vector: Any = _vector_base64(dimensions) if as_base64 else list(_vector(dimensions))
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(count)],
        "model": plan.model,
        "usage": {"prompt_tokens": plan.input_tokens, "total_tokens": plan.input_tokens},
    }


@lru_cache(maxsize=16)
def _vector(dimensions: int) -> tuple[float, ...]:
    # float32 values, so that the float and base64 encodings decode to the same numbers
    values = array.array("f", (((i * 7919) % 2000) / 1000.0 - 1.0 for i in range(dimensions)))
    return tuple(values.tolist())


@lru_cache(maxsize=16)
def _vector_base64(dimensions: int) -> str:
    values = array.array("f", _vector(dimensions))
    if values.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte floats
        raise RuntimeError("float32 array items are not 4 bytes")
    data = values.tobytes() if _little_endian() else _swapped(values)
    return base64.b64encode(data).decode()


def _little_endian() -> bool:
    return array.array("H", [1]).tobytes() == b"\x01\x00"


def _swapped(values: array.array[float]) -> bytes:  # pragma: no cover - big-endian hosts
    copy = array.array("f", values)
    copy.byteswap()
    return copy.tobytes()


def models() -> dict[str, Any]:
    """The models list."""
    return {
        "object": "list",
        "data": [{"id": model, "object": "model", "created": MODELS_CREATED, "owned_by": owner}
                 for model, owner in MODELS],
    }


def error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``."""
    if status in _ERROR_TYPES:
        kind, code = _ERROR_TYPES[status]
    elif status >= 500:
        kind, code = "server_error", None
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
