"""Every billing dimension of SPEC section 9, priced to the nano-dollar.

Each row's expected cost is computed by hand from the provider's published price page (named in
the row, with the date of the prices in the bundled catalog) and written as a USD decimal; the
bundled catalog must charge exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.core.money import Price, usd_to_nanos
from costwarden.core.pricing import (
    Prices,
    Pricing,
    ServerTool,
    ServiceTier,
    TierPrices,
    TokenType,
    ToolFee,
    service_tier_of,
)
from costwarden.policy import bundled_catalog

T = TokenType
ANTHROPIC = "https://docs.anthropic.com/en/docs/about-claude/pricing"
OPENAI = "https://platform.openai.com/docs/pricing"
GOOGLE = "https://ai.google.dev/gemini-api/docs/pricing"


@dataclass(frozen=True)
class Row:
    name: str
    model: str
    tokens: dict[TokenType, int]
    expected_usd: str  # by hand, from the page
    source: str
    tier: ServiceTier = ServiceTier.STANDARD
    tools: dict[str, int] | None = None


TABLE = [
    # --- Anthropic prompt caching: writes 1.25x (5 min) and 2x (1 h) input, reads 0.1x.
    Row("1h cache write, Sonnet 4.5", "claude-sonnet-4-5", {T.CACHE_WRITE_1H: 100_000},
        "0.60", f"{ANTHROPIC} (2025-09-29): 100,000 x $6/M"),
    Row("5m cache write, Sonnet 4.5", "claude-sonnet-4-5", {T.CACHE_WRITE_5M: 100_000},
        "0.375", f"{ANTHROPIC} (2025-09-29): 100,000 x $3.75/M"),
    Row("cache read, Sonnet 4.5", "claude-sonnet-4-5", {T.CACHED_INPUT: 100_000},
        "0.03", f"{ANTHROPIC} (2025-09-29): 100,000 x $0.30/M"),
    Row("input + 1h write (issue 12's event)", "claude-sonnet-4-5", {T.INPUT: 60, T.CACHE_WRITE_1H: 100_000},
        "0.60018", f"{ANTHROPIC} (2025-09-29): 60 x $3/M + 100,000 x $6/M"),
    Row("1h cache write, Haiku 3.5", "claude-3-5-haiku", {T.CACHE_WRITE_1H: 1_000_000, T.OUTPUT: 1_000},
        "1.604", f"{ANTHROPIC} (2025-08-05): 1M x $1.60/M + 1,000 x $4/M"),
    # --- OpenAI cached input and reasoning tokens (billed as output).
    Row("cached input, gpt-4o-mini", "gpt-4o-mini", {T.INPUT: 9_000, T.CACHED_INPUT: 1_000, T.OUTPUT: 500},
        "0.001725", f"{OPENAI} (2025-08-07): 9,000 x $0.15/M + 1,000 x $0.075/M + 500 x $0.60/M"),
    Row("reasoning as output, o4-mini", "o4-mini", {T.INPUT: 1_000, T.OUTPUT: 200, T.REASONING: 1_800},
        "0.0099", f"{OPENAI} (2025-08-07): 1,000 x $1.10/M + (200 + 1,800) x $4.40/M"),
    # --- Long-context tiers: above the threshold, the whole call at the higher prices.
    Row("long context, Sonnet 4.5", "claude-sonnet-4-5", {T.INPUT: 250_000, T.OUTPUT: 1_000},
        "1.5225", f"{ANTHROPIC} (2025-09-29): > 200K input: 250,000 x $6/M + 1,000 x $22.50/M"),
    Row("at the threshold, Sonnet 4.5", "claude-sonnet-4-5", {T.INPUT: 200_000, T.OUTPUT: 1_000},
        "0.615", f"{ANTHROPIC} (2025-09-29): 200,000 is not above 200K: 200,000 x $3/M + 1,000 x $15/M"),
    Row("cache reads count toward the threshold", "claude-sonnet-4-5", {T.INPUT: 100_000, T.CACHED_INPUT: 150_000},
        "0.69", f"{ANTHROPIC} (2025-09-29): 250K prompt: 100,000 x $6/M + 150,000 x $0.60/M"),
    Row("long context 1h write, Sonnet 4.5", "claude-sonnet-4-5", {T.INPUT: 10, T.CACHE_WRITE_1H: 300_000},
        "3.60006", f"{ANTHROPIC} (2025-09-29): 10 x $6/M + 300,000 x $12/M"),
    Row("long context, Gemini 2.5 Pro", "gemini-2.5-pro", {T.INPUT: 300_000, T.OUTPUT: 10_000},
        "0.9", f"{GOOGLE} (2025-11-18): > 200k prompt: 300,000 x $2.50/M + 10,000 x $15/M"),
    Row("long context, Gemini 1.5 Pro (128k)", "gemini-1.5-pro", {T.INPUT: 128_001, T.OUTPUT: 1_000},
        "0.3300025", f"{GOOGLE} (2025-01-15): > 128k: 128,001 x $2.50/M + 1,000 x $10/M"),
    # --- Audio input where it has its own price.
    Row("audio input, Gemini 2.5 Flash", "gemini-2.5-flash", {T.INPUT: 100_000, T.AUDIO: 100_000, T.OUTPUT: 1_000},
        "0.1325", f"{GOOGLE} (2025-11-18): 100,000 x $0.30/M + 100,000 x $1.00/M + 1,000 x $2.50/M"),
    # --- Service tiers and batch.
    Row("flex, gpt-5", "gpt-5", {T.INPUT: 1_000_000, T.OUTPUT: 100_000},
        "1.125", f"{OPENAI} (2025-08-07): flex 1M x $0.625/M + 100,000 x $5/M", ServiceTier.FLEX),
    Row("priority, gpt-5", "gpt-5", {T.INPUT: 1_000_000, T.CACHED_INPUT: 1_000_000, T.OUTPUT: 100_000},
        "4.75", f"{OPENAI} (2025-08-07): priority 1M x $2.50/M + 1M x $0.25/M + 100,000 x $20/M",
        ServiceTier.PRIORITY),
    Row("batch, Sonnet 4.5", "claude-sonnet-4-5", {T.INPUT: 100_000, T.OUTPUT: 1_000_000},
        "7.65", f"{ANTHROPIC} (2025-09-29): batch 50%: 100,000 x $1.50/M + 1M x $7.50/M", ServiceTier.BATCH),
    Row("batch with long context, Gemini 2.5 Pro", "gemini-2.5-pro", {T.INPUT: 300_000, T.OUTPUT: 10_000},
        "0.45", f"{GOOGLE} (2025-11-18): batch 50% of 300,000 x $2.50/M + 10,000 x $15/M", ServiceTier.BATCH),
    Row("batch embeddings", "text-embedding-3-small", {T.INPUT: 1_000_000},
        "0.01", f"{OPENAI} (2025-08-07): batch 1M x $0.01/M", ServiceTier.BATCH),
    Row("a tier the model lacks is standard", "claude-haiku-4-5", {T.INPUT: 1_000_000},
        "1", f"{ANTHROPIC} (2025-10-15): no flex tier: 1M x $1/M", ServiceTier.FLEX),
    # --- Server-side tools priced per call.
    Row("web search, Sonnet 4.5", "claude-sonnet-4-5", {T.INPUT: 1_000},
        "0.033", f"{ANTHROPIC} (2025-09-29): 3 searches x $10/1,000 + 1,000 x $3/M", tools={"web_search": 3}),
    Row("web search, gpt-4o", "gpt-4o", {T.INPUT: 1_000, T.OUTPUT: 100},
        "0.0535", f"{OPENAI} (2025-08-07): 2 calls x $25/1,000 + 1,000 x $2.50/M + 100 x $10/M",
        tools={"web_search": 2}),
    Row("file search, gpt-5", "gpt-5", {},
        "0.0025", f"{OPENAI} (2025-08-07): 1 call x $2.50/1,000", tools={"file_search": 1}),
    # --- Rounded up to the nano-dollar: 18.75 nano-dollars are charged as 19.
    Row("rounded up", "gemini-1.5-flash", {T.CACHED_INPUT: 1},
        "0.000000019", f"{GOOGLE} (2025-01-15): 1 x $0.01875/M = $0.00000001875, up to the nano-dollar"),
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return bundled_catalog()


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_the_charge_equals_the_price_page_to_the_nano_dollar(catalog: Catalog, row: Row) -> None:
    charge = catalog[row.model].charge(row.tokens, row.tier, row.tools)
    assert charge.nanos == usd_to_nanos(Decimal(row.expected_usd)), row.source


def test_the_charge_says_which_prices_applied(catalog: Catalog) -> None:
    sonnet = catalog["claude-sonnet-4-5"]
    long = sonnet.charge({T.INPUT: 250_000}, ServiceTier.BATCH)
    assert (long.tier, long.long_context) == (ServiceTier.BATCH, True)
    assert long.picos_of(T.INPUT) == 250_000 * 3_000_000  # $3/M: half of the long-context $6/M
    missing = catalog["claude-haiku-4-5"].charge({T.INPUT: 1}, ServiceTier.PRIORITY, {"code_interpreter": 1})
    assert missing.tier is ServiceTier.STANDARD and missing.unpriced_tools == ("code_interpreter",)
    assert sonnet.charge({}, tool_calls={"web_search": 2}).picos_of(ServerTool.WEB_SEARCH) == 20_000_000_000


def test_a_call_is_rounded_once_not_line_by_line() -> None:
    spec = ModelSpec("m", "openai", 1, Price("0.0005"), Price("0.0005"), Price("0.0005"))  # half a nano each
    assert spec.charge({T.INPUT: 1, T.CACHED_INPUT: 1, T.OUTPUT: 1}).nanos == 2  # 1.5 up to 2, not 3
    assert spec.charge({T.INPUT: 1, T.CACHED_INPUT: 1}).nanos == 1


def test_the_old_cost_function_agrees_with_the_breakdown(catalog: Catalog) -> None:
    for model in ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "text-embedding-3-large"):
        spec = catalog[model]
        breakdown = spec.charge({T.INPUT: 9_001, T.CACHED_INPUT: 1_003, T.OUTPUT: 517 if spec.kind == "chat" else 0})
        assert spec.cost(10_004, 517 if spec.kind == "chat" else 0, 1_003) == breakdown.nanos, model


@pytest.mark.parametrize(("sent", "tier"), [
    ("priority", ServiceTier.PRIORITY), ("flex", ServiceTier.FLEX), ("auto", ServiceTier.STANDARD),
    ("default", ServiceTier.STANDARD), ("standard_only", ServiceTier.STANDARD), (None, ServiceTier.STANDARD),
    ("scale", ServiceTier.STANDARD), (42, ServiceTier.STANDARD), ("Priority", ServiceTier.PRIORITY),
])
def test_service_tier_names_from_the_apis(sent: object, tier: ServiceTier) -> None:
    assert service_tier_of(sent) is tier


def test_prices_a_model_leaves_out_fall_back_to_input_and_output() -> None:
    spec = ModelSpec("m", "openai", 1, Price("2"), Price("8"))
    rates = spec.pricing.rates()
    assert rates[T.CACHED_INPUT] == rates[T.CACHE_WRITE_1H] == rates[T.AUDIO] == rates[T.INPUT] == 2_000_000
    assert rates[T.REASONING] == rates[T.OUTPUT] == 8_000_000


def test_invalid_usage_and_prices_are_refused() -> None:
    standard = Prices(Price("1"), Price("2"))
    with pytest.raises(ValueError, match="negative"):
        Pricing(standard).charge({T.INPUT: -1})
    with pytest.raises(ValueError, match="negative"):
        Pricing(standard, tool_fees=(ToolFee(ServerTool.WEB_SEARCH, Decimal(10)),)).charge({}, tool_calls={"web_search": -1})
    with pytest.raises(ValueError, match="threshold"):
        Pricing(standard, long_context_above=1000)
    with pytest.raises(ValueError, match="six decimals"):
        Prices(Price("0.000001"), Price("2")).scaled(Decimal("0.5"))  # half a millionth: finer than the unit
    with pytest.raises(ValueError, match="pico"):
        _ = ToolFee(ServerTool.WEB_SEARCH, Decimal("0.0000000001")).picos_per_call
    tiered = Pricing(standard, tiers=(TierPrices(ServiceTier.FLEX, standard.scaled(Decimal("0.5"))),))
    assert tiered.offers(ServiceTier.FLEX) and not tiered.offers(ServiceTier.PRIORITY)


def test_the_old_cost_function_prices_long_prompts_at_long_context_rates(catalog: Catalog) -> None:
    # Admission's worst case and settlement both go through cost(): a 300k prompt on Gemini 2.5 Pro
    # is 300,000 x $2.50/M + 1,000 x $15/M = $0.765 (ai.google.dev/gemini-api/docs/pricing).
    assert catalog["gemini-2.5-pro"].cost(300_000, 1_000) == usd_to_nanos(Decimal("0.765"))
    assert catalog["gemini-2.5-pro"].cost(200_000, 1_000) == usd_to_nanos(Decimal("0.26"))  # 0.25 + 0.01
