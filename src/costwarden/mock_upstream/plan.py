"""What the mock will answer to one request: its usage, and the test directives that steer it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from costwarden.mock_upstream.output import Output, plan_output
from costwarden.mock_upstream.usage import (
    DEFAULT_OUTPUT_TOKENS,
    count_input_tokens,
    last_user_text,
    output_limit,
)

DIRECTIVE_MARK = "#mock"
DIRECTIVE_KEYS = frozenset(
    {"output_tokens", "cached", "input_tokens", "status", "delay_ms", "cut_after", "chunk_delay_ms",
     "stored_tokens", "media_tokens", "thinking_tokens"}
)
MAX_CHOICES = 128
MIN_THINKING_BUDGET = 1024
OPENAI_TIERS = frozenset({"default", "flex", "priority", "scale"})
HEADER_PREFIX = "x-mock-"

# Fields each kind requires, as the real APIs do (Anthropic insists on max_tokens).
_REQUIRED = {
    "chat": ("model", "messages"),
    "completions": ("model", "prompt"),
    "embeddings": ("model", "input"),
    "responses": ("model", "input"),
    "messages": ("model", "max_tokens", "messages"),
    "count_tokens": ("model", "messages"),
}


class PlanError(Exception):
    """The request cannot be answered; rendered as a 400 in the provider's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(slots=True)
class Plan:
    """The answer to give. ``input_tokens`` is the whole prompt: it includes ``cached_tokens``
    (read from a cache) and the cache writes (OpenAI's convention). ``output_tokens`` counts every
    choice and the thinking. ``directives`` are the request's, for what the app decides later.

    Treated as a value (changed only through ``dataclasses.replace``); not declared frozen
    because a frozen dataclass of this many fields costs three times as much to build, once per
    request on the mock's hot path.
    """

    model: str
    stream: bool
    include_usage: bool
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    truncated: bool  # output stopped by the caller's limit rather than ending naturally
    status: int | None
    delay_ms: int
    cut_after: int | None
    chunk_delay_ms: int
    output: Output
    choices: int = 1
    service_tier: str = "default"
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    directives: Mapping[str, int] = field(default_factory=dict)


def parse_directives(text: str, headers: Mapping[str, str]) -> dict[str, int]:
    """Directives from a ``#mock k=v ...`` line in ``text``, overridden by ``x-mock-<k>`` headers."""
    raw: dict[str, str] = {}
    at = text.find(DIRECTIVE_MARK)
    if at >= 0:
        line = text[at + len(DIRECTIVE_MARK):].split("\n", 1)[0]
        for word in line.split():
            key, sep, value = word.partition("=")
            if not sep:
                break  # the directive ends at the first word that is not key=value
            raw[key] = value
    for name, value in headers.items():
        if name.startswith(HEADER_PREFIX):
            raw[name[len(HEADER_PREFIX):].replace("-", "_")] = value
    directives: dict[str, int] = {}
    for key, value in raw.items():
        if key not in DIRECTIVE_KEYS:
            raise PlanError(f"unknown mock directive {key!r}; known: {', '.join(sorted(DIRECTIVE_KEYS))}")
        try:
            number = int(value)
        except ValueError:
            raise PlanError(f"mock directive {key}={value!r} is not an integer") from None
        if number < 0:
            raise PlanError(f"mock directive {key}={value!r} must not be negative")
        directives[key] = number
    status = directives.get("status")
    if status is not None and not 400 <= status <= 599:
        raise PlanError(f"mock directive status={status} must be an HTTP error status (400-599)")
    return directives


def make_plan(body: Mapping[str, Any], kind: str, headers: Mapping[str, str]) -> Plan:
    """Validate ``body`` for ``kind`` and decide the answer. Raises PlanError."""
    for name in _REQUIRED[kind]:
        if body.get(name) in (None, "", []):
            raise PlanError(f"{name}: Field required", param=name)
    model = body["model"]
    if not isinstance(model, str):
        raise PlanError("model: must be a string", param="model")
    count_kind = "messages" if kind == "count_tokens" else kind
    try:
        limit = output_limit(body, count_kind)
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    text = last_user_text(body, count_kind)
    directives = parse_directives(text, headers) if _has_directives(text, headers) else {}

    input_tokens = directives.get("input_tokens", count_input_tokens(body, count_kind))
    wanted = directives.get("output_tokens", DEFAULT_OUTPUT_TOKENS)
    if kind in ("embeddings", "count_tokens"):
        wanted, limit = 0, None
    if kind == "messages":
        _check_thinking(body, limit)
    output = plan_output(body, kind, wanted, limit, directives)
    choices = _choices(body) if kind == "chat" else 1
    stream = body.get("stream") is True and kind not in ("embeddings", "count_tokens")
    options = body.get("stream_options")
    return Plan(
        model=model,
        stream=stream,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        input_tokens=input_tokens,
        cached_tokens=min(directives.get("cached", 0), input_tokens),
        output_tokens=output.tokens * choices,
        truncated=output.truncated,
        status=directives.get("status"),
        delay_ms=directives.get("delay_ms", 0),
        cut_after=directives.get("cut_after"),
        chunk_delay_ms=directives.get("chunk_delay_ms", 0),
        output=output,
        choices=choices,
        service_tier=_service_tier(body, kind),
        directives=directives,
    )


def _choices(body: Mapping[str, Any]) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CHOICES:
        raise PlanError(f"n: must be an integer from 1 to {MAX_CHOICES}", param="n")
    return n


def _check_thinking(body: Mapping[str, Any], limit: int | None) -> None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < MIN_THINKING_BUDGET:
        raise PlanError(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                        f"{MIN_THINKING_BUDGET}", param="thinking")
    if limit is not None and budget >= limit:
        raise PlanError("`max_tokens` must be greater than `thinking.budget_tokens`.", param="max_tokens")


def _service_tier(body: Mapping[str, Any], kind: str) -> str:
    """The tier the answer reports: OpenAI echoes the one asked for (``auto`` runs as ``default``);
    Anthropic reports ``standard``."""
    if kind in ("messages", "count_tokens"):
        return "standard"
    tier = body.get("service_tier")
    return tier if isinstance(tier, str) and tier in OPENAI_TIERS else "default"


def _has_directives(text: str, headers: Mapping[str, str]) -> bool:
    # Most requests carry none; skip the parsing on the hot path.
    return DIRECTIVE_MARK in text or any(name.startswith(HEADER_PREFIX) for name in headers)
