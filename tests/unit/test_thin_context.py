"""Thin context (SPEC §12): the oldest turns go; the system prompt, the last user turn and tool
pairs stay; what is left is a valid conversation for each API."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from costwarden.errors import ContextLengthExceeded
from costwarden.providers import ENDPOINTS
from costwarden.providers.trimming import thin

MESSAGES = ENDPOINTS["/v1/messages"]
CHAT = ENDPOINTS["/v1/chat/completions"]
FILLER = "lorem ipsum dolor sit amet " * 40  # about 1,080 bytes


def measure_anthropic(body: Mapping[str, Any]) -> int:
    return MESSAGES.estimate(body).tokens


def measure_openai(body: Mapping[str, Any]) -> int:
    return CHAT.estimate(body, model="gpt-4o").tokens


def valid_anthropic(body: Mapping[str, Any]) -> None:
    """Starts with a user turn, alternates, and every tool_result answers a tool_use of the turn before."""
    messages = body["messages"]
    assert messages[0]["role"] == "user"
    for before, after in itertools.pairwise(messages):
        assert before["role"] != after["role"]
    for index, message in enumerate(messages):
        content = message["content"]
        results = [b["tool_use_id"] for b in content if b.get("type") == "tool_result"] \
            if isinstance(content, list) else []
        if results:
            previous = messages[index - 1]["content"]
            assert index > 0 and set(results) <= {b["id"] for b in previous if b.get("type") == "tool_use"}


def valid_openai(body: Mapping[str, Any]) -> None:
    """Every tool message follows the assistant message that called it (or its sibling results)."""
    open_calls: set[str] = set()
    for message in body["messages"]:
        if message["role"] == "tool":
            assert message["tool_call_id"] in open_calls
        else:
            open_calls = {call["id"] for call in message.get("tool_calls") or []}


def anthropic_agent(rounds: int) -> dict[str, Any]:
    """u, a(tool_use), u(tool_result), a, u, ... ending with a user turn."""
    messages: list[dict[str, Any]] = []
    for n in range(rounds):
        messages += [
            {"role": "user", "content": f"task {n}: {FILLER}"},
            {"role": "assistant", "content": [{"type": "text", "text": "looking"},
                                              {"type": "tool_use", "id": f"tu_{n}", "name": "lookup",
                                               "input": {"q": n}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"tu_{n}", "content": FILLER}]},
            {"role": "assistant", "content": f"done {n}: {FILLER}"},
        ]
    messages.append({"role": "user", "content": "final question"})
    return {"model": "claude-sonnet-4-5", "max_tokens": 50, "system": "SYSTEM " * 100, "messages": messages}


def openai_agent(rounds: int) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "SYSTEM " * 100}]
    for n in range(rounds):
        messages += [
            {"role": "user", "content": f"task {n}: {FILLER}"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{n}_{k}", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                for k in range(2)]},
            *({"role": "tool", "tool_call_id": f"call_{n}_{k}", "content": FILLER} for k in range(2)),
            {"role": "assistant", "content": f"done {n}: {FILLER}"},
        ]
    messages.append({"role": "user", "content": "final question"})
    return {"model": "gpt-4o", "messages": messages}


def test_a_request_that_fits_is_left_alone() -> None:
    body = anthropic_agent(2)
    done = thin(body, anthropic=True, limit=10**6, plan="gold", measure=measure_anthropic)
    assert done.body is body and done.removed_tokens == 0


@pytest.mark.parametrize("rounds", [3, 6])
def test_anthropic_keeps_system_last_turn_and_tool_pairs(rounds: int) -> None:
    body = anthropic_agent(rounds)
    total = measure_anthropic(body)
    limit = total * 2 // 3
    done = thin(body, anthropic=True, limit=limit, plan="gold", measure=measure_anthropic)
    kept = done.body["messages"]
    assert done.body["system"] == body["system"]
    assert kept[-1] == body["messages"][-1]
    assert kept == body["messages"][len(body["messages"]) - len(kept):]  # a run of the oldest went
    valid_anthropic(done.body)
    remaining = measure_anthropic(done.body)
    assert remaining <= limit and done.removed_tokens == total - remaining > 0
    # the fewest turns: keeping one more round would not fit
    longer = {**body, "messages": body["messages"][len(body["messages"]) - len(kept) - 4:]}
    assert measure_anthropic(longer) > limit


def test_openai_keeps_system_messages_and_tool_results_with_their_calls() -> None:
    body = openai_agent(5)
    total = measure_openai(body)
    done = thin(body, anthropic=False, limit=total // 2, plan="gold", measure=measure_openai)
    kept = done.body["messages"]
    assert kept[0] == body["messages"][0]  # the system message
    assert kept[1]["role"] == "user"
    assert kept[-1] == body["messages"][-1]
    valid_openai(done.body)
    assert measure_openai(done.body) <= total // 2
    assert done.removed_tokens == total - measure_openai(done.body)


def test_a_request_that_cannot_fit_is_refused_naming_the_plan() -> None:
    body = anthropic_agent(3)
    body["messages"][-1]["content"] = FILLER * 20  # the last user turn alone is too long
    with pytest.raises(ContextLengthExceeded) as refused:
        thin(body, anthropic=True, limit=2000, plan="gold", measure=measure_anthropic)
    assert "'gold'" in refused.value.message and "2000" in refused.value.message
    assert refused.value.status == 400 and refused.value.code == "context_length_exceeded"


def test_a_tool_result_as_last_turn_keeps_its_call_or_refuses() -> None:
    # u, a(tool_use), u(tool_result): the last user turn answers the call before it, and a
    # conversation cannot start with an assistant turn, so nothing can be dropped.
    body = anthropic_agent(1)
    body["messages"] = body["messages"][:3]
    with pytest.raises(ContextLengthExceeded):
        thin(body, anthropic=True, limit=100, plan="gold", measure=measure_anthropic)


def test_the_original_body_is_not_changed() -> None:
    body = openai_agent(4)
    messages = list(body["messages"])
    thin(body, anthropic=False, limit=measure_openai(body) // 2, plan="gold", measure=measure_openai)
    assert body["messages"] == messages
