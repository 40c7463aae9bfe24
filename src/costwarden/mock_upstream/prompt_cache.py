"""Prompt caching as the providers do it, per mock instance, on the mock's clock.

**Anthropic** caches explicitly. A content block (a tool, a system block, a message's content
block) marked ``cache_control: {"type": "ephemeral"}`` (5 minutes) or with ``"ttl": "1h"`` is a
breakpoint: the prompt up to it, in the order tools, system, messages, may be cached. A request
reads the longest cached prefix ending at a breakpoint or at any of the 20 block boundaries before
one, which refreshes that entry's lifetime; every later breakpoint whose prefix reaches the
model's minimum (2,048 tokens for haiku models, 1,024 for others) is written, the tokens between
it and the previous point counted as a write of that breakpoint's TTL. A prefix's tokens follow
the counting rule: whole blocks before it, and the part of its own message up to the breakpoint.

**OpenAI** caches automatically. A prompt of at least 1,024 tokens reports as cached the longest
prefix it shares with a prompt seen before (within 10 minutes of that prompt's last use), rounded
down to a multiple of 128 tokens, and is remembered for later prompts. Prompts are compared block
by block (tools first, then messages); within the first block that differs, by the characters they
share. ``prompt_cache_key`` keeps separate caches; so does each model.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from costwarden.mock_upstream.usage import (
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    ceil4,
    compact_json,
    prompt_blocks,
    text_of,
)

Clock = Callable[[], float]
TTL_S = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_BLOCKS = 20
OPENAI_MINIMUM = 1024
OPENAI_INCREMENT = 128
OPENAI_IDLE_S = 600.0
MAX_ENTRIES = 4096  # per cache; the oldest go first


def anthropic_minimum(model: str) -> int:
    """The shortest prefix Anthropic caches for ``model``."""
    return 2048 if "haiku" in model else 1024


@dataclass(frozen=True, slots=True)
class CacheUse:
    """Tokens of one prompt read from the cache and written to it (by TTL)."""

    read: int = 0
    write_5m: int = 0
    write_1h: int = 0


NO_CACHE = CacheUse()


@dataclass(frozen=True, slots=True)
class _Boundary:
    key: bytes  # identifies the prompt up to here (cache markers left out)
    tokens: int  # the prompt's tokens up to here
    ttl: str | None  # the breakpoint's TTL, or None for a plain block boundary


class AnthropicCache:
    """Prefixes written by ``cache_control`` breakpoints, each alive until its expiry."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._expiry: OrderedDict[bytes, tuple[float, str]] = OrderedDict()

    def clear(self) -> None:
        """Forget every entry."""
        self._expiry.clear()

    def use(self, body: Mapping[str, Any], model: str) -> CacheUse:
        """Read and write the cache for one request; what it read and wrote."""
        if not _marked(body):  # most requests: skip hashing the prompt
            return NO_CACHE
        boundaries = _anthropic_boundaries(body, model)
        marks = [i for i, b in enumerate(boundaries) if b.ttl is not None]
        if not marks:
            return CacheUse()
        now = self._clock()
        read_at = self._longest_live(boundaries, marks, now)
        read = boundaries[read_at].tokens if read_at is not None else 0
        if read_at is not None:
            self._put(boundaries[read_at].key, now, self._expiry[boundaries[read_at].key][1])
        writes = {"5m": 0, "1h": 0}
        base, minimum = read, anthropic_minimum(model)
        for index in marks:
            boundary = boundaries[index]
            if (read_at is not None and index <= read_at) or boundary.tokens < minimum:
                continue
            assert boundary.ttl is not None
            writes[boundary.ttl] += boundary.tokens - base
            base = boundary.tokens
            self._put(boundary.key, now, boundary.ttl)
        return CacheUse(read=read, write_5m=writes["5m"], write_1h=writes["1h"])

    def _longest_live(self, boundaries: list[_Boundary], marks: list[int], now: float) -> int | None:
        candidates = {i for mark in marks for i in range(max(0, mark - LOOKBACK_BLOCKS), mark + 1)}
        for index in sorted(candidates, reverse=True):
            entry = self._expiry.get(boundaries[index].key)
            if entry is not None and entry[0] > now:
                return index
        return None

    def _put(self, key: bytes, now: float, ttl: str) -> None:
        self._expiry[key] = (now + TTL_S[ttl], ttl)
        self._expiry.move_to_end(key)
        while len(self._expiry) > MAX_ENTRIES:
            self._expiry.popitem(last=False)


def _anthropic_boundaries(body: Mapping[str, Any], model: str) -> list[_Boundary]:
    """Every content-block boundary of the prompt, in order, with its prefix's tokens."""
    out: list[_Boundary] = []
    chain = hashlib.sha256(model.encode())
    before = REPLY_OVERHEAD  # tokens of the whole blocks already passed

    def mark(part: Any, tokens: int) -> None:
        chain.update(compact_json(_unmarked(part)).encode() + b"\x00")
        out.append(_Boundary(chain.copy().digest(), tokens, _ttl(part)))

    tools = _list(body.get("tools"))
    for index, tool in enumerate(tools):
        mark(tool, before + MESSAGE_OVERHEAD + ceil4(len(compact_json(tools[: index + 1]))))
    if tools:
        before += MESSAGE_OVERHEAD + ceil4(len(compact_json(tools)))
    system = body.get("system")
    if system:
        parts = system if isinstance(system, list) else [system]
        for index, part in enumerate(parts):
            mark(part, before + MESSAGE_OVERHEAD + ceil4(len(text_of(parts[: index + 1]))))
        before += MESSAGE_OVERHEAD + ceil4(len(text_of(system)))
    for message in _list(body.get("messages")):
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content]
        chain.update(str(message.get("role") if isinstance(message, dict) else "").encode() + b"\x01")
        for index, part in enumerate(parts):
            mark(part, before + MESSAGE_OVERHEAD + ceil4(len(text_of(parts[: index + 1]))))
        before += MESSAGE_OVERHEAD + ceil4(len(text_of(content)))
    return out


def _marked(body: Mapping[str, Any]) -> bool:
    system = body.get("system")
    parts = [*_list(body.get("tools")), *(system if isinstance(system, list) else [])]
    for message in _list(body.get("messages")):
        if isinstance(message, dict):
            parts.extend(_list(message.get("content")))
    return any(_ttl(part) is not None for part in parts)


def _ttl(part: Any) -> str | None:
    control = part.get("cache_control") if isinstance(part, dict) else None
    if not isinstance(control, dict) or control.get("type") != "ephemeral":
        return None
    return "1h" if control.get("ttl") == "1h" else "5m"


def _unmarked(part: Any) -> Any:
    if isinstance(part, dict) and "cache_control" in part:
        return {k: v for k, v in part.items() if k != "cache_control"}
    return part


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class OpenAICache:
    """Prompts seen, as a tree of blocks: each node (the hash of the blocks before) holds the
    texts that followed it and when each was last used."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._nodes: OrderedDict[bytes, dict[str, float]] = OrderedDict()

    def clear(self) -> None:
        """Forget every prompt."""
        self._nodes.clear()

    def use(self, body: Mapping[str, Any], kind: str, model: str, total: int) -> int:
        """The cached tokens of this prompt of ``total`` tokens; remembers it."""
        if total < OPENAI_MINIMUM:
            return 0
        now = self._clock()
        key = body.get("prompt_cache_key")
        root = hashlib.sha256(f"{model}\x00{key if isinstance(key, str) else ''}".encode())
        blocks = prompt_blocks(body, kind)
        matched = self._matched(root.copy(), blocks, now)
        self._remember(root.copy(), blocks, now)
        cached = min(matched, total) // OPENAI_INCREMENT * OPENAI_INCREMENT
        return cached if cached >= OPENAI_MINIMUM else 0

    def _matched(self, chain: Any, blocks: list[str], now: float) -> int:
        matched = 0
        for text in blocks:
            live = [seen for seen, at in self._nodes.get(chain.digest(), {}).items() if now - at < OPENAI_IDLE_S]
            if not live:
                break
            matched = matched or REPLY_OVERHEAD
            if text not in live:
                matched += MESSAGE_OVERHEAD + max(_shared(text, seen) for seen in live) // 4
                break
            matched += MESSAGE_OVERHEAD + ceil4(len(text))
            chain.update(text.encode() + b"\x00")
        return matched

    def _remember(self, chain: Any, blocks: list[str], now: float) -> None:
        for text in blocks:
            node = chain.digest()
            followers = self._nodes.setdefault(node, {})
            self._nodes.move_to_end(node)
            followers[text] = now
            chain.update(text.encode() + b"\x00")
        while len(self._nodes) > MAX_ENTRIES:
            self._nodes.popitem(last=False)


def _shared(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    low, high = 0, min(len(a), len(b))
    while low < high:  # binary search on slices: fast for long texts
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low
