"""Anthropic Messages wire format: messages, their event stream, models and error bodies.

Anthropic reports ``input_tokens`` without the cached part: a request of 100 input tokens of
which 40 were read from the cache reports ``input_tokens: 60, cache_read_input_tokens: 40``.
"""

from __future__ import annotations

from typing import Any

from costwarden.mock_upstream.ids import Stamp
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
    """Anthropic usage: ``input_tokens`` excludes ``cache_read_input_tokens``."""
    return {
        "input_tokens": plan.input_tokens - plan.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": plan.cached_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def _stop_reason(plan: Plan) -> str:
    return "max_tokens" if plan.truncated else "end_turn"


def message(plan: Plan, stamp: Stamp) -> dict[str, Any]:
    """A finished ``message`` object."""
    return {
        "id": stamp.id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": [{"type": "text", "text": OUTPUT_TOKEN * plan.output_tokens}],
        "stop_reason": _stop_reason(plan),
        "stop_sequence": None,
        "usage": usage(plan, plan.output_tokens),
    }


def stream(plan: Plan, stamp: Stamp) -> StreamScript:
    """message_start (input usage), content_block_start, ping, one content_block_delta per
    token, content_block_stop, message_delta (cumulative usage), message_stop."""
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
    head = b"".join((
        event_frame({"type": "message_start", "message": started}),
        event_frame({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        event_frame({"type": "ping"}),
    ))
    delta = event_frame({"type": "content_block_delta", "index": 0,
                         "delta": {"type": "text_delta", "text": OUTPUT_TOKEN}})
    final_usage = usage(plan, plan.output_tokens)
    del final_usage["cache_creation"], final_usage["service_tier"]
    tail = b"".join((
        event_frame({"type": "content_block_stop", "index": 0}),
        event_frame({"type": "message_delta",
                     "delta": {"stop_reason": _stop_reason(plan), "stop_sequence": None},
                     "usage": final_usage}),
        event_frame({"type": "message_stop"}),
    ))
    return StreamScript(head=head, token=constant(delta), tail=tail)


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
