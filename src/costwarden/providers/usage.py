"""Token usage as the upstreams report it, normalized to one shape.

The normal form is OpenAI's: ``input_tokens`` counts every input token, cached ones included,
and ``cached_input_tokens`` is the part read from the prompt cache. Anthropic reports
``input_tokens`` *without* its cache reads and cache writes; both are added back here, and only
``cache_read_input_tokens`` counts as cached (a cache write is plain input).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Usage:
    """What one call consumed, as reported by the upstream."""

    input_tokens: int  # ALL input tokens, cached included (OpenAI convention)
    cached_input_tokens: int  # the cached part
    output_tokens: int


def count(value: object) -> int:
    """A token count from JSON: non-negative integers only, anything else is 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def _details(usage: Mapping[str, object], key: str, field: str) -> int:
    details = usage.get(key)
    return count(details.get(field)) if isinstance(details, Mapping) else 0


def openai_usage(usage: object) -> Usage | None:
    """Chat completions, completions and embeddings: ``prompt_tokens`` / ``completion_tokens``."""
    if not isinstance(usage, Mapping):
        return None
    prompt = count(usage.get("prompt_tokens"))
    cached = min(_details(usage, "prompt_tokens_details", "cached_tokens"), prompt)
    return Usage(prompt, cached, count(usage.get("completion_tokens")))


def responses_usage(usage: object) -> Usage | None:
    """The Responses API: ``input_tokens`` (cached included) / ``output_tokens``."""
    if not isinstance(usage, Mapping):
        return None
    total_input = count(usage.get("input_tokens"))
    cached = min(_details(usage, "input_tokens_details", "cached_tokens"), total_input)
    return Usage(total_input, cached, count(usage.get("output_tokens")))


@dataclass(frozen=True, slots=True)
class AnthropicCounts:
    """Anthropic's raw fields; later stream events override the fields they carry."""

    input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    output_tokens: int = 0

    def merged(self, usage: Mapping[str, object]) -> AnthropicCounts:
        """These counts with every field present in ``usage`` replaced (Anthropic's are cumulative)."""
        return AnthropicCounts(
            *(
                count(usage[name]) if name in usage and usage[name] is not None else getattr(self, name)
                for name in ANTHROPIC_FIELDS
            )
        )

    def normalized(self) -> Usage:
        total_input = self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens
        return Usage(total_input, self.cache_read_input_tokens, self.output_tokens)


ANTHROPIC_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")


def anthropic_usage(usage: object) -> Usage | None:
    """Anthropic Messages: cache reads and writes added back into ``input_tokens``."""
    if not isinstance(usage, Mapping):
        return None
    return AnthropicCounts().merged(usage).normalized()
