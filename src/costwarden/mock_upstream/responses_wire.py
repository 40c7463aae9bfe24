"""OpenAI Responses API wire format: the response object and its semantic event stream.

A response whose output was stopped by ``max_output_tokens`` is ``incomplete`` (reason
``max_output_tokens``) and its stream ends with ``response.incomplete``, as the real API does;
otherwise the stream ends with ``response.completed``. Both final events carry the usage.
"""

from __future__ import annotations

from typing import Any

from costwarden.mock_upstream.ids import Stamp
from costwarden.mock_upstream.plan import Plan
from costwarden.mock_upstream.sse import StreamScript, event_frame
from costwarden.mock_upstream.stored import conversation_id

# Events before the first text delta: created, in_progress, output_item.added, content_part.added.
_HEAD_EVENTS = 4
_CALL_HEAD_EVENTS = 3  # a function call has no content part


def usage(plan: Plan) -> dict[str, Any]:
    """Responses usage; ``input_tokens`` includes the cached ones."""
    return {
        "input_tokens": plan.input_tokens,
        "input_tokens_details": {"cached_tokens": plan.cached_tokens},
        "output_tokens": plan.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": plan.input_tokens + plan.output_tokens,
    }


def _message(plan: Plan, stamp: Stamp, text: str | None) -> dict[str, Any]:
    """The output message item; ``text`` None gives the empty, in-progress item."""
    if text is None:
        return {"id": stamp.item_id, "type": "message", "status": "in_progress", "role": "assistant",
                "content": []}
    return {
        "id": stamp.item_id,
        "type": "message",
        "status": "incomplete" if plan.truncated else "completed",
        "role": "assistant",
        "content": [_part(text)],
    }


def _function_call(plan: Plan, stamp: Stamp, arguments: str | None) -> dict[str, Any]:
    """The output function_call item; ``arguments`` None gives the in-progress item."""
    call = plan.output.tool_call
    assert call is not None
    status = "in_progress" if arguments is None else ("incomplete" if plan.truncated else "completed")
    return {"id": "fc_" + stamp.item_id.removeprefix("msg_"), "type": "function_call", "status": status,
            "arguments": arguments or "", "call_id": "call_" + stamp.item_id.removeprefix("msg_"),
            "name": call.tool_name}


def _item(plan: Plan, stamp: Stamp, *, done: bool) -> dict[str, Any]:
    text = plan.output.text if done else None
    if plan.output.tool_call is not None:
        return _function_call(plan, stamp, text)
    return _message(plan, stamp, text)


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _text_config(body: dict[str, Any]) -> Any:
    text = body.get("text")
    return text if isinstance(text, dict) and "format" in text else {"format": {"type": "text"}}


def response(plan: Plan, stamp: Stamp, body: dict[str, Any], *, done: bool = True) -> dict[str, Any]:
    """A ``response`` object: finished (with output and usage), or just created."""
    status = ("incomplete" if plan.truncated else "completed") if done else "in_progress"
    return {
        "id": stamp.id,
        "object": "response",
        "created_at": stamp.created,
        "status": status,
        "background": False,
        "conversation": {"id": conversation_id(body)} if conversation_id(body) else None,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if done and plan.truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": plan.model,
        "output": [_item(plan, stamp, done=True)] if done else [],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": plan.service_tier,
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": _text_config(body),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": usage(plan) if done else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def stream(plan: Plan, stamp: Stamp, body: dict[str, Any]) -> StreamScript:
    """The event sequence, each event with its ``sequence_number``: text deltas for a message,
    ``response.function_call_arguments.delta`` fragments for a function call."""
    if plan.output.tool_call is not None:
        return _call_stream(plan, stamp, body)
    started = response(plan, stamp, body, done=False)
    location = {"item_id": stamp.item_id, "output_index": 0, "content_index": 0}
    head = b"".join(event_frame(event) for event in (
        {"type": "response.created", "sequence_number": 0, "response": started},
        {"type": "response.in_progress", "sequence_number": 1, "response": started},
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
         "item": _message(plan, stamp, None)},
        {"type": "response.content_part.added", "sequence_number": 3, **location, "part": _part("")},
    ))
    segment = plan.output.segments[-1]

    def token(index: int) -> bytes:
        return event_frame({"type": "response.output_text.delta", "sequence_number": _HEAD_EVENTS + index,
                            **location, "delta": segment.token(index), "logprobs": []})

    text = plan.output.text
    final = response(plan, stamp, body)
    seq = _HEAD_EVENTS + plan.output_tokens
    tail = b"".join(event_frame(event) for event in (
        {"type": "response.output_text.done", "sequence_number": seq, **location, "text": text,
         "logprobs": []},
        {"type": "response.content_part.done", "sequence_number": seq + 1, **location, "part": _part(text)},
        {"type": "response.output_item.done", "sequence_number": seq + 2, "output_index": 0,
         "item": final["output"][0]},
        {"type": "response.incomplete" if plan.truncated else "response.completed",
         "sequence_number": seq + 3, "response": final},
    ))
    return StreamScript(head=head, token=token, tail=tail)


def _call_stream(plan: Plan, stamp: Stamp, body: dict[str, Any]) -> StreamScript:
    started = response(plan, stamp, body, done=False)
    item = _function_call(plan, stamp, None)
    location = {"item_id": item["id"], "output_index": 0}
    head = b"".join(event_frame(event) for event in (
        {"type": "response.created", "sequence_number": 0, "response": started},
        {"type": "response.in_progress", "sequence_number": 1, "response": started},
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0, "item": item},
    ))
    segment = plan.output.segments[-1]

    def token(index: int) -> bytes:
        return event_frame({"type": "response.function_call_arguments.delta",
                            "sequence_number": _CALL_HEAD_EVENTS + index, **location,
                            "delta": segment.token(index)})

    final = response(plan, stamp, body)
    seq = _CALL_HEAD_EVENTS + plan.output_tokens
    tail = b"".join(event_frame(event) for event in (
        {"type": "response.function_call_arguments.done", "sequence_number": seq, **location,
         "arguments": segment.text},
        {"type": "response.output_item.done", "sequence_number": seq + 1, "output_index": 0,
         "item": final["output"][0]},
        {"type": "response.incomplete" if plan.truncated else "response.completed",
         "sequence_number": seq + 2, "response": final},
    ))
    return StreamScript(head=head, token=token, tail=tail)
