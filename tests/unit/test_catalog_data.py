"""The bundled model catalog: complete, exact, consistent, and sourced."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import yaml

from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.core.model_ids import is_snapshot_of
from costwarden.core.money import Price
from costwarden.core.pricing import Prices, ServiceTier
from costwarden.errors import PolicyError
from costwarden.policy import bundled_catalog, parse_policy
from costwarden.policy.catalog_file import bundled_catalog_text

REQUIRED = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o1", "o3", "o3-mini", "o4-mini",
    "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5.1", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.5",
    "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002",
    "claude-opus-4-1", "claude-opus-4", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5",
    "claude-3-5-haiku", "claude-sonnet-4", "claude-3-7-sonnet", "claude-3-5-sonnet", "claude-3-haiku",
    "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.0-flash-lite",
    "gemini-1.5-pro", "gemini-1.5-flash", "gemini-embedding-001",
]
PRICE_FIELDS = ("input", "cached_input", "cache_write_5m", "cache_write_1h", "output", "audio")
OFFICIAL_PAGES = {
    "openai": "https://platform.openai.com/docs/pricing",
    "anthropic": "https://docs.anthropic.com/en/docs/about-claude/pricing",
    "google": "https://ai.google.dev/gemini-api/docs/pricing",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return bundled_catalog()


@pytest.fixture(scope="module")
def raw_prices() -> dict[str, dict[str, str]]:
    """Each entry's price scalars exactly as written in the file (read by PyYAML's composer)."""
    root = yaml.compose(bundled_catalog_text(), Loader=yaml.SafeLoader)
    assert root is not None
    models = dict((key.value, value) for key, value in root.value)["models"]
    return {
        key.value: {field.value: scalar.value for field, scalar in entry.value
                    if field.value in PRICE_FIELDS}
        for key, entry in models.value
    }


def specs(catalog: Catalog) -> list[ModelSpec]:
    return list(catalog.values())


def test_every_required_model_is_present(catalog: Catalog) -> None:
    missing = [model_id for model_id in REQUIRED if model_id not in catalog]
    assert missing == []


def test_entries_have_valid_providers_tiers_and_kinds(catalog: Catalog) -> None:
    for spec in specs(catalog):
        assert spec.provider in OFFICIAL_PAGES, spec.id
        assert spec.tier in (1, 2, 3), spec.id
        assert spec.kind in ("chat", "embedding"), spec.id


def test_prices_are_the_exact_decimals_written_in_the_file(
    catalog: Catalog, raw_prices: dict[str, dict[str, str]]
) -> None:
    for model_id, written in raw_prices.items():
        spec = catalog[model_id]
        read = {name: getattr(spec, name) for name in PRICE_FIELDS}
        for field, text in written.items():
            price = read[field]
            assert price is not None
            assert type(price.usd_per_million) is Decimal
            assert price.usd_per_million == Decimal(text), (model_id, field)
            assert "e" not in text.lower(), (model_id, field)  # plain decimals only


def test_known_prices_and_costs_are_exact(catalog: Catalog) -> None:
    mini = catalog["gpt-4o-mini"]
    assert mini.input.usd_per_million == Decimal("0.15")
    assert mini.cached_input is not None and mini.cached_input.usd_per_million == Decimal("0.075")
    # 1M input + 1M output tokens on gpt-4o-mini cost exactly $0.75.
    assert mini.cost(1_000_000, 1_000_000) == 750_000_000
    # 1,000 cached input tokens at $0.075 / 1M are exactly 75,000 nano-dollars.
    assert mini.cost(1_000, 0, cached_input_tokens=1_000) == 75_000
    assert catalog["claude-opus-4-1"].output.usd_per_million == Decimal("75.00")
    assert catalog["gemini-2.5-flash"].input.usd_per_million == Decimal("0.30")


def test_embeddings_have_no_output(catalog: Catalog) -> None:
    embeddings = [spec for spec in specs(catalog) if spec.kind == "embedding"]
    assert {spec.id for spec in embeddings} >= {"text-embedding-3-small", "text-embedding-3-large",
                                                 "gemini-embedding-001"}
    for spec in embeddings:
        assert spec.output.usd_per_million == 0, spec.id
        assert spec.max_output == 0, spec.id
        assert spec.cached_input is None, spec.id


def test_chat_models_have_sane_sizes_and_cache_discounts(catalog: Catalog) -> None:
    for spec in specs(catalog):
        if spec.kind != "chat":
            continue
        assert 0 < spec.max_output <= spec.context_window, spec.id
        assert spec.input.usd_per_million > 0 and spec.output.usd_per_million > 0, spec.id
        if spec.cached_input is not None:
            assert spec.cached_input.usd_per_million < spec.input.usd_per_million, spec.id


def test_downgrade_chains_go_to_cheaper_models_of_the_same_provider_and_kind(catalog: Catalog) -> None:
    for spec in specs(catalog):
        assert catalog.downgrade_cycle(spec.id) is None, spec.id
        if spec.downgrade_to is None:
            continue
        target = catalog[spec.downgrade_to]
        assert (target.provider, target.kind) == (spec.provider, spec.kind), spec.id
        assert target.tier <= spec.tier, spec.id
        assert target.input.usd_per_million <= spec.input.usd_per_million, spec.id
        assert target.output.usd_per_million <= spec.output.usd_per_million, spec.id


def test_expert_models_reach_a_tier_one_model(catalog: Catalog) -> None:
    for spec in specs(catalog):
        if spec.tier == 3:
            assert catalog.chain(spec.id)[-1].tier == 1, spec.id


def test_every_entry_names_its_official_pricing_page_and_date(catalog: Catalog) -> None:
    for spec in specs(catalog):
        assert spec.source == OFFICIAL_PAGES[spec.provider], spec.id
        assert date.fromisoformat(spec.as_of) >= date(2025, 1, 1), spec.id
        assert spec.price_version.endswith(f"@{spec.as_of}"), spec.id


def test_a_policy_without_models_or_upstreams_gets_the_whole_catalog(catalog: Catalog) -> None:
    policy = parse_policy("version: 1\n")
    assert set(policy.catalog) == set(catalog)
    assert policy.catalog["gemini-2.5-pro"] == catalog["gemini-2.5-pro"]


def test_anthropic_cache_writes_are_one_and_a_quarter_and_two_times_input(catalog: Catalog) -> None:
    for spec in specs(catalog):
        if spec.provider != "anthropic" or spec.id == "claude-3-haiku":  # published as $0.30 and $0.50
            continue
        for prices in filter(None, (spec.pricing.standard, spec.pricing.long_context)):
            assert prices.cache_write_5m == Price(prices.input.usd_per_million * Decimal("1.25")), spec.id
            assert prices.cache_write_1h == Price(prices.input.usd_per_million * 2), spec.id
            assert prices.cached_input is not None and prices.cached_input.usd_per_million < prices.input.usd_per_million


def _all(prices: Prices) -> list[Price]:
    return [price for price in (prices.input, prices.cached_input, prices.cache_write_5m, prices.cache_write_1h,
                                prices.output, prices.audio, prices.image) if price is not None]


def test_long_context_prices_are_higher_and_fit_the_window(catalog: Catalog) -> None:
    long_models = [spec for spec in specs(catalog) if spec.pricing.long_context is not None]
    assert {"claude-sonnet-4-5", "gemini-2.5-pro", "gpt-5.4"} <= {spec.id for spec in long_models}
    for spec in long_models:
        long = spec.pricing.long_context
        assert long is not None and spec.long_context_above is not None
        # Sonnet 4 / 4.5 reach it only where a policy raises the window to Anthropic's 1M beta.
        assert 0 < spec.long_context_above <= spec.context_window, spec.id
        assert long.input.usd_per_million > spec.input.usd_per_million, spec.id
        assert long.output.usd_per_million > spec.output.usd_per_million, spec.id


def test_service_tiers_are_priced_as_the_providers_bill_them(catalog: Catalog) -> None:
    for spec in specs(catalog):
        standard = _all(spec.pricing.standard)
        for tier in spec.service_tiers:
            prices = _all(tier.standard)
            if tier.tier is ServiceTier.BATCH:  # half price at all three providers
                assert prices == [Price(p.usd_per_million / 2) for p in standard], spec.id
            elif tier.tier is ServiceTier.FLEX:
                assert tier.standard.input.usd_per_million < spec.input.usd_per_million, spec.id
            elif tier.tier is ServiceTier.PRIORITY:
                assert tier.standard.input.usd_per_million > spec.input.usd_per_million, spec.id
        if spec.provider in ("anthropic", "google"):
            assert spec.pricing.offers(ServiceTier.BATCH), spec.id


def test_every_name_belongs_to_one_entry_and_snapshots_follow_the_naming_rule(catalog: Catalog) -> None:
    assert catalog.conflicts == []
    for spec in specs(catalog):
        for snapshot in spec.snapshots:
            assert is_snapshot_of(snapshot, spec.id, spec.provider), (spec.id, snapshot)
        for name in spec.names:
            assert catalog.resolve(name) is spec, name


@pytest.mark.parametrize(("entry", "message"), [
    ("{service_tiers: {turbo: {multiplier: 0.5}}}", "service_tiers.turbo: Input should be 'standard', 'flex'"),
    ("{service_tiers: {standard: {multiplier: 0.5}}}", "service_tiers: standard prices are the entry's own"),
    ("{service_tiers: {batch: {}}}", "service_tiers.batch: give a multiplier, prices, or both"),
    ("{service_tiers: {batch: {multiplier: 0.3333333}}}", "service_tiers: a multiplier gives price 0.833333250 per 1M tokens has more than six decimals"),
    ("{tool_calls: {teleport: 3}}", "tool_calls.teleport: Input should be 'web_search'"),
    ("{long_context: {above: 1000, input: 5}}", "long_context.output: is required"),
])
def test_a_policys_billing_dimensions_are_validated(entry: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(f"version: 1\nmodels:\n  gpt-4o: {entry}\n")
    assert f"models.gpt-4o.{message}" in caught.value.message


def test_a_policy_prices_new_dimensions_of_a_known_model() -> None:
    policy = parse_policy("version: 1\nmodels:\n  gpt-4o:\n    service_tiers: {flex: {multiplier: 0.5}}\n"
                          "    tool_calls: {file_search: 2.00}\n")
    gpt4o = policy.catalog["gpt-4o"]
    assert gpt4o.pricing.offers(ServiceTier.FLEX) and gpt4o.pricing.offers(ServiceTier.PRIORITY)  # both kept
    fees = {fee.tool.value: fee.usd_per_thousand for fee in gpt4o.tool_fees}
    assert fees == {"file_search": Decimal("2.00"), "web_search": Decimal("25.00")}
    assert gpt4o.source == "" and gpt4o.as_of == ""  # new prices, no bundled provenance
