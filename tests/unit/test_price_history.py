"""Effective-dated prices: a catalog entry's ``price_history`` prices what was admitted before each
``until``; the entry's own prices everything after. Entries without a history keep one price."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwarden.core.catalog import Catalog, CatalogTimeline
from costwarden.errors import PolicyError
from costwarden.policy import parse_policy

POLICY = """
version: 1
models:
  gpt-4o:
    price_history:
      - {{until: 2024-08-06, input: 5.00, output: 15.00, as_of: 2024-05-13}}
      - {{until: 2024-10-02, input: 3.00, cached_input: 1.50, output: 12.00}}
{extra}
departments:
  HR: {{}}
"""
CATALOG = parse_policy(POLICY.format(extra="")).catalog
AUGUST_6 = datetime(2024, 8, 6, tzinfo=UTC)
OCTOBER_2 = datetime(2024, 10, 2, tzinfo=UTC)
INSTANTS = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC))
TOKENS = st.integers(min_value=0, max_value=10**9)


def test_each_era_has_its_prices_and_label() -> None:
    spec = CATALOG["gpt-4o"]
    assert spec.at(AUGUST_6 - timedelta(microseconds=1)).price_version == "5.00/-/15.00@2024-05-13"
    assert spec.at(AUGUST_6).price_version == "3.00/1.50/12.00@policy"
    assert spec.at(OCTOBER_2) is spec
    assert spec.price_version == "2.50/1.25/10.00@2025-08-07"  # the bundled entry's own, unchanged


@given(INSTANTS, TOKENS, TOKENS, st.data())
def test_the_cost_at_an_instant_is_its_eras_prices_exactly(when: datetime, input_tokens: int, output_tokens: int,
                                                           data: st.DataObject) -> None:
    cached = data.draw(st.integers(min_value=0, max_value=input_tokens))
    per_million = ((5_000_000, 5_000_000, 15_000_000) if when < AUGUST_6 else
                   (3_000_000, 1_500_000, 12_000_000) if when < OCTOBER_2 else (2_500_000, 1_250_000, 10_000_000))
    picos = (input_tokens - cached) * per_million[0] + cached * per_million[1] + output_tokens * per_million[2]
    # a price of P USD per 1M tokens is P x 10^6 pico-dollars a token: picos, rounded up once to nanos
    expected = -((-picos) // 1000)
    assert CATALOG["gpt-4o"].at(when).cost(input_tokens, output_tokens, cached) == expected


@given(INSTANTS)
def test_an_entry_without_history_has_one_price(when: datetime) -> None:
    spec = CATALOG["gpt-4o-mini"]
    assert spec.at(when) is spec


def test_a_policy_that_reprices_an_entry_drops_the_list_price_history() -> None:
    overlay = parse_policy(POLICY.format(extra="").replace("models:\n  gpt-4o:\n",
                                                           "models:\n  gpt-4o-mini:\n    input: 0.10\n  gpt-4o:\n"))
    base = parse_policy(POLICY.format(extra="")).catalog
    assert overlay.catalog["gpt-4o"].history == base["gpt-4o"].history  # a history given is kept
    negotiated = parse_policy("version: 1\nmodels:\n  gpt-4o: {input: 2.00}\ndepartments:\n  HR: {}\n")
    spec = negotiated.catalog["gpt-4o"]
    assert spec.history == () and spec.at(datetime(2020, 1, 1, tzinfo=UTC)) is spec


def test_eras_are_listed_oldest_first() -> None:
    text = POLICY.format(extra="").replace("until: 2024-10-02", "until: 2024-08-01")
    with pytest.raises(PolicyError, match="price_history: list earlier prices oldest first"):
        parse_policy(text)


def test_an_era_needs_its_date_and_prices() -> None:
    text = POLICY.format(extra="").replace("{until: 2024-08-06, input: 5.00, output: 15.00, as_of: 2024-05-13}",
                                           "{input: 5.00}")
    with pytest.raises(PolicyError) as refused:
        parse_policy(text)
    said = str(refused.value)
    assert "price_history[0].until: is required" in said and "price_history[0].output: is required" in said


def test_a_timeline_prices_by_the_catalog_in_force_and_builds_only_those_it_uses() -> None:
    built: list[str] = []

    def catalog(name: str, text: str) -> Callable[[], Catalog]:
        def build() -> Catalog:
            built.append(name)
            return parse_policy(text).catalog
        return build

    negotiated = "version: 1\nmodels:\n  gpt-4o: {input: 2.00}\ndepartments:\n  HR: {}\n"
    timeline = CatalogTimeline([(datetime(2024, 9, 1, tzinfo=UTC), catalog("dated", POLICY.format(extra=""))),
                                (datetime(2025, 1, 1, tzinfo=UTC), catalog("negotiated", negotiated)),
                                (datetime(2026, 1, 1, tzinfo=UTC), catalog("unused", negotiated))])
    before = timeline.resolve_at("gpt-4o", datetime(2024, 6, 1, tzinfo=UTC))  # before any: the first
    later = timeline.resolve_at("gpt-4o", datetime(2025, 6, 1, tzinfo=UTC))
    assert before is not None and before.price_version == "5.00/-/15.00@2024-05-13"
    assert later is not None and later.price_version.startswith("2.00/")
    assert timeline.resolve_at("gpt-17", datetime(2025, 6, 1, tzinfo=UTC)) is None
    assert built == ["dated", "negotiated"]
