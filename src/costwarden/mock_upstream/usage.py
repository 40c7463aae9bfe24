"""Deterministic token accounting: the counting rule the package docstring states as a contract."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

REPLY_OVERHEAD = 3
"""Tokens added once per conversation (chat, responses, messages)."""

MESSAGE_OVERHEAD = 3
"""Tokens added per message, and per system prompt and tool list when present."""

DEFAULT_OUTPUT_TOKENS = 16
"""Output length when neither a directive nor a smaller output limit says otherwise."""

OUTPUT_TOKEN = "tok "
"""The text of one output token."""

# Accepted spellings of each endpoint, normalised to one kind.
_KINDS = {
    "chat/completions": "chat",
    "chat.completions": "chat",
    "chat": "chat",
    "completions": "completions",
    "embeddings": "embeddings",
    "responses": "responses",
    "messages": "messages",
    "messages/count_tokens": "messages",
}

# Output limit fields of each kind; the smallest one given applies.
_LIMIT_FIELDS = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "completions": ("max_tokens",),
    "responses": ("max_output_tokens",),
    "messages": ("max_tokens",),
    "embeddings": (),
}


def endpoint_kind(endpoint: str) -> str:
    """Normalise ``/v1/chat/completions``, ``chat/completions`` or ``chat.completions`` to a kind."""
    key = endpoint.strip("/")
    key = key.removeprefix("v1/")
    try:
        return _KINDS[key]
    except KeyError:
        raise ValueError(f"unknown endpoint {endpoint!r}") from None


def ceil4(chars: int) -> int:
    """ceil(chars / 4) in integers."""
    return (chars + 3) // 4


def count_input_tokens(body: Mapping[str, Any], endpoint: str) -> int:
    """The input tokens the mock upstream reports for ``body`` sent to ``endpoint``.

    ``endpoint`` is a path such as ``/v1/chat/completions`` or a short name (``chat``,
    ``completions``, ``embeddings``, ``responses``, ``messages``). Directives are not applied.
    """
    kind = endpoint_kind(endpoint)
    if kind == "completions":
        return sum(_item_tokens(item) for item in _items(body.get("prompt")))
    if kind == "embeddings":
        return sum(_item_tokens(item) for item in _items(body.get("input")))
    blocks = list(_conversation_texts(kind, body))
    return REPLY_OVERHEAD + sum(MESSAGE_OVERHEAD + ceil4(len(text)) for text in blocks)


def prompt_blocks(body: Mapping[str, Any], kind: str) -> list[str]:
    """The counted blocks of a chat, responses or messages body in prompt order: the tool list
    first (providers render tools ahead of the conversation, so a growing conversation keeps its
    prefix), then the system prompt and each message or item. Each block costs
    ``MESSAGE_OVERHEAD + ceil4(len(block))`` tokens, the prompt ``REPLY_OVERHEAD`` more."""
    blocks = list(_conversation_texts(kind, body))
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        blocks.insert(0, blocks.pop())
    return blocks


MEDIA_PARTS = frozenset({"image_url", "input_image", "file", "input_file", "input_audio", "image", "document"})
"""Content parts whose tokens the text rule cannot see: images, files, documents, audio."""


def count_media_parts(value: Any) -> int:
    """How many media parts a body holds, at any depth (a tool result's image counts too)."""
    if isinstance(value, list):
        return sum(count_media_parts(item) for item in value)
    if not isinstance(value, dict):
        return 0
    own = 1 if value.get("type") in MEDIA_PARTS else 0
    return own + sum(count_media_parts(item) for item in value.values() if isinstance(item, (list, dict)))


def _conversation_texts(kind: str, body: Mapping[str, Any]) -> Iterable[str]:
    """One text per counted block: the system prompt, each message or item, the tool list."""
    if kind == "messages" and body.get("system"):
        yield text_of(body["system"])
    if kind == "responses" and body.get("instructions"):
        yield text_of(body["instructions"])
    if kind == "responses":
        items = body.get("input")
        if isinstance(items, str):
            yield items
        elif isinstance(items, list):
            yield from (text_of(item) for item in items)
    else:
        messages = body.get("messages")
        if isinstance(messages, list):
            yield from (_message_text(message) for message in messages)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        yield compact_json(tools)


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    text = text_of(message.get("content"))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                text += _str(function.get("name")) + _str(function.get("arguments"))
    return text


def text_of(value: Any) -> str:
    """Every counted string in a content value, concatenated in order."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(text_of(item) for item in value)
    if isinstance(value, dict):
        return _part_text(value)
    return ""


def _part_text(part: Mapping[str, Any]) -> str:
    kind = part.get("type")
    if kind in ("tool_use", "server_tool_use"):
        return _str(part.get("name")) + compact_json(part.get("input", {}))
    if kind == "function_call":
        return _str(part.get("name")) + _str(part.get("arguments"))
    if kind == "function_call_output":
        return text_of(part.get("output"))
    return _str(part.get("text")) + text_of(part.get("content"))


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def compact_json(value: Any) -> str:
    """JSON without whitespace, keys in the order given, non-ASCII characters kept as they are."""
    return orjson.dumps(value).decode()


def _items(value: Any) -> list[Any]:
    """The input items of a completions prompt or an embeddings input."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return [value]  # one token array
        return value
    return [value]


def _item_tokens(item: Any) -> int:
    if isinstance(item, str):
        return max(1, ceil4(len(item)))
    if isinstance(item, list):
        return max(1, len(item))  # a token array counts its tokens
    return 1


def output_limit(body: Mapping[str, Any], kind: str) -> int | None:
    """The smallest output limit the body gives, or None. Raises ValueError on a bad value."""
    limits: list[int] = []
    for field in _LIMIT_FIELDS[kind]:
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field} must be an integer of at least 1")
        limits.append(value)
    return min(limits) if limits else None


def last_user_text(body: Mapping[str, Any], kind: str) -> str:
    """The text of the last user message (or the last prompt / input string), where directives live."""
    if kind in ("completions", "embeddings"):
        strings = [v for v in _items(body.get("prompt" if kind == "completions" else "input"))
                   if isinstance(v, str)]
        return strings[-1] if strings else ""
    items = body.get("input") if kind == "responses" else body.get("messages")
    if isinstance(items, str):
        return items
    if isinstance(items, list):
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                return text_of(item.get("content"))
    return ""
