"""The bundled model catalog: complete, exact, consistent, and sourced."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
import yaml

from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.policy import bundled_catalog, parse_policy
from costwarden.policy.catalog_file import bundled_catalog_text

REQUIRED = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini",
    "gpt-5", "gpt-5-mini", "gpt-5-nano", "text-embedding-3-small", "text-embedding-3-large",
    "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku", "claude-sonnet-4",
    "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash",
    "gemini-embedding-001",
]
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
    models = dict((key.value, value) for key, value in root.value)["models"]
    return {
        key.value: {field.value: scalar.value for field, scalar in entry.value
                    if field.value in ("input", "cached_input", "output")}
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
        read = {"input": spec.input, "output": spec.output, "cached_input": spec.cached_input}
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
