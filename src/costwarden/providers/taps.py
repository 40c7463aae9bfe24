"""Stream taps: read an upstream SSE stream on its way to the client, capture its usage.

A tap never lets the terminal event through ``feed()`` (``[DONE]``, ``message_stop``,
``response.completed``); ``finish()`` returns it, so the gateway can make its ledger write
durable before the client sees the end of the stream. Events after the terminal one are held
with it, so that the client sees them in the upstream's order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from costwarden.core.money import ceil_div
from costwarden.providers.jsontext import dumps, loads
from costwarden.providers.sse import Event, EventSplitter
from costwarden.providers.usage import AnthropicCounts, Usage, openai_usage, responses_usage, with_tools

UsageExtra = Callable[[Usage], Mapping[str, object]]


class StreamTap:
    """Base tap: splits events, holds the terminal one back, counts produced output."""

    def __init__(self, *, usage_extra: UsageExtra) -> None:
        self._events = EventSplitter()
        self._held = bytearray()
        self._usage_extra = usage_extra
        self._produced = 0
        self._usage: Usage | None = None
        self.completed = False  # the terminal event was seen

    @property
    def usage(self) -> Usage | None:
        """The usage the upstream reported, once seen."""
        return self._usage

    @property
    def produced_output_tokens(self) -> int:
        """Output produced so far: each delta counts max(1, ceil(chars / 4)) tokens."""
        return self._produced

    def feed(self, chunk: bytes) -> bytes:
        """Raw upstream bytes in (split anywhere), bytes for the client out."""
        out = bytearray()
        for event in self._events.feed(chunk):
            self._route(event, out)
        return bytes(out)

    def finish(self) -> bytes:
        """The held-back terminal event(s) and anything still buffered."""
        out = bytearray()
        for event in self._events.flush():
            self._route(event, out)
        out += self._held
        self._held.clear()
        return bytes(out)

    def _route(self, event: Event, out: bytearray) -> None:
        if self.completed:
            self._held += event.raw
            return
        emitted = self._handle(event) if event.data is not None else event.raw
        (self._held if self.completed else out).extend(emitted)

    def _handle(self, event: Event) -> bytes:
        """The bytes to send for ``event`` (raw, rewritten, or b"" to drop); may set ``completed``."""
        raise NotImplementedError

    def _delta(self, text: object) -> None:
        if isinstance(text, str) and text:
            self._produced += max(1, ceil_div(len(text), 4))

    def _with_extra(self, usage_object: Mapping[str, Any], usage: Usage) -> dict[str, Any]:
        merged = dict(usage_object)
        merged.update(self._usage_extra(usage))
        return merged


def _json_object(data: str) -> dict[str, Any] | None:
    try:
        value = loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class OpenAIChatTap(StreamTap):
    """Chat completions and completions chunks, ending with ``data: [DONE]``.

    The gateway always asks for ``stream_options.include_usage``; when the client had not, the
    usage-only chunk (``choices == []``) is captured and removed from what the client sees.
    """

    def __init__(self, *, client_wants_usage: bool, usage_extra: UsageExtra) -> None:
        super().__init__(usage_extra=usage_extra)
        self._client_wants_usage = client_wants_usage

    def _handle(self, event: Event) -> bytes:
        assert event.data is not None
        if event.data.strip() == "[DONE]":
            self.completed = True
            return event.raw
        chunk = _json_object(event.data)
        if chunk is None:
            return event.raw
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                self._count_choice(choice)
        usage_object = chunk.get("usage")
        if not isinstance(usage_object, dict):
            return event.raw
        usage = openai_usage(usage_object)
        assert usage is not None
        self._usage = usage = usage.with_tier(chunk.get("service_tier"))
        if not self._client_wants_usage:
            return b"" if not choices else event.raw
        chunk["usage"] = self._with_extra(usage_object, usage)
        return event.with_data(dumps(chunk))

    def _count_choice(self, choice: object) -> None:
        if not isinstance(choice, dict):
            return
        self._delta(choice.get("text"))  # completions
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return
        content = delta.get("content")
        self._delta(content)
        if content is not None and len(delta) == 1:
            return  # the usual token chunk
        for key in ("refusal", "reasoning_content", "reasoning"):
            self._delta(delta.get(key))
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                self._delta(function.get("arguments"))


class ResponsesTap(StreamTap):
    """Responses API semantic events; the final event carries the usage in ``response.usage``."""

    TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
    NOT_OUTPUT = frozenset({"response.audio.delta"})  # base64 audio, not text

    def _handle(self, event: Event) -> bytes:
        assert event.data is not None
        payload = _json_object(event.data)
        if payload is None:
            return event.raw
        kind = payload.get("type") or event.name or ""
        if kind.endswith(".delta") and kind not in self.NOT_OUTPUT:
            self._delta(payload.get("delta"))
        if kind not in self.TERMINAL:
            return event.raw
        self.completed = True
        response = payload.get("response")
        usage_object = response.get("usage") if isinstance(response, dict) else None
        if not isinstance(response, dict) or not isinstance(usage_object, dict):
            return event.raw
        usage = responses_usage(usage_object)
        assert usage is not None
        self._usage = usage = with_tools(usage.with_tier(response.get("service_tier")), response)
        response["usage"] = self._with_extra(usage_object, usage)
        return event.with_data(dumps(payload))


class AnthropicTap(StreamTap):
    """Anthropic Messages events: input usage in ``message_start``, output in ``message_delta``.

    Before ``message_delta`` arrives, ``usage`` reports the input from ``message_start`` and, as
    output, the larger of what it said and what was produced, so a stream cut short is charged
    for what it produced.
    """

    def __init__(self, *, usage_extra: UsageExtra) -> None:
        super().__init__(usage_extra=usage_extra)
        self._counts: AnthropicCounts | None = None
        self._final = False

    @property
    def usage(self) -> Usage | None:
        if self._counts is None:
            return None
        usage = self._counts.normalized()
        if self._final:
            return usage
        return replace(usage, output_tokens=max(usage.output_tokens, self._produced))

    def _handle(self, event: Event) -> bytes:
        assert event.data is not None
        payload = _json_object(event.data)
        if payload is None:
            return event.raw
        kind = payload.get("type") or event.name
        if kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                for key in ("text", "thinking", "partial_json"):
                    self._delta(delta.get(key))
        elif kind == "message_start":
            message = payload.get("message")
            usage_object = message.get("usage") if isinstance(message, dict) else None
            if isinstance(usage_object, dict):
                self._counts = AnthropicCounts().merged(usage_object)
        elif kind == "message_delta":
            return self._message_delta(event, payload)
        elif kind == "message_stop":
            self.completed = True
        return event.raw

    def _message_delta(self, event: Event, payload: dict[str, Any]) -> bytes:
        usage_object = payload.get("usage")
        if not isinstance(usage_object, dict):
            return event.raw
        self._counts = (self._counts or AnthropicCounts()).merged(usage_object)
        self._final = True
        usage = self._counts.normalized()
        payload["usage"] = self._with_extra(usage_object, usage)
        return event.with_data(dumps(payload))


__all__ = ["AnthropicTap", "OpenAIChatTap", "ResponsesTap", "StreamTap", "UsageExtra"]
