"""A call's usual usage is priced without its breakdown by token type (``service.billed`` gives
None), and that shortcut charges exactly what the breakdown does, for every bundled model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from costwarden.app.service import billed
from costwarden.core.catalog import ModelSpec
from costwarden.core.pricing import ServiceTier, service_tier_of
from costwarden.policy import bundled_catalog
from costwarden.providers import Usage

MODELS = sorted(bundled_catalog().values(), key=lambda model: model.id)
STANDARD_NAMES = st.sampled_from([None, "default", "standard", "auto", "STANDARD"])


@st.composite
def plain_usage(draw: st.DrawFn) -> Usage:
    # up to 3M input tokens: past every model's long-context threshold
    input_tokens = draw(st.integers(0, 3_000_000))
    return Usage(input_tokens, draw(st.integers(0, input_tokens)), draw(st.integers(0, 200_000)),
                 service_tier=draw(STANDARD_NAMES))


@given(st.sampled_from(MODELS), plain_usage())
def test_plain_usage_is_priced_by_the_shortcut_to_the_nano_dollar(model: ModelSpec, usage: Usage) -> None:
    assert billed(usage) is None
    breakdown = model.charge(usage.by_type(), service_tier_of(usage.service_tier), None).nanos
    assert model.cost(usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == breakdown


@given(plain_usage(), st.sampled_from(["cache_write_5m", "cache_write_1h", "reasoning", "audio", "tier", "tools",
                                       "cached"]))
def test_anything_else_is_priced_by_its_breakdown(usage: Usage, extra: str) -> None:
    input_tokens = usage.input_tokens + 1
    fields = {"cache_write_5m": Usage(input_tokens, 0, 10, cache_write_5m_tokens=1),
              "cache_write_1h": Usage(input_tokens, 0, 10, cache_write_1h_tokens=1),
              "reasoning": Usage(input_tokens, 0, 10, reasoning_tokens=1),
              "audio": Usage(input_tokens, 0, 10, audio_input_tokens=1),
              "tier": Usage(input_tokens, 0, 10, service_tier="priority"),
              "tools": Usage(input_tokens, 0, 10, tool_calls={"web_search": 1}),
              "cached": Usage(0, 1, 10)}
    found = billed(fields[extra])
    assert found is not None
    assert found.tokens == fields[extra].by_type()
    assert found.tier == (ServiceTier.PRIORITY if extra == "tier" else ServiceTier.STANDARD)
