"""Anthropic wire endpoint: Messages."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.core.pricing import TokenType
from costwarden.errors import InvalidRequest
from costwarden.providers.base import Endpoint, check_messages, json_type, non_empty_list, optional, required
from costwarden.providers.openai import tally_tools
from costwarden.providers.taps import AnthropicTap, StreamTap, UsageExtra
from costwarden.providers.tokens import InputTally
from costwarden.providers.usage import Usage, anthropic_usage

_STRUCTURED_INPUT = ("tool_choice",)


class Messages(Endpoint):
    """``POST /v1/messages``; ``max_tokens`` is required, as Anthropic requires it."""

    path, wire, kind = "/v1/messages", "anthropic", "chat"

    def cache_write(self, body: Mapping[str, Any]) -> TokenType | None:
        ttls = [control.get("ttl", "5m") for control in _cache_controls(body) if isinstance(control, Mapping)]
        if not ttls:
            return None
        return TokenType.CACHE_WRITE_1H if "1h" in ttls else TokenType.CACHE_WRITE_5M
    output_fields = ("max_tokens",)
    default_output_field = "max_tokens"

    def _validate(self, body: Mapping[str, Any]) -> None:
        required(body, "max_tokens", int, '"max_tokens": 1024')
        messages = non_empty_list(body, "messages", '"messages": [{"role": "user", "content": "Hello"}]')
        check_messages(messages)
        for index, message in enumerate(messages):
            content = message.get("content")
            if not isinstance(content, str | list):
                where = f"messages[{index}].content"
                raise InvalidRequest(f"{where}: must be a string or an array of content blocks, "
                                     f"not {json_type(content)}.", param=where)
        optional(body, "system", (str, list))

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        system = body.get("system")
        if system:
            tally.message()
            self._tally_content(system, tally)
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():
            tally.message()
            if isinstance(message, dict):
                self._tally_content(message.get("content"), tally)
            else:
                tally.structured(message)
        tally_tools(body, tally, _STRUCTURED_INPUT)
        _tally_server_tools(body, tally)

    def _tally_content(self, content: Any, tally: InputTally) -> None:
        if isinstance(content, str) or content is None:
            tally.text(content)
            return
        for block in content if isinstance(content, list) else [content]:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                tally.text(block.get("text"))
            elif kind == "thinking":
                tally.text(block.get("thinking"))
            elif kind in ("image", "document") and _source_type(block) in _FETCHED_SOURCES:
                tally.hide(f"{kind}:{_source_type(block)}")  # fetched or stored upstream: size unknown
            elif kind == "image":
                tally.image()
            elif kind == "tool_result":
                self._tally_content(block.get("content"), tally)
            elif kind == "document" and _source_type(block) == "text":
                tally.text(block["source"].get("data"))
            elif kind == "document" and _source_type(block) == "content":
                self._tally_content(block["source"].get("content"), tally)
            elif kind == "document":
                tally.hide("document")  # a PDF's text and page images: not countable from here
            elif kind == "container_upload":
                tally.hide(kind)
            else:
                tally.structured(block)  # tool_use, anything newer: by their JSON

    def _bound_output(self, out: dict[str, Any], bound: int) -> None:
        super()._bound_output(out, bound)
        # Anthropic refuses a thinking budget that is not below max_tokens.
        thinking = out.get("thinking")
        if isinstance(thinking, dict) and isinstance(budget := thinking.get("budget_tokens"), int) \
                and budget >= bound:
            out["thinking"] = {**thinking, "budget_tokens": max(bound - 1, 0)}

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        return anthropic_usage(payload.get("usage"))

    def stream_tap(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> StreamTap:
        return AnthropicTap(usage_extra=usage_extra)


_FETCHED_SOURCES = frozenset({"url", "file"})
# Server tools whose results Anthropic adds to the input (pages, search results, program output).
_SERVER_TOOLS = ("web_search", "web_fetch", "code_execution")


def _source_type(block: Mapping[str, Any]) -> object:
    source = block.get("source")
    return source.get("type") if isinstance(source, dict) else None


def _tally_server_tools(body: Mapping[str, Any], tally: InputTally) -> None:
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str) and kind.startswith(_SERVER_TOOLS):
            tally.hide(f"tool:{kind}")
    if body.get("mcp_servers"):
        tally.hide("mcp_servers")


def _cache_controls(body: Mapping[str, Any]) -> list[object]:
    """Every ``cache_control`` of a Messages request: on tools, system blocks and content blocks."""
    found: list[object] = []
    system = body.get("system")
    blocks: list[object] = [*(body.get("tools") or []), *(system if isinstance(system, list) else [])]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            blocks.extend(content)
    for block in blocks:
        if isinstance(block, Mapping) and "cache_control" in block:
            found.append(block["cache_control"])
    if "cache_control" in body:  # automatic caching of the whole prompt
        found.append(body["cache_control"])
    return found
