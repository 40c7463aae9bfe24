"""Token usage as the upstreams report it, normalized to one shape.

The normal form is OpenAI's: ``input_tokens`` counts every input token, cached ones included,
and ``cached_input_tokens`` is the part read from the prompt cache. Anthropic reports
``input_tokens`` *without* its cache reads and cache writes; both are added back here, and only
``cache_read_input_tokens`` counts as cached (a cache write is plain input).

A count that is not a non-negative JSON integer (negative, fractional, a string, a boolean) makes
the whole usage ``malformed``: its numbers are then not to be trusted, and the call is charged as
if the upstream had reported no usage. An absent or null count is 0 and not malformed (embeddings
report no output, for example).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from costwarden.core.pricing import TokenType, token_breakdown

NO_TOOLS: Mapping[str, int] = {}


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and every call
# makes one of these (ten fields). Never changed once made; nothing hashes one (tool_calls is a dict).
@dataclass(slots=True)
class Usage:
    """What one call consumed, as reported by the upstream.

    The three totals follow OpenAI's convention; the fields after ``malformed`` say which parts
    of them a provider bills at other rates (SPEC §9), and default to none.
    """

    input_tokens: int  # ALL input tokens, cached and cache writes included (OpenAI convention)
    cached_input_tokens: int  # the part read from the prompt cache
    output_tokens: int  # ALL output tokens, reasoning included
    # Some count was not a non-negative integer: charge the estimate instead, and flag the event.
    malformed: bool = False
    cache_write_5m_tokens: int = 0  # part of input_tokens written to a 5-minute prompt cache
    cache_write_1h_tokens: int = 0  # part of input_tokens written to a 1-hour prompt cache
    reasoning_tokens: int = 0  # part of output_tokens spent on hidden reasoning
    audio_input_tokens: int = 0  # part of input_tokens that was audio
    service_tier: str | None = None  # as the upstream reported it (standard, flex, priority...)
    tool_calls: Mapping[str, int] = field(default_factory=lambda: NO_TOOLS)  # server-side tool -> calls

    def by_type(self) -> dict[TokenType, int]:
        """Disjoint counts per billed token type (they add up to input + output)."""
        return token_breakdown(self.input_tokens, self.cached_input_tokens, self.output_tokens,
                               cache_write_5m=self.cache_write_5m_tokens, cache_write_1h=self.cache_write_1h_tokens,
                               reasoning=self.reasoning_tokens, audio_input=self.audio_input_tokens)

    def with_tier(self, service_tier: object) -> Usage:
        """This usage with the service tier a response reported (ignored unless a string)."""
        return replace(self, service_tier=service_tier) if isinstance(service_tier, str) else self


def valid_count(value: object) -> bool:
    """Whether ``value`` is an acceptable JSON token count: absent/null, or an integer >= 0."""
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def count(value: object) -> int:
    """A token count from JSON: non-negative integers only, anything else is 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _is_mapping(value: object) -> bool:
    # parsed JSON objects are dicts: the exact type check spares the Mapping ABC's slower one
    return type(value) is dict or isinstance(value, Mapping)


class _Reader:
    """Reads counts from one usage object, remembering whether any was malformed."""

    __slots__ = ("malformed", "usage")

    def __init__(self, usage: Mapping[str, object]) -> None:
        self.usage = usage
        self.malformed = False

    def __call__(self, field: str, details: str | None = None) -> int:
        found = _count_in(self.usage if details is None else self.usage.get(details), field)
        if found < 0:
            self.malformed = True
            return 0
        return found


def _count_in(holder: object, field: str) -> int:
    """The count ``field`` of the usage object ``holder``: 0 when either is absent, -1 when either
    is malformed (see the module docstring)."""
    if holder is None:
        return 0
    if not _is_mapping(holder):
        return -1
    value = holder.get(field)  # type: ignore[attr-defined]  # a Mapping, checked above
    if type(value) is int and value >= 0:  # the usual case: a plain JSON integer
        return value
    return count(value) if valid_count(value) else -1


def openai_usage(usage: object, service_tier: object = None) -> Usage | None:
    """Chat completions, completions and embeddings: ``prompt_tokens`` / ``completion_tokens``;
    ``service_tier``: the tier the response reported (kept when a string)."""
    if not _is_mapping(usage):
        return None
    get = usage.get  # type: ignore[attr-defined]  # a Mapping, checked above
    prompt = _count_in(usage, "prompt_tokens")
    output = _count_in(usage, "completion_tokens")
    details, output_details = get("prompt_tokens_details"), get("completion_tokens_details")
    cached, audio = _count_in(details, "cached_tokens"), _count_in(details, "audio_tokens")
    reasoning = _count_in(output_details, "reasoning_tokens")
    malformed = min(prompt, output, cached, audio, reasoning) < 0
    if malformed:  # a malformed count reads as 0
        prompt, output, cached, audio, reasoning = (max(0, n) for n in (prompt, output, cached, audio, reasoning))
    cached = min(cached, prompt)
    return Usage(prompt, cached, output, malformed, reasoning_tokens=min(reasoning, output),
                 audio_input_tokens=min(audio, prompt - cached),
                 service_tier=service_tier if isinstance(service_tier, str) else None)


def responses_usage(usage: object) -> Usage | None:
    """The Responses API: ``input_tokens`` (cached included) / ``output_tokens``."""
    if not isinstance(usage, Mapping):
        return None
    read = _Reader(usage)
    total_input = read("input_tokens")
    cached = min(read("cached_tokens", "input_tokens_details"), total_input)
    output = read("output_tokens")
    reasoning = min(read("reasoning_tokens", "output_tokens_details"), output)
    return Usage(total_input, cached, output, read.malformed, reasoning_tokens=reasoning)


@dataclass(frozen=True, slots=True)
class AnthropicCounts:
    """Anthropic's raw fields; later stream events override the fields they carry."""

    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0
    malformed: bool = False
    cache_write_1h: int = 0  # of cache_creation_input_tokens; the rest is written for 5 minutes
    web_search_requests: int = 0
    service_tier: str | None = None

    def merged(self, usage: Mapping[str, object]) -> AnthropicCounts:
        """These counts with every field present in ``usage`` replaced (Anthropic's are cumulative)."""
        counts = {name: count(usage[name]) if name in usage and usage[name] is not None else getattr(self, name)
                  for name in ANTHROPIC_FIELDS}
        malformed = self.malformed or not all(valid_count(usage.get(name)) for name in ANTHROPIC_FIELDS)
        creation, tools = usage.get("cache_creation"), usage.get("server_tool_use")
        one_hour = count(creation.get("ephemeral_1h_input_tokens")) if isinstance(creation, Mapping) \
            else self.cache_write_1h
        searches = count(tools.get("web_search_requests")) if isinstance(tools, Mapping) else self.web_search_requests
        tier = usage.get("service_tier")
        return AnthropicCounts(**counts, malformed=malformed, cache_write_1h=one_hour, web_search_requests=searches,
                               service_tier=tier if isinstance(tier, str) else self.service_tier)

    def normalized(self) -> Usage:
        written = self.cache_creation_input_tokens
        one_hour = min(self.cache_write_1h, written)
        total_input = self.input_tokens + written + self.cache_read_input_tokens
        tools = {"web_search": self.web_search_requests} if self.web_search_requests else NO_TOOLS
        return Usage(total_input, self.cache_read_input_tokens, self.output_tokens, self.malformed,
                     cache_write_5m_tokens=written - one_hour, cache_write_1h_tokens=one_hour,
                     service_tier=self.service_tier, tool_calls=tools)


ANTHROPIC_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def anthropic_usage(usage: object) -> Usage | None:
    """Anthropic Messages: cache reads and writes added back into ``input_tokens``."""
    if not isinstance(usage, Mapping):
        return None
    return AnthropicCounts().merged(usage).normalized()


_TOOL_CALLS = {"web_search_call": "web_search", "file_search_call": "file_search"}


def with_tools(usage: Usage, response: Mapping[str, object]) -> Usage:
    """A Responses answer's usage with the server-side tool calls its output items record."""
    output = response.get("output")
    if not isinstance(output, list):
        return usage
    calls: dict[str, int] = {}
    for item in output:
        tool = _TOOL_CALLS.get(item.get("type", "")) if isinstance(item, Mapping) else None
        if tool is not None:
            calls[tool] = calls.get(tool, 0) + 1
    return replace(usage, tool_calls=calls) if calls else usage
