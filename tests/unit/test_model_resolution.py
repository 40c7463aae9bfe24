"""Model ids as clients send them resolve to one catalog entry (SPEC section 9)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.core.catalog import RESOLVED_CACHE_SIZE, Catalog, ModelSpec
from costwarden.core.money import Price
from costwarden.errors import PolicyError
from costwarden.policy import bundled_catalog, parse_policy


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return bundled_catalog()


# (id as sent, entry it resolves to, id forwarded upstream)
SENT = [
    ("gpt-4o-2024-08-06", "gpt-4o", "gpt-4o-2024-08-06"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku", "claude-3-5-haiku-20241022"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku", "claude-3-5-haiku-latest"),
    ("openai/gpt-4o", "gpt-4o", "gpt-4o"),
    ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5", "claude-sonnet-4-5"),
    ("anthropic/claude-3-5-haiku-20241022", "claude-3-5-haiku", "claude-3-5-haiku-20241022"),
    ("o1", "o1", "o1"),
    ("claude-sonnet-4-0", "claude-sonnet-4", "claude-sonnet-4-0"),  # an explicit alias
    ("claude-opus-4-1@20250805", "claude-opus-4-1", "claude-opus-4-1@20250805"),  # Vertex AI's form
    ("gpt-4.1-2099-01-31", "gpt-4.1", "gpt-4.1-2099-01-31"),  # a snapshot not listed: the naming rule
    ("gemini-2.0-flash-001", "gemini-2.0-flash", "gemini-2.0-flash-001"),
    ("gemini/gemini-2.5-pro", "gemini-2.5-pro", "gemini-2.5-pro"),
    ("google/gemini-1.5-pro-002", "gemini-1.5-pro", "gemini-1.5-pro-002"),
]


@pytest.mark.parametrize(("sent", "entry", "upstream"), SENT)
def test_ids_clients_send_resolve_to_one_entry(catalog: Catalog, sent: str, entry: str, upstream: str) -> None:
    resolution = catalog.resolution(sent)
    assert resolution is not None
    assert (resolution.spec.id, resolution.upstream_id) == (entry, upstream)
    spec = catalog.resolve(sent)
    assert spec is not None and spec.id == entry


@pytest.mark.parametrize("sent", [
    "gpt-5-turbo",  # no such model
    "anthropic/gpt-4o",  # a prefix naming another provider
    "gpt-4o-20240806",  # Anthropic's date form on an OpenAI model
    "claude-3-5-haiku-2024-10-22",  # OpenAI's date form on an Anthropic model
    "chatgpt-4o-latest",  # OpenAI has no -latest rule: a different model
    "openai/",
    "/gpt-4o",
    "",
])
def test_ids_that_name_no_entry_resolve_to_nothing(catalog: Catalog, sent: str) -> None:
    assert catalog.resolve(sent) is None
    assert catalog.resolution(sent) is None


def test_a_snapshot_priced_apart_is_its_own_entry(catalog: Catalog) -> None:
    # gpt-4o-2024-05-13 is $5 / $15, not gpt-4o's $2.50 / $10: the exact id wins over the rule.
    spec = catalog.resolve("gpt-4o-2024-05-13")
    assert spec is not None and spec.id == "gpt-4o-2024-05-13"
    assert spec.input.usd_per_million == Decimal("5.00")


def test_the_mapping_keeps_exact_ids_only(catalog: Catalog) -> None:
    assert "gpt-4o-2024-08-06" not in catalog and catalog.get("gpt-4o-2024-08-06") is None
    assert "gpt-4o" in catalog and catalog.resolve("gpt-4o") is catalog["gpt-4o"]


def test_resolutions_are_cached_within_a_bound() -> None:
    spec = ModelSpec("m", "openai", 1, Price("1"), Price("2"), snapshots=("m-snap",))
    catalog = Catalog({"m": spec})
    first = catalog.resolution("m-2025-01-01")
    assert first is not None and catalog.resolution("m-2025-01-01") is first  # served from the cache
    for n in range(RESOLVED_CACHE_SIZE + 50):
        assert catalog.resolve(f"junk-{n}") is None
    assert len(catalog._resolved) == RESOLVED_CACHE_SIZE
    assert catalog.resolve("m-snap") is spec


def test_a_policy_override_applies_to_every_snapshot_and_alias() -> None:
    policy = parse_policy("version: 1\nmodels:\n  gpt-4o: {input: 2.00, output: 8.00}\n"
                          "  claude-sonnet-4: {input: 2.40}\n")
    for sent in ("gpt-4o", "gpt-4o-2024-08-06", "openai/gpt-4o-2024-11-20"):
        spec = policy.catalog.resolve(sent)
        assert spec is not None and spec.input.usd_per_million == Decimal("2.00"), sent
        assert spec.output.usd_per_million == Decimal("8.00")
    sonnet = policy.catalog.resolve("claude-sonnet-4-20250514")
    assert sonnet is not None and sonnet.input.usd_per_million == Decimal("2.40")
    # A negotiated input price moves the cache writes with it (1.25x and 2x input).
    assert sonnet.cache_write_5m == Price("3.00") and sonnet.cache_write_1h == Price("4.80")


def test_a_policy_adds_its_own_aliases() -> None:
    policy = parse_policy("version: 1\nmodels:\n  gpt-4o: {aliases: [house-default]}\n"
                          "  in-house: {provider: openai, tier: 1, input: 0.10, output: 0.20,"
                          " snapshots: [in-house-v2]}\n")
    house = policy.catalog.resolve("house-default")
    assert house is not None and house.id == "gpt-4o"
    assert "gpt-4o-2024-08-06" in house.snapshots  # the bundled names stay
    new = policy.catalog.resolve("openai/in-house-v2")
    assert new is not None and new.id == "in-house"


@pytest.mark.parametrize(("models", "message"), [
    ("  gpt-4o: {aliases: [gpt-4o-mini]}\n", "models.gpt-4o.aliases[0]: 'gpt-4o-mini' already names the model"),
    ("  gpt-4o: {aliases: [claude-3-5-haiku-20241022]}\n", "already names the model 'claude-3-5-haiku'"),
])
def test_a_name_can_belong_to_one_entry_only(models: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(f"version: 1\nmodels:\n{models}")
    assert message in caught.value.message


def test_an_allow_list_may_name_a_snapshot_and_allows_its_entry() -> None:
    from costwarden.policy import parse_policy

    policy = parse_policy("""
version: 1
departments:
  SALES: {models: [gpt-4o-2024-08-06, anthropic/claude-haiku-4-5]}
""")
    assert policy.departments["SALES"].models == frozenset({"gpt-4o", "claude-haiku-4-5"})
