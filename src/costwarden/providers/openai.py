"""OpenAI wire endpoints: chat completions, completions, embeddings and responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from costwarden.errors import ContextLengthExceeded, InvalidRequest
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
from costwarden.providers.tokens import PER_REQUEST, InputEstimate, InputTally
from costwarden.providers.usage import Usage, openai_usage, responses_usage, with_tools

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


# Parts whose content the upstream fetches or stores: a file by id, URL or upload.
_FILE_PARTS = frozenset({"file", "input_file"})
# Responses tools whose results the upstream adds to the input (search results, files, pages).
_CLIENT_TOOLS = frozenset({"function", "custom"})


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
            _tally_image(part, tally)
        elif kind in _FILE_PARTS:
            tally.hide(kind)  # a PDF's text and page images: not countable from here, even inline
        else:
            tally.structured(part)  # audio and anything newer, by their JSON


def _tally_image(part: dict[str, Any], tally: InputTally) -> None:
    """An inline image counts as one image; one the upstream fetches (URL, file id) is hidden,
    since its size, and so its tokens, is unknown here."""
    url = part.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if isinstance(url, str) and url[:5].lower() == "data:":
        tally.image()
    else:
        tally.hide("image_url" if isinstance(url, str) else "image_file")

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
        if body.get("web_search_options") is not None:
            tally.hide("web_search_options")  # search results join the input upstream
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
        return openai_usage(payload.get("usage"), payload.get("service_tier"))

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


# OpenAI's embeddings limits: inputs per request, tokens per input, tokens per request.
MAX_EMBEDDING_INPUTS = 2_048
MAX_EMBEDDING_INPUT_TOKENS = 8_192
MAX_EMBEDDING_REQUEST_TOKENS = 300_000


def _prompt_items(value: Any) -> list[Any]:
    """A prompt or embeddings input as its list of inputs (a string or token-id list is one)."""
    if isinstance(value, str) or _is_token_ids(value):
        return [value]
    return value if isinstance(value, list) else []


class Embeddings(Endpoint):
    """The model's limits apply per input (its context window) and per request (OpenAI's
    300,000 tokens), not to the sum against the window; both are judged on lower bounds."""

    path, wire, kind = "/v1/embeddings", "openai", "embedding"

    def _validate(self, body: Mapping[str, Any]) -> None:
        value = required(body, "input", (str, list), '"input": "The food was delicious"')
        _check_prompts(value, "input")
        if len(items := _prompt_items(value)) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequest(f"input: {len(items):,} inputs; at most {MAX_EMBEDDING_INPUTS:,} can be embedded "
                                 f"in one request. Send them in batches of {MAX_EMBEDDING_INPUTS:,}.", param="input")
        positive_int(body, "dimensions")
        if body.get("stream") is True:
            raise InvalidRequest("stream: embeddings are not streamed.", param="stream")

    def _tally(self, body: Mapping[str, Any], tally: InputTally) -> None:
        tally_prompts(body.get("input"), tally)

    def estimate(self, body: Mapping[str, Any], *, model: str | None = None) -> InputEstimate:
        """The sum over the inputs, with the largest single input's lower bound as ``floor``, so
        that the context window is checked per input."""
        named = body.get("model")
        model = model or (named if isinstance(named, str) else None)
        known = self.estimator.counter_for(model) is not None
        tokens, floors = PER_REQUEST, []
        for item in _prompt_items(body.get("input")):
            tally = InputTally()
            tally_prompts(item, tally)
            one = self.estimator.estimate(tally, model=model)
            tokens += one.tokens - PER_REQUEST
            floors.append(one.floor)
        for index, floor in enumerate(floors):
            if known and floor > MAX_EMBEDDING_INPUT_TOKENS:
                raise ContextLengthExceeded(
                    f"input[{index}]: has {floor:,} tokens; {model} embeds at most {MAX_EMBEDDING_INPUT_TOKENS:,} "
                    f"tokens per input. Split this text into smaller pieces (e.g. by paragraph).",
                    param=f"input[{index}]")
        if sum(floors) > MAX_EMBEDDING_REQUEST_TOKENS:
            raise InvalidRequest(
                f"input: at least {sum(floors):,} tokens in all; one request embeds at most "
                f"{MAX_EMBEDDING_REQUEST_TOKENS:,}. Send the inputs in several requests.", param="input")
        return InputEstimate(tokens, max(floors, default=0), per_input=True)

    def requested_output_tokens(self, body: Mapping[str, Any]) -> int | None:
        return 0

    def wants_stream(self, body: Mapping[str, Any]) -> bool:
        return False

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        return openai_usage(payload.get("usage"), payload.get("service_tier"))

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
        for stored in ("previous_response_id", "conversation", "prompt"):
            if body.get(stored):
                tally.hide(stored)  # a stored conversation or prompt template, read upstream
        if body.get("instructions") is not None:
            tally.message()
            tally.text(body["instructions"])
        items = body.get("input")
        for item in [items] if isinstance(items, str) else items if isinstance(items, list) else ():
            tally.message()
            if isinstance(item, dict) and (item.get("type") in (None, "message")):
                tally_content(item.get("content"), tally, _RESPONSES_TEXT, _RESPONSES_IMAGE)
            elif isinstance(item, dict) and item.get("type") == "item_reference":
                tally.hide("item_reference")
            else:
                tally.text(item)  # function calls and outputs, reasoning items: by their JSON
        tools = body.get("tools")
        for tool in tools if isinstance(tools, list) else ():
            kind = tool.get("type") if isinstance(tool, dict) else None
            if isinstance(kind, str) and kind not in _CLIENT_TOOLS:
                tally.hide(f"tool:{kind}")  # web or file search results, MCP listings: read upstream
        tally_tools(body, tally)

    def usage_from_response(self, payload: Mapping[str, Any]) -> Usage | None:
        usage = responses_usage(payload.get("usage"))
        return None if usage is None else with_tools(usage.with_tier(payload.get("service_tier")), payload)

    def stream_tap(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> StreamTap:
        return ResponsesTap(usage_extra=usage_extra)
