"""Pricing one call exactly, for every dimension a provider bills (SPEC section 9).

A call's usage is a breakdown of disjoint token counts by ``TokenType`` (uncached input, cache
reads, 5-minute and 1-hour cache writes, output, reasoning, audio and image input), plus the
server-side tool calls it made, the service tier it ran on (standard, flex, priority, batch) and
whether its prompt passed the model's long-context threshold. Every rate is an integer of
pico-dollars per token (or per tool call), so the sum is exact and is rounded up once, to the
nano-dollar, like ``ModelSpec.cost``.

Rates are derived once per model, when the catalog is built: a ``Pricing`` holds a complete rate
table for each (service tier, long context) pair the model has, so pricing a call is a handful of
dictionary lookups and integer products.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from costwarden.core.money import Price, picos_to_nanos_ceil


class TokenType(StrEnum):
    """Disjoint kinds of tokens a provider bills at their own rates."""

    INPUT = "input"  # uncached text input
    CACHED_INPUT = "cached_input"  # read from the prompt cache
    CACHE_WRITE_5M = "cache_write_5m"  # written to a 5-minute prompt cache
    CACHE_WRITE_1H = "cache_write_1h"  # written to a 1-hour prompt cache
    OUTPUT = "output"  # visible output
    REASONING = "reasoning"  # hidden reasoning / thinking output, billed at the output rate
    AUDIO = "audio"  # audio input
    IMAGE = "image"  # image input where the provider prices it apart from text


# The tokens that make up the prompt: their sum decides whether a long-context tier applies.
PROMPT_TYPES = (TokenType.INPUT, TokenType.CACHED_INPUT, TokenType.CACHE_WRITE_5M, TokenType.CACHE_WRITE_1H,
                TokenType.AUDIO, TokenType.IMAGE)


class ServiceTier(StrEnum):
    """The processing tier a call ran on; each may carry its own prices."""

    STANDARD = "standard"
    FLEX = "flex"
    PRIORITY = "priority"
    BATCH = "batch"


# What the APIs send for the standard tier: OpenAI ``auto`` / ``default``, Anthropic ``standard``.
_STANDARD_NAMES = frozenset({"", "auto", "default", "standard", "standard_only", "on_demand"})


def service_tier_of(text: object) -> ServiceTier:
    """The tier an API's ``service_tier`` value names; anything unknown is priced as standard."""
    if not isinstance(text, str) or text.lower() in _STANDARD_NAMES:
        return ServiceTier.STANDARD
    try:
        return ServiceTier(text.lower())
    except ValueError:
        return ServiceTier.STANDARD


class ServerTool(StrEnum):
    """Server-side tools a provider bills per call, whatever tokens they also use."""

    WEB_SEARCH = "web_search"
    FILE_SEARCH = "file_search"
    CODE_INTERPRETER = "code_interpreter"  # per container session


@dataclass(frozen=True, slots=True)
class Prices:
    """A complete price list in USD per 1M tokens. Unset cache and modality prices fall back to
    the input price, reasoning to the output price: what providers bill when they list none."""

    input: Price
    output: Price
    cached_input: Price | None = None
    cache_write_5m: Price | None = None
    cache_write_1h: Price | None = None
    audio: Price | None = None
    image: Price | None = None

    def rates(self) -> dict[TokenType, int]:
        """Pico-dollars per token for every token type."""
        per_input = self.input.picos_per_token

        def rate(price: Price | None) -> int:
            return per_input if price is None else price.picos_per_token

        return {
            TokenType.INPUT: per_input,
            TokenType.CACHED_INPUT: rate(self.cached_input),
            TokenType.CACHE_WRITE_5M: rate(self.cache_write_5m),
            TokenType.CACHE_WRITE_1H: rate(self.cache_write_1h),
            TokenType.OUTPUT: self.output.picos_per_token,
            TokenType.REASONING: self.output.picos_per_token,
            TokenType.AUDIO: rate(self.audio),
            TokenType.IMAGE: rate(self.image),
        }

    def scaled(self, factor: Decimal) -> Prices:
        """Every price times ``factor`` (a batch discount); raises ValueError if one is inexact."""

        def scale(price: Price | None) -> Price | None:
            return None if price is None else Price(price.usd_per_million * factor)

        return Prices(Price(self.input.usd_per_million * factor), Price(self.output.usd_per_million * factor),
                      scale(self.cached_input), scale(self.cache_write_5m), scale(self.cache_write_1h),
                      scale(self.audio), scale(self.image))


@dataclass(frozen=True, slots=True)
class TierPrices:
    """One service tier's prices: for prompts up to the long-context threshold and above it."""

    tier: ServiceTier
    standard: Prices
    long_context: Prices | None = None


@dataclass(frozen=True, slots=True)
class ToolFee:
    """A server-side tool's fee, in USD per 1,000 calls as price pages quote it."""

    tool: ServerTool
    usd_per_thousand: Decimal

    @property
    def picos_per_call(self) -> int:
        """Pico-dollars per call; exact for any fee with up to nine decimals."""
        picos = self.usd_per_thousand * 1_000_000_000
        if picos != picos.to_integral_value() or picos < 0:
            raise ValueError(f"tool fee {self.usd_per_thousand} per 1,000 calls is not a whole number of pico-dollars")
        return int(picos)


@dataclass(frozen=True, slots=True)
class Line:
    """One priced quantity of a call: tokens of a type, or calls of a tool."""

    item: TokenType | ServerTool
    quantity: int
    unit_picos: int  # per token, or per tool call

    @property
    def picos(self) -> int:
        return self.quantity * self.unit_picos


@dataclass(frozen=True, slots=True)
class Charge:
    """What one call costs: the total (nano-dollars, rounded up once) and its lines."""

    nanos: int
    lines: tuple[Line, ...]
    tier: ServiceTier  # the tier whose prices applied (standard when the model has no such tier)
    long_context: bool
    unpriced_tools: tuple[str, ...] = ()

    def picos_of(self, item: TokenType | ServerTool) -> int:
        """The exact (unrounded) pico-dollars charged for one token type or tool."""
        return sum(line.picos for line in self.lines if line.item == item)


RateTable = Mapping[TokenType, int]
_ORDER = tuple(TokenType)
_PROMPT = frozenset(PROMPT_TYPES)
_TOOLS = {tool.value: tool for tool in ServerTool}


@dataclass(frozen=True, slots=True)
class Pricing:
    """A model's complete prices, with a rate table per (tier, long context) derived once."""

    standard: Prices
    long_context_above: int | None = None  # prompt tokens; above this, ``long_context`` prices
    long_context: Prices | None = None
    tiers: tuple[TierPrices, ...] = ()
    tool_fees: tuple[ToolFee, ...] = ()
    _tables: dict[tuple[ServiceTier, bool], RateTable] = field(init=False, repr=False, compare=False)
    _fees: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.long_context_above is None) != (self.long_context is None):
            raise ValueError("a long-context tier needs both its threshold and its prices")
        long = self.long_context.rates() if self.long_context is not None else None
        tables: dict[tuple[ServiceTier, bool], RateTable] = {(ServiceTier.STANDARD, False): self.standard.rates()}
        if long is not None:
            tables[(ServiceTier.STANDARD, True)] = long
        for tier in self.tiers:
            tables[(tier.tier, False)] = tier.standard.rates()
            if long is not None:
                # A tier without its own long-context prices bills long prompts at the standard ones.
                tables[(tier.tier, True)] = tier.long_context.rates() if tier.long_context is not None else long
        object.__setattr__(self, "_tables", tables)
        object.__setattr__(self, "_fees", {fee.tool.value: fee.picos_per_call for fee in self.tool_fees})

    def is_long(self, prompt_tokens: int) -> bool:
        """Whether a prompt of this many tokens is billed at the long-context prices."""
        return self.long_context_above is not None and prompt_tokens > self.long_context_above

    def rates(self, tier: ServiceTier = ServiceTier.STANDARD, long_context: bool = False) -> RateTable:
        """The rate table that applies; a tier the model does not offer is priced as standard."""
        table = self._tables.get((tier, long_context))
        return table if table is not None else self._tables[(ServiceTier.STANDARD, long_context)]

    def offers(self, tier: ServiceTier) -> bool:
        """Whether the model has prices of its own for ``tier``."""
        return (tier, False) in self._tables

    def charge(self, tokens: Mapping[TokenType, int], tier: ServiceTier = ServiceTier.STANDARD,
               tool_calls: Mapping[str, int] | None = None) -> Charge:
        """The exact cost of a call's usage. Token counts are disjoint; a tool without a fee in
        the catalog is listed in ``unpriced_tools`` and charged nothing."""
        counted = [(kind, quantity) for kind in _ORDER if (quantity := tokens.get(kind, 0))]
        for kind, quantity in counted:
            if quantity < 0:
                raise ValueError(f"negative {kind} token count: {quantity}")
        long = self.is_long(sum(quantity for kind, quantity in counted if kind in _PROMPT))
        applied = tier if (tier, False) in self._tables else ServiceTier.STANDARD
        rates = self.rates(applied, long)
        lines = [Line(kind, quantity, rates[kind]) for kind, quantity in counted]
        unpriced: list[str] = []
        for name, calls in sorted((tool_calls or {}).items()):
            if calls < 0:
                raise ValueError(f"negative {name} call count: {calls}")
            fee = self._fees.get(name)
            if fee is None:
                unpriced.append(name)
            elif calls:
                lines.append(Line(_TOOLS[name], calls, fee))
        nanos = picos_to_nanos_ceil(sum(line.picos for line in lines))
        return Charge(nanos, tuple(lines), applied, long, tuple(unpriced))


__all__ = [
    "PROMPT_TYPES",
    "Charge",
    "Line",
    "Prices",
    "Pricing",
    "ServerTool",
    "ServiceTier",
    "TierPrices",
    "TokenType",
    "ToolFee",
    "service_tier_of",
]


def token_breakdown(input_tokens: int, cached_input_tokens: int, output_tokens: int, *, cache_write_5m: int = 0,
                    cache_write_1h: int = 0, reasoning: int = 0, audio_input: int = 0) -> dict[TokenType, int]:
    """Disjoint counts per billed token type from totals in OpenAI's convention (input includes the
    cached, cache-write and audio parts; output includes reasoning); they add up to the totals."""
    plain = max(0, input_tokens - cached_input_tokens - cache_write_5m - cache_write_1h - audio_input)
    thought = min(reasoning, output_tokens)
    counts = {TokenType.INPUT: plain, TokenType.CACHED_INPUT: cached_input_tokens,
              TokenType.CACHE_WRITE_5M: cache_write_5m, TokenType.CACHE_WRITE_1H: cache_write_1h,
              TokenType.AUDIO: audio_input, TokenType.OUTPUT: output_tokens - thought, TokenType.REASONING: thought}
    return {kind: n for kind, n in counts.items() if n}
