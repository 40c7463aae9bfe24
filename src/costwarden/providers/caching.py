"""Prompt caching on the client's behalf (SPEC §12, ``prompt_caching: auto``).

**Anthropic** caches only what a request marks. On a Messages request that carries no
``cache_control`` anywhere, ``place_breakpoints`` marks the stable prefix with ephemeral (5 minute)
breakpoints, at most four, in prompt order:

1. the last tool definition (the tool list rarely changes between calls);
2. the last system block (a string system prompt becomes one text block), so calls that differ
   only in their question share it;
3. the end of the turn before the previous exchange (two messages before point 4), which the
   previous call of a growing conversation marked as its own point 4: this call reads it back;
4. the end of the turns before the final user turn (the message just before it: the last
   assistant turn), which the next call of the conversation reads.

The final user turn is the last message of role ``user`` (an assistant prefill may follow it);
it is never marked, since the next call's turn differs from it.

A breakpoint is placed only where the prefix up to it reaches the model's minimum cacheable
length (1,024 tokens; 2,048 for haiku models), judged on a conservative ``ceil(utf8 bytes / 4)``
per text: real tokenizers give English text more tokens than that, so a breakpoint is never
placed where the provider would refuse to cache (which would only cost a wasted marker).

**OpenAI** caches automatically, keyed by ``prompt_cache_key``: ``with_cache_key`` sets it to the
customer's id, so the customer's calls share one cache (and never another customer's).

A request with any client cache setting is returned unchanged: the client's choices win.
The input body is never mutated; what changes is copied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.providers.jsontext import dumps

EPHEMERAL: Mapping[str, str] = {"type": "ephemeral"}
MAX_BREAKPOINTS = 4
# The counting rule's fixed costs: per prompt and per message (system and tool list included).
PER_PROMPT, PER_MESSAGE = 3, 3
# Blocks Anthropic refuses a cache_control on.
_UNMARKABLE = frozenset({"thinking", "redacted_thinking"})
# OpenAI request fields that are a client's own cache setting.
OPENAI_CACHE_FIELDS = ("prompt_cache_key", "prompt_cache_retention")


def minimum_cacheable(model: str) -> int:
    """The shortest prefix, in tokens, Anthropic caches for ``model``."""
    return 2048 if "haiku" in model.lower() else 1024


def has_cache_control(value: Any) -> bool:
    """Whether a ``cache_control`` appears anywhere in ``value`` (tools, system, nested tool results)."""
    if isinstance(value, dict):
        return "cache_control" in value or any(has_cache_control(item) for item in value.values()
                                                if isinstance(item, dict | list))
    if isinstance(value, list):
        return any(has_cache_control(item) for item in value if isinstance(item, dict | list))
    return False


def text_tokens(value: Any) -> int:
    """Conservative tokens of a text, a content block or a list of them: ``ceil(utf8 bytes / 4)``
    of the texts, and of the compact JSON of anything else."""
    if isinstance(value, str):
        return (len(value.encode("utf-8", "surrogatepass")) + 3) // 4
    if isinstance(value, list):
        return sum(text_tokens(item) for item in value)
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "text":
            return text_tokens(value.get("text"))
        if kind == "tool_result":
            return text_tokens(value.get("content"))
        return (_json_len(value) + 3) // 4
    return 0


def place_breakpoints(body: Mapping[str, Any], model: str) -> dict[str, Any] | None:
    """``body`` (an Anthropic Messages request) with breakpoints on its stable prefix, or None
    when it is left as it is: the client set a cache setting, or no prefix is long enough."""
    if "cache_control" in body or any(has_cache_control(body.get(f)) for f in ("tools", "system", "messages")):
        return None
    minimum = minimum_cacheable(model)
    out = dict(body)
    placed = 0
    prefix = PER_PROMPT
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        prefix += PER_MESSAGE + (_json_len(tools) + 3) // 4
        if prefix >= minimum and isinstance(tools[-1], dict):
            out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": dict(EPHEMERAL)}]
            placed += 1
    system = body.get("system")
    if system and isinstance(system, str | list):
        prefix += PER_MESSAGE + text_tokens(system)
        if prefix >= minimum:
            blocks = [{"type": "text", "text": system}] if isinstance(system, str) else system
            marked = _mark_last(blocks)
            if marked is not None:
                out["system"] = marked
                placed += 1
    messages = body.get("messages")
    if isinstance(messages, list):
        placed += _mark_turns(out, messages, prefix, minimum, MAX_BREAKPOINTS - placed)
    return out if placed else None


def _mark_turns(out: dict[str, Any], messages: list[Any], prefix: int, minimum: int, room: int) -> int:
    """Mark the ends of the earlier turns (points 3 and 4) where the prefix is long enough."""
    final = next((i for i in range(len(messages) - 1, -1, -1)
                  if isinstance(messages[i], dict) and messages[i].get("role") == "user"), -1)
    ends = [end for end in (final - 3, final - 1) if end >= 0]
    copied: list[Any] | None = None
    placed = 0
    reached, tokens = 0, prefix
    for end in ends[-room:] if room > 0 else []:
        for message in messages[reached:end + 1]:
            content = message.get("content") if isinstance(message, dict) else None
            tokens += PER_MESSAGE + text_tokens(content)
        reached = end + 1
        message = messages[end]
        if tokens < minimum or not isinstance(message, dict):
            continue
        blocks = _blocks(message.get("content"))
        marked = _mark_last(blocks) if isinstance(blocks, list) else None
        if marked is None:
            continue
        # Every string content becomes its one text block, in every call: the same turn then has
        # the same form whether or not it carries this call's marker, so the prefix the previous
        # call wrote is byte for byte the prefix this call reads.
        copied = copied if copied is not None else [
            {**m, "content": _blocks(m["content"])} if isinstance(m, dict) and isinstance(m.get("content"), str)
            and m["content"] else m for m in messages]
        copied[end] = {**message, "content": marked}
        placed += 1
    if copied is not None:
        out["messages"] = copied
    return placed


def _blocks(content: Any) -> Any:
    """A string content as its one text block; anything else as it is."""
    return [{"type": "text", "text": content}] if isinstance(content, str) and content else content


def _mark_last(blocks: list[Any]) -> list[Any] | None:
    """A copy of ``blocks`` whose last markable block carries an ephemeral ``cache_control``."""
    for index in range(len(blocks) - 1, -1, -1):
        block = blocks[index]
        if not isinstance(block, dict) or block.get("type") in _UNMARKABLE:
            continue
        if block.get("type") == "text" and not block.get("text"):
            continue  # Anthropic refuses a cache_control on an empty text block
        return [*blocks[:index], {**block, "cache_control": dict(EPHEMERAL)}, *blocks[index + 1:]]
    return None


def with_cache_key(body: Mapping[str, Any], customer: str) -> dict[str, Any] | None:
    """``body`` (an OpenAI chat or Responses request) with ``prompt_cache_key`` set to
    ``customer``, or None when the client set a cache field of its own."""
    if any(body.get(name) is not None for name in OPENAI_CACHE_FIELDS):
        return None
    return {**body, "prompt_cache_key": customer}


def _json_len(value: Any) -> int:
    return len(dumps(value))
