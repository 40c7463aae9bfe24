"""OpenAI wire endpoints: chat completions, completions, embeddings and responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.errors import InvalidRequest
from costwarden.providers.base import (
    Endpoint,
    check_messages,
    json_type,
    non_empty_list,
    optional,
    positive_int,
    required,
)
from costwarden.providers.taps import OpenAIChatTap, ResponsesTap, StreamTap, UsageExtra
from costwarden.providers.tokens import InputTally
from costwarden.providers.usage import Usage, openai_usage, responses_usage

# Top-level fields whose structured content the model reads as input.
_STRUCTURED_INPUT = ("tool_choice", "response_format", "text")
_TOOL_LISTS = ("tools", "functions")


def tally_tools(body: Mapping[str, Any], tally: InputTally, fields: tuple[str, ...] = _STRUCTURED_INPUT) -> None:
    """Tool definitions count as one message of JSON; other structured input as JSON."""
    for name in _TOOL_LISTS:
        if body.get(name):
            tally.message()
            tally.structured(body[name])
    for name in fields:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            tally.structured(value)


def tally_prompts(value: Any, tally: InputTally) -> None:
    """A completions prompt or embeddings input: a string, strings, token ids, or token-id lists."""
    items = [value] if isinstance(value, str) or _is_token_ids(value) else value
    for item in items if isinstance(items, list) else [items]:
        tally.message()
        if isinstance(item, list) and _is_token_ids(item):
            tally.tokens(item)
        else:
            tally.text(item)


def _is_token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def _check_prompts(value: Any, field: str) -> None:
    if isinstance(value, str) or _is_token_ids(value):
        return
    if isinstance(value, list) and value and all(isinstance(v, str) or _is_token_ids(v) for v in value):
        return
    raise InvalidRequest(f"{field}: must be a string, an array of strings, an array of token ids or an array "
                         f"of token-id arrays, not {json_type(value)}" + (" (empty)" if value == [] else "") + ".",
                         param=field)


# Content part types that carry text or an image, per API; any other part counts by its JSON.
_CHAT_TEXT, _CHAT_IMAGE = ("text",), "image_url"
_RESPONSES_TEXT, _RESPONSES_IMAGE = ("input_text", "output_text", "text"), "input_image"


def tally_content(content: Any, tally: InputTally, text_kinds: tuple[str, ...], image_kind: str) -> None:
    """Count a message's content: a string, or a list of typed parts."""
    if isinstance(content, str) or content is None:
        tally.text(content)
        return
    for part in content if isinstance(content, list) else [content]:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in text_kinds:
            tally.text(part.get("text"))
        elif kind == "refusal":
            tally.text(part.get("refusal"))
        elif kind == image_kind:
            tally.image()
        else:
            tally.structured(part)  # audio, files and anything newer, by their JSON

class ChatCompletions(Endpoint):
    path, wire, kind = "/v1/chat/completions", "openai", "chat"
    output_fields: tuple[str, ...] = ("max_completion_tokens", "max_tokens")
    # OpenAI's current field; max_tokens is deprecated and refused by its reasoning models.
    default_output_field = "max_completion_tokens"

    def _validate(self, body: Mapping[str, Any]) -> None:
        messages = non_empty_list(body, "messages", '"messages": [{"role": "user", "content": "Hello"}]')
        check_messages(messages)
        for index, message in enumerate(messages):
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                where = f"messages[{index}].content"
                raise InvalidRequest(f"{where}: must be a string or an array of parts, not {json_type(content)}.",
                                     param=where)
        positive_int(body, "n")
        options = optional(body, "stream_options", dict)
        if options is not None:
            optional(options, "include_usage", bool)

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        messages = body.get("messages")
        for message in messages if isinstance(messages, list) else ():
            tally.message()
            if not isinstance(message, dict):
                tally.structured(message)
                continue
            tally_content(message.get("content"), tally, _CHAT_TEXT, _CHAT_IMAGE)
            for key, value in message.items():
                if key == "name":
                    tally.text(value)
                elif key not in ("role", "content"):
                    tally.structured(value)  # tool_calls, function_call, audio, ...
        tally_tools(body, tally)

    def output_multiplier(self, body: Mapping[str, Any]) -> int:
        n = body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1

    def _request_usage(self, out: dict[str, Any]) -> bool:
        options = out.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        asked = options.get("include_usage") is True
        options["include_usage"] = True
        out["stream_options"] = options
        return asked

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        return openai_usage(payload.get("usage"))

    def stream_tap(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> StreamTap:
        return OpenAIChatTap(client_wants_usage=client_wants_usage, usage_extra=usage_extra)


class Completions(ChatCompletions):
    """The legacy completions endpoint (``prompt``); streams like chat completions."""

    path = "/v1/completions"
    output_fields = ("max_tokens",)
    default_output_field = "max_tokens"

    def _validate(self, body: Mapping[str, Any]) -> None:
        _check_prompts(required(body, "prompt", (str, list), '"prompt": "Say hello"'), "prompt")
        optional(body, "suffix", str)
        positive_int(body, "n")
        positive_int(body, "best_of")
        options = optional(body, "stream_options", dict)
        if options is not None:
            optional(options, "include_usage", bool)

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        tally_prompts(body.get("prompt"), tally)
        tally.text(body.get("suffix"))

    def output_multiplier(self, body: Mapping[str, Any]) -> int:
        # best_of completions are generated (and billed) server-side, n of them returned.
        return max(super().output_multiplier(body), _positive(body.get("best_of")))


def _positive(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


class Embeddings(Endpoint):
    path, wire, kind = "/v1/embeddings", "openai", "embedding"

    def _validate(self, body: Mapping[str, Any]) -> None:
        _check_prompts(required(body, "input", (str, list), '"input": "The food was delicious"'), "input")
        positive_int(body, "dimensions")
        if body.get("stream") is True:
            raise InvalidRequest("stream: embeddings are not streamed.", param="stream")

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        tally_prompts(body.get("input"), tally)

    def requested_output_tokens(self, body: Mapping[str, Any]) -> int | None:
        return 0

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return False

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        return openai_usage(payload.get("usage"))

    def stream_tap(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> StreamTap:
        raise TypeError("embeddings are not streamed")


class Responses(Endpoint):
    """The Responses API. Input referenced by ``previous_response_id`` or ``conversation`` lives
    upstream and cannot be counted here."""

    path, wire, kind = "/v1/responses", "openai", "chat"
    output_fields = ("max_output_tokens",)
    default_output_field = "max_output_tokens"
    min_output_bound = 16  # OpenAI refuses a smaller max_output_tokens

    def _validate(self, body: Mapping[str, Any]) -> None:
        if body.get("input") is None and not any(body.get(k) for k in ("previous_response_id", "conversation",
                                                                        "prompt")):
            required(body, "input", (str, list), '"input": "Tell me a joke"')
        value = optional(body, "input", (str, list))
        if isinstance(value, list):
            for index, item in enumerate(value):
                if not isinstance(item, dict):
                    raise InvalidRequest(f"input[{index}]: must be an object, not {json_type(item)}.",
                                         param=f"input[{index}]")
        optional(body, "instructions", str)

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        if body.get("instructions") is not None:
            tally.message()
            tally.text(body["instructions"])
        items = body.get("input")
        for item in [items] if isinstance(items, str) else items if isinstance(items, list) else ():
            tally.message()
            if isinstance(item, dict) and (item.get("type") in (None, "message")):
                tally_content(item.get("content"), tally, _RESPONSES_TEXT, _RESPONSES_IMAGE)
            else:
                tally.text(item)  # function calls and outputs, reasoning items: by their JSON
        tally_tools(body, tally)

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        return responses_usage(payload.get("usage"))

    def stream_tap(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> StreamTap:
        return ResponsesTap(usage_extra=usage_extra)
