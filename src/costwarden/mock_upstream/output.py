"""What the mock writes: plain text, JSON that fits a requested schema, a tool call, and
Anthropic's thinking before it.

Every output is a sequence of segments, each a text whose tokens are its successive 4-character
slices (``"tok "`` is one token, and so is each 4-character fragment of a JSON text), so a stream
sends one event per token and a usage count is the number of slices. The rule that picks the
answer (documented in the package docstring):

* a tool call when the request offers function tools and ``tool_choice`` does not forbid one, the
  named tool when one is forced, else the first; under ``auto`` a conversation that ends with a
  tool's result is answered in text instead, so agent loops end;
* otherwise JSON when ``response_format`` (chat), ``text.format`` (responses) or ``output_format``
  (messages) asks for ``json_object`` or ``json_schema``;
* otherwise ``"tok "`` repeated.

Structured answers are as long as their JSON; the ``output_tokens`` directive sets the length of
plain text only. The caller's output limit cuts any of them (a cut JSON text is left invalid, as a
real model's would be).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Any

import orjson

from costwarden.mock_upstream.schema_value import example_value
from costwarden.mock_upstream.usage import OUTPUT_TOKEN, ceil4

THINKING_TOKEN = "hmm "
DEFAULT_THINKING_TOKENS = 32
"""Thinking length when the budget allows it and no ``thinking_tokens`` directive says otherwise."""

JSON_OBJECT_ANSWER = '{"result":"tok"}'
_STRUCTURING_FIELDS = ("tools", "thinking", "response_format", "text", "output_format")
_CACHED_PLAIN_TOKENS = 4096  # plain outputs up to this length are shared objects; longer ones are built


class SegmentKind(StrEnum):
    """The kinds of output a segment holds."""

    TEXT = "text"
    THINKING = "thinking"
    TOOL_CALL = "tool_call"


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of output tokens; token ``i`` is ``text[4 * i: 4 * i + 4]``."""

    kind: SegmentKind
    text: str
    tool_name: str = ""
    filler: bool = False  # every token is OUTPUT_TOKEN: streams may reuse one frame

    @property
    def tokens(self) -> int:
        return ceil4(len(self.text))

    def token(self, index: int) -> str:
        """The text of token ``index``."""
        return self.text[4 * index: 4 * index + 4]

    def cut(self, tokens: int) -> Segment:
        """The segment's first ``tokens`` tokens."""
        return Segment(self.kind, self.text[: 4 * tokens], self.tool_name, self.filler)


@dataclass(frozen=True, slots=True)
class Output:
    """One choice's output: its segments in order, their tokens, whether the limit cut it, and
    whether the tool was forced by name (OpenAI then finishes with ``stop``, not ``tool_calls``)."""

    segments: tuple[Segment, ...]
    tokens: int
    truncated: bool
    forced_tool: bool = False

    @property
    def tool_call(self) -> Segment | None:
        """The tool-call segment, when the answer is one."""
        last = self.segments[-1]
        return last if last.kind is SegmentKind.TOOL_CALL else None

    @property
    def text(self) -> str:
        """The answer's text (its last segment), the thinking left out."""
        return self.segments[-1].text


def plain(tokens: int) -> Segment:
    """``tokens`` tokens of filler text."""
    return Segment(SegmentKind.TEXT, OUTPUT_TOKEN * tokens, filler=True)


def plan_output(body: Mapping[str, Any], kind: str, wanted: int, limit: int | None,
                directives: Mapping[str, int]) -> Output:
    """The output for a generation request (see the module docstring)."""
    if not any(name in body for name in _STRUCTURING_FIELDS):  # the usual request: plain text
        return _plain_output(wanted, limit) if wanted <= _CACHED_PLAIN_TOKENS else _limited([plain(wanted)], limit)
    segments: list[Segment] = []
    thinking = _thinking_budget(body) if kind == "messages" else None
    if thinking is not None:
        count = min(thinking, directives.get("thinking_tokens", DEFAULT_THINKING_TOKENS))
        segments.append(Segment(SegmentKind.THINKING, THINKING_TOKEN * count))
    tool, forced = _chosen_tool(body, kind)
    if tool is not None:
        name, schema = tool
        segments.append(Segment(SegmentKind.TOOL_CALL, _json(example_value(schema)), tool_name=name))
    elif (json_text := _json_answer(body, kind)) is not None:
        segments.append(Segment(SegmentKind.TEXT, json_text))
    else:
        segments.append(plain(wanted))
    return _limited(segments, limit, forced)


@lru_cache(maxsize=1024)
def _plain_output(wanted: int, limit: int | None) -> Output:
    return _limited([plain(wanted)], limit)


def _limited(segments: list[Segment], limit: int | None, forced: bool = False) -> Output:
    total = sum(segment.tokens for segment in segments)
    if limit is None or total <= limit:
        return Output(tuple(segments), total, truncated=False, forced_tool=forced)
    kept: list[Segment] = []
    room = limit
    for segment in segments:
        kept.append(segment.cut(min(room, segment.tokens)))
        room -= kept[-1].tokens
    return Output(tuple(kept), limit, truncated=True, forced_tool=forced)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _thinking_budget(body: Mapping[str, Any]) -> int | None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    return budget if isinstance(budget, int) and not isinstance(budget, bool) and budget > 0 else None


def _chosen_tool(body: Mapping[str, Any], kind: str) -> tuple[tuple[str, Any] | None, bool]:
    """The tool to call (name and parameter schema) and whether it was forced by name."""
    tools = [tool for tool in map(_function_tool, _list(body.get("tools"))) if tool is not None]
    if not tools or kind not in ("chat", "responses", "messages"):
        return None, False
    choice = body.get("tool_choice")
    mode = choice if isinstance(choice, str) else "auto"
    named: str | None = None
    if isinstance(choice, dict):
        mode = str(choice.get("type", "auto"))
        function = choice.get("function")
        named = function.get("name") if isinstance(function, dict) else choice.get("name")
    if mode == "none":
        return None, False
    if isinstance(named, str):
        for tool in tools:
            if tool[0] == named:
                return tool, True
    if mode == "auto" and _ends_with_tool_result(body, kind):
        return None, False
    return tools[0], False


def _function_tool(tool: Any) -> tuple[str, Any] | None:
    """Name and schema of a tool the model can call with arguments; None for server tools."""
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    if isinstance(function, dict) and isinstance(function.get("name"), str):  # chat completions
        return function["name"], function.get("parameters", {"type": "object"})
    if tool.get("type") == "function" and isinstance(tool.get("name"), str):  # responses
        return tool["name"], tool.get("parameters", {"type": "object"})
    if "input_schema" in tool and isinstance(tool.get("name"), str):  # anthropic client tools
        return tool["name"], tool["input_schema"]
    return None


def _ends_with_tool_result(body: Mapping[str, Any], kind: str) -> bool:
    items = _list(body.get("input" if kind == "responses" else "messages"))
    if not items or not isinstance(items[-1], dict):
        return False
    last = items[-1]
    if kind == "chat":
        return last.get("role") in ("tool", "function")
    if kind == "responses":
        return last.get("type") == "function_call_output"
    return any(isinstance(part, dict) and part.get("type") == "tool_result" for part in _list(last.get("content")))


def _json_answer(body: Mapping[str, Any], kind: str) -> str | None:
    if kind == "chat":
        spec = body.get("response_format")
    elif kind == "responses":
        text = body.get("text")
        spec = text.get("format") if isinstance(text, dict) else None
    elif kind == "messages":
        spec = body.get("output_format")
    else:
        return None
    if not isinstance(spec, dict):
        return None
    if spec.get("type") == "json_object":
        return JSON_OBJECT_ANSWER
    if spec.get("type") != "json_schema":
        return None
    holder = spec.get("json_schema")  # chat nests the schema; responses and messages do not
    schema = (holder if isinstance(holder, dict) else spec).get("schema", {})
    return _json(example_value(schema))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
