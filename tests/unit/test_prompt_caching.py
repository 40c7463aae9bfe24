"""Prompt caching breakpoints (SPEC §12, ``prompt_caching: auto``): where they go, and never over
a client's own cache settings."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from costwarden.mock_upstream.prompt_cache import AnthropicCache
from costwarden.providers.caching import (
    MAX_BREAKPOINTS,
    minimum_cacheable,
    place_breakpoints,
    with_cache_key,
)

LONG = "You are a careful assistant for Acme's billing desk. " * 120  # about 6,400 bytes: > 1,024 tokens
SHORT = "Be brief."
EPHEMERAL = {"type": "ephemeral"}


def conversation(turns: int, system: Any = LONG, text: str = "a question about invoices " * 10) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"{turn}: {text}"})
        messages.append({"role": "assistant", "content": f"answer {turn}: {text}"})
    messages.append({"role": "user", "content": "the final question"})
    return {"model": "claude-sonnet-4-5", "max_tokens": 100, "system": system, "messages": messages}


def marks(body: dict[str, Any]) -> list[str]:
    """Where the cache_control markers are, as readable paths."""
    found = []
    for index, tool in enumerate(body.get("tools") or []):
        if "cache_control" in tool:
            found.append(f"tools[{index}]")
    system = body.get("system")
    for index, block in enumerate(system if isinstance(system, list) else []):
        if "cache_control" in block:
            found.append(f"system[{index}]")
    for m, message in enumerate(body["messages"]):
        content = message["content"]
        for b, block in enumerate(content if isinstance(content, list) else []):
            if "cache_control" in block:
                found.append(f"messages[{m}][{b}]")
    return found


def test_system_prompt_and_earlier_turns_are_marked() -> None:
    body = conversation(3)  # u a u a u a u: 7 messages
    before = copy.deepcopy(body)
    out = place_breakpoints(body, "claude-sonnet-4-5")
    assert out is not None
    assert body == before  # the client's body is not touched
    assert out["system"] == [{"type": "text", "text": LONG, "cache_control": EPHEMERAL}]
    assert marks(out) == ["system[0]", "messages[3][0]", "messages[5][0]"]
    assert out["messages"][5]["content"] == [{"type": "text", "text": before["messages"][5]["content"],
                                             "cache_control": EPHEMERAL}]
    # the final user turn is never marked; string contents become their one text block, so
    # that a turn has the same form in every call of the conversation
    assert out["messages"][-1] == {"role": "user", "content": [{"type": "text", "text": "the final question"}]}


def test_tools_get_a_breakpoint_when_long_enough_and_never_more_than_four() -> None:
    tools = [{"name": f"tool_{i}", "description": LONG[:2000], "input_schema": {"type": "object"}}
             for i in range(3)]
    body = {**conversation(4), "tools": tools}
    out = place_breakpoints(body, "claude-sonnet-4-5")
    assert out is not None
    assert marks(out) == ["tools[2]", "system[0]", "messages[5][0]", "messages[7][0]"]
    assert len(marks(out)) == MAX_BREAKPOINTS
    assert "cache_control" not in tools[2]


def test_nothing_is_marked_below_the_minimum() -> None:
    assert place_breakpoints(conversation(1, system=SHORT, text="hi"), "claude-sonnet-4-5") is None
    # haiku needs 2,048 tokens: the same 1,600-token prefix is enough for sonnet only
    body = conversation(0, system="x" * 6400)
    assert place_breakpoints(body, "claude-sonnet-4-5") is not None
    assert place_breakpoints(body, "claude-haiku-4-5") is None
    assert (minimum_cacheable("claude-3-5-haiku-latest"), minimum_cacheable("claude-opus-4-1")) == (2048, 1024)


def test_the_prefix_counts_toward_later_breakpoints() -> None:
    # A short system prompt is not marked, but the turns after it reach the minimum together.
    body = conversation(3, system=SHORT, text="word " * 400)  # each message about 500 tokens
    out = place_breakpoints(body, "claude-sonnet-4-5")
    assert out is not None
    assert out["system"] == SHORT
    assert marks(out) == ["messages[3][0]", "messages[5][0]"]


@pytest.mark.parametrize("where", ["tool", "system", "message", "tool_result", "top"])
def test_a_client_cache_setting_anywhere_leaves_the_request_untouched(where: str) -> None:
    body = conversation(3)
    body["system"] = [{"type": "text", "text": LONG}]
    body["tools"] = [{"name": "t", "input_schema": {"type": "object"}}]
    control = {"type": "ephemeral", "ttl": "1h"}
    if where == "tool":
        body["tools"][0]["cache_control"] = control
    elif where == "system":
        body["system"][0]["cache_control"] = control
    elif where == "message":
        body["messages"][0]["content"] = [{"type": "text", "text": "hi", "cache_control": control}]
    elif where == "tool_result":
        body["messages"][2]["content"] = [{"type": "tool_result", "tool_use_id": "x", "content": [
            {"type": "text", "text": "r", "cache_control": control}]}]
    else:
        body["cache_control"] = control
    assert place_breakpoints(body, "claude-sonnet-4-5") is None


def test_thinking_and_empty_blocks_are_not_marked() -> None:
    body = conversation(1)
    body["messages"][1]["content"] = [{"type": "text", "text": "visible"},
                                      {"type": "thinking", "thinking": "hmm", "signature": "s"}]
    out = place_breakpoints(body, "claude-sonnet-4-5")
    assert out is not None
    assert out["messages"][1]["content"][0]["cache_control"] == EPHEMERAL
    assert "cache_control" not in out["messages"][1]["content"][1]


def test_a_growing_conversation_reads_what_the_previous_call_wrote() -> None:
    """Against the mock's Anthropic cache: call k+1 reads the prefix call k wrote."""
    now = [0.0]
    cache = AnthropicCache(lambda: now[0])
    reads, writes = [], []
    for turns in range(1, 6):
        out = place_breakpoints(conversation(turns), "claude-sonnet-4-5")
        assert out is not None
        used = cache.use(out, "claude-sonnet-4-5")
        reads.append(used.read)
        writes.append(used.write_5m)
        now[0] += 10
    assert reads[0] == 0 and all(read > 0 for read in reads[1:])
    assert all(later > earlier for earlier, later in itertools.pairwise(reads[1:]))
    assert all(write < writes[0] for write in writes[1:])  # only the new turns are written


def test_openai_cache_key_is_the_customer_unless_the_client_set_one() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert with_cache_key(body, "ACME") == {**body, "prompt_cache_key": "ACME"}
    assert "prompt_cache_key" not in body
    assert with_cache_key({**body, "prompt_cache_key": "mine"}, "ACME") is None
    assert with_cache_key({**body, "prompt_cache_retention": "24h"}, "ACME") is None


def test_an_assistant_prefill_is_not_taken_for_an_earlier_turn() -> None:
    body = conversation(3)
    body["messages"].append({"role": "assistant", "content": "Sure, "})  # a prefill after the final user turn
    out = place_breakpoints(body, "claude-sonnet-4-5")
    assert out is not None
    assert marks(out) == ["system[0]", "messages[3][0]", "messages[5][0]"]
