"""Anthropic Messages wire format: messages, their event stream, models and error bodies.

Anthropic reports ``input_tokens`` without the cached part: a request of 100 input tokens of
which 40 were read from the cache reports ``input_tokens: 60, cache_read_input_tokens: 40``.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import orjson

from costwarden.mock_upstream.ids import Stamp
from costwarden.mock_upstream.output import Segment, SegmentKind
from costwarden.mock_upstream.plan import Plan
from costwarden.mock_upstream.sse import StreamScript, constant, event_frame
from costwarden.mock_upstream.usage import OUTPUT_TOKEN

MODELS = (
    ("claude-opus-4-6", "Claude Opus 4.6"),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
)
MODELS_CREATED_AT = "2025-01-01T00:00:00Z"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    """Anthropic usage: ``input_tokens`` excludes the cache reads and writes."""
    writes = plan.cache_write_5m + plan.cache_write_1h
    return {
        "input_tokens": plan.input_tokens - plan.cached_tokens - writes,
        "cache_creation_input_tokens": writes,
        "cache_read_input_tokens": plan.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": plan.cache_write_5m,
                           "ephemeral_1h_input_tokens": plan.cache_write_1h},
        "output_tokens": output_tokens,
        "service_tier": plan.service_tier,
    }


def _stop_reason(plan: Plan) -> str:
    if plan.truncated:
        return "max_tokens"
    return "tool_use" if plan.output.tool_call is not None else "end_turn"


def signature(stamp: Stamp) -> str:
    """The opaque signature of a thinking block."""
    return "c2lnbmF0dXJl" + stamp.item_id.removeprefix("msg_")


def tool_use_id(stamp: Stamp) -> str:
    """The id of the answer's tool_use block."""
    return "toolu_01" + stamp.item_id.removeprefix("msg_")


def _block(segment: Segment, stamp: Stamp, *, done: bool) -> dict[str, Any]:
    """A content block, finished or as ``content_block_start`` announces it."""
    if segment.kind is SegmentKind.THINKING:
        return {"type": "thinking", "thinking": segment.text if done else "",
                "signature": signature(stamp) if done else ""}
    if segment.kind is SegmentKind.TOOL_CALL:
        return {"type": "tool_use", "id": tool_use_id(stamp), "name": segment.tool_name,
                "input": _arguments(segment.text) if done else {}}
    return {"type": "text", "text": segment.text if done else ""}


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}  # cut by max_tokens


def _delta(segment: Segment, text: str) -> dict[str, Any]:
    if segment.kind is SegmentKind.THINKING:
        return {"type": "thinking_delta", "thinking": text}
    if segment.kind is SegmentKind.TOOL_CALL:
        return {"type": "input_json_delta", "partial_json": text}
    return {"type": "text_delta", "text": text}


def message(plan: Plan, stamp: Stamp) -> dict[str, Any]:
    """A finished ``message`` object."""
    return {
        "id": stamp.id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [_block(segment, stamp, done=True) for segment in _shown(plan)],
        "stop_reason": _stop_reason(plan),
        "stop_sequence": None,
        "usage": usage(plan, plan.output_tokens),
    }


def _shown(plan: Plan) -> list[Segment]:
    """The segments that become blocks: a thinking block the limit cut to nothing is left out."""
    return [s for s in plan.output.segments if s.tokens or s is plan.output.segments[-1]]


def stream(plan: Plan, stamp: Stamp) -> StreamScript:
    """message_start (input usage), then per block content_block_start, one delta per token
    (``signature_delta`` closing a thinking block), content_block_stop; a ping after the first
    block starts; message_delta (cumulative usage), message_stop."""
    started: dict[str, Any] = {
        "id": stamp.id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        # the real API reports a small provisional output count here; the final one is in message_delta
        "usage": usage(plan, min(1, plan.output_tokens)),
    }
    segments = _shown(plan)

    def opening(index: int) -> bytes:
        return event_frame({"type": "content_block_start", "index": index,
                            "content_block": _block(segments[index], stamp, done=False)})

    def closing(index: int) -> bytes:
        frames = b""
        if segments[index].kind is SegmentKind.THINKING:
            frames = event_frame({"type": "content_block_delta", "index": index,
                                  "delta": {"type": "signature_delta", "signature": signature(stamp)}})
        return frames + event_frame({"type": "content_block_stop", "index": index})

    head = event_frame({"type": "message_start", "message": started}) + opening(0) + event_frame({"type": "ping"})
    final_usage = usage(plan, plan.output_tokens)
    del final_usage["cache_creation"], final_usage["service_tier"]
    last = len(segments) - 1
    # a last block without tokens opens (after the one before it closes) only as the stream ends
    tail = closing(last - 1) + opening(last) if last and not segments[last].tokens else b""
    tail += closing(last) + b"".join((
        event_frame({"type": "message_delta",
                     "delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
                     "usage": final_usage}),
        event_frame({"type": "message_stop"}),
    ))
    if len(segments) == 1 and segments[0].filler:  # the common case: one frame for every token
        return StreamScript(head=head, token=constant(event_frame(
            {"type": "content_block_delta", "index": 0, "delta": _delta(segments[0], OUTPUT_TOKEN)})), tail=tail)
    starts = list(itertools.accumulate((s.tokens for s in segments), initial=0))

    def token(event: int) -> bytes:
        index = bisect.bisect_right(starts, event) - 1
        position = event - starts[index]
        frame = event_frame({"type": "content_block_delta", "index": index,
                             "delta": _delta(segments[index], segments[index].token(position))})
        if position == 0 and index > 0:
            frame = closing(index - 1) + opening(index) + frame
        return frame

    return StreamScript(head=head, token=token, tail=tail)


def count_tokens(plan: Plan) -> dict[str, Any]:
    """The ``/v1/messages/count_tokens`` answer."""
    return {"input_tokens": plan.input_tokens}


def models() -> dict[str, Any]:
    """Anthropic's models list (sent when the request carries ``anthropic-version``)."""
    data = [{"type": "model", "id": model, "display_name": name, "created_at": MODELS_CREATED_AT}
            for model, name in MODELS]
    return {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}


def error(status: int, message: str, request_id: str) -> dict[str, Any]:
    """Anthropic's error body ``{"type": "error", "error": {"type", "message"}, "request_id"}``."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
