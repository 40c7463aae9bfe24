"""The bundled model catalog (``costwarden/data/catalog.yaml``), catalog overlays, and merging
a policy's models.

The bundled file and overlays (``costwarden catalog import``) are read with the same exact-Decimal
YAML reader and the same entry schema as a policy's ``models:`` section. An entry for a known
model overrides it field by field (its snapshots and aliases are added to the known ones); an
entry for a new model must give provider, tier, input and output.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib.resources import files
from itertools import pairwise
from typing import Any

from pydantic import model_validator

from costwarden.core.catalog import Catalog, ModelSpec, PriceEra
from costwarden.core.money import Price
from costwarden.core.pricing import Prices, ServerTool, ServiceTier, TierPrices, ToolFee
from costwarden.errors import PolicyError
from costwarden.policy.checks import check_downgrades
from costwarden.policy.fields import IsoDate, PositiveAmount, PositiveWhole, PriceValue, Text
from costwarden.policy.problems import FieldProblem, Path, Problems, describe
from costwarden.policy.schema import ModelEntrySpec, Spec
from costwarden.policy.yamlnodes import UnreadableFile, YamlSyntaxError, parse_yaml, read_text

CATALOG_FILE = "catalog.yaml"
REQUIRED_FOR_NEW = ("provider", "tier", "input", "output")
REQUIRED_IN_BUNDLE = ("provider", "kind", "tier", "input", "output", "context_window", "max_output",
                      "source", "as_of")
CACHE_WRITES = ("cache_write_5m", "cache_write_1h")
PRICE_FIELDS = ("input", "cached_input", "output", *CACHE_WRITES, "audio", "image", "long_context",
                "service_tiers", "tool_calls")
NULLABLE = ("cached_input", "downgrade_to", "source", "as_of", *CACHE_WRITES, "audio", "image", "long_context",
            "service_tiers", "tool_calls", "snapshots", "aliases", "price_history")
NAME_LISTS = ("snapshots", "aliases")
# Prompt-cache writes as multiples of the input price, where a provider bills them and an entry
# lists none (Anthropic: 1.25x for a 5-minute write, 2x for a 1-hour write).
CACHE_WRITE_RULES = {"anthropic": (Decimal("1.25"), Decimal("2"))}


class PricesSpec(Spec):
    """Prices in USD per 1M tokens; each one left out falls back as the catalog says."""

    input: PriceValue | None = None
    cached_input: PriceValue | None = None
    cache_write_5m: PriceValue | None = None
    cache_write_1h: PriceValue | None = None
    output: PriceValue | None = None
    audio: PriceValue | None = None
    image: PriceValue | None = None


class LongContextSpec(PricesSpec):
    """``{above: 200000, input: 6.00, output: 22.50, ...}``: prices for a whole call whose prompt
    is longer than ``above`` tokens."""

    above: PositiveWhole
    input: PriceValue
    output: PriceValue


class ServiceTierSpec(PricesSpec):
    """``{multiplier: 0.5}`` or explicit prices; prices left out are the standard ones times the
    multiplier (1 when none is given)."""

    multiplier: PositiveAmount | None = None

    @model_validator(mode="after")
    def _something(self) -> ServiceTierSpec:
        if not self.model_fields_set:
            raise ValueError("give a multiplier, prices, or both")
        return self


class PriceEraSpec(PricesSpec):
    """``{until: 2024-10-02, input: 5.00, output: 15.00}``: the standard prices an entry had before
    ``until`` (a UTC day); long-context and service-tier prices follow from them as from the entry's."""

    until: IsoDate
    input: PriceValue
    output: PriceValue
    as_of: IsoDate | None = None


class CatalogEntrySpec(ModelEntrySpec):
    """A catalog entry with every billing dimension of SPEC section 9."""

    cache_write_5m: PriceValue | None = None
    cache_write_1h: PriceValue | None = None
    audio: PriceValue | None = None
    image: PriceValue | None = None
    long_context: LongContextSpec | None = None
    service_tiers: dict[ServiceTier, ServiceTierSpec] | None = None
    tool_calls: dict[ServerTool, PriceValue] | None = None  # USD per 1,000 calls
    snapshots: list[Text] | None = None
    aliases: list[Text] | None = None
    price_history: list[PriceEraSpec] | None = None  # earlier prices, oldest first

    @model_validator(mode="after")
    def _tiers_other_than_standard(self) -> CatalogEntrySpec:
        if self.service_tiers and ServiceTier.STANDARD in self.service_tiers:
            raise FieldProblem("service_tiers", "standard prices are the entry's own input, output...; "
                               "list flex, priority or batch here")
        untils = [era.until for era in self.price_history or ()]
        if any(later <= earlier for earlier, later in pairwise(untils)):
            raise FieldProblem("price_history", "list earlier prices oldest first, each until after the one before")
        return self


def bundled_catalog_text() -> str:
    """The YAML text of the bundled catalog."""
    return (files("costwarden") / "data" / CATALOG_FILE).read_text(encoding="utf-8")


def read_entries(raw: object, prefix: Path, problems: Problems) -> dict[str, CatalogEntrySpec]:
    """Validate a ``models:`` mapping entry by entry; invalid entries are left out (and reported)."""
    if not isinstance(raw, dict):
        problems.add(prefix, f"must be a mapping of model id to entry (got {describe(raw)})")
        return {}
    entries: dict[str, CatalogEntrySpec] = {}
    for model_id, value in raw.items():
        entry = problems.validate(CatalogEntrySpec, value, (*prefix, model_id))
        if entry is not None:
            entries[model_id] = entry
    return entries


def _catalog_entries(text: str, source: str) -> tuple[dict[str, CatalogEntrySpec], Problems]:
    """The entries of a catalog file's ``models:`` mapping, and the problems found reading them."""
    try:
        document = parse_yaml(text)
    except YamlSyntaxError as exc:
        raise PolicyError([f"YAML syntax error: {exc}"], source=source) from exc
    problems = Problems(document.lines)
    for problem in document.problems:
        problems.add(problem.path, problem.message, problem.line)
    data: Any = document.data
    if isinstance(data, dict) and set(data) - {"models"}:
        problems.add((), f"a catalog file has only a models: mapping (found {', '.join(sorted(set(data) - {'models'}))})")
    return read_entries(data.get("models") if isinstance(data, dict) else data, ("models",), problems), problems


def bundled_entries() -> dict[str, CatalogEntrySpec]:
    """Every entry of the bundled catalog, complete; raises PolicyError if the file is broken."""
    return dict(_bundled_entries())


@functools.cache
def _bundled_entries() -> dict[str, CatalogEntrySpec]:
    # Read once per process: the file ships with the package, and every policy load merges it.
    entries, problems = _catalog_entries(bundled_catalog_text(), CATALOG_FILE)
    for model_id, entry in entries.items():
        for name in REQUIRED_IN_BUNDLE:
            if getattr(entry, name) is None:
                problems.add(("models", model_id, name), "is required in the bundled catalog")
    if problems:
        raise PolicyError(problems.messages(), source=CATALOG_FILE)
    return entries


def overlay_entries(path: str | os.PathLike[str]) -> dict[str, CatalogEntrySpec]:
    """The entries of a catalog overlay file (what ``costwarden catalog import`` writes); raises
    PolicyError listing every problem. Merge them over the bundled entries with ``merge_entries``."""
    name = os.fspath(path)
    try:
        text = read_text(path, "catalog overlay")
    except UnreadableFile as exc:
        raise PolicyError([str(exc)], source=name) from None
    entries, problems = _catalog_entries(text, name)
    if problems:
        raise PolicyError(problems.messages(), source=name)
    return entries


def with_overlays(paths: list[str], base_dir: str | os.PathLike[str] | None,
                  problems: Problems, prefix: Path = ("catalog",)) -> dict[str, CatalogEntrySpec]:
    """The bundled entries with each overlay file merged in, in order (relative paths are read
    from ``base_dir``, the policy file's directory); a broken overlay is reported and skipped."""
    merged = bundled_entries()
    for index, path in enumerate(paths):
        full = os.path.join(base_dir, path) if base_dir is not None else path
        try:
            overlay = overlay_entries(full)
        except PolicyError as exc:
            for message in exc.problems:
                problems.add((*prefix, index), f"{path}: {message}")
            continue
        overlay_problems = Problems()
        merged = merge_entries(merged, overlay, overlay_problems)
        for message in overlay_problems.messages():
            problems.add((*prefix, index), f"{path}: {message}")
    return merged


def bundled_catalog() -> Catalog:
    """The bundled catalog as a core Catalog (every provider, no policy overrides)."""
    entries = bundled_entries()
    catalog = Catalog({model_id: to_model_spec(model_id, entry) for model_id, entry in entries.items()})
    problems = Problems()
    check_downgrades(catalog, list(entries), {}, problems)
    if problems:
        raise PolicyError(problems.messages(), source=CATALOG_FILE)
    return catalog


def merge_entries(bundled: Mapping[str, CatalogEntrySpec], overrides: Mapping[str, CatalogEntrySpec],
                  problems: Problems) -> dict[str, CatalogEntrySpec]:
    """The bundled entries with the policy's entries merged in, field by field."""
    merged = dict(bundled)
    _merge(merged, bundled, overrides, problems)
    _check_names(merged, overrides, problems)
    for model_id in overrides:
        entry = merged.get(model_id)
        if entry is None:
            continue
        try:
            to_model_spec(model_id, entry)
        except ValueError as exc:  # a multiplier that makes an inexact price
            problems.add(("models", model_id, "service_tiers"),
                         f"a multiplier gives {exc}; give that tier's prices instead")
            del merged[model_id]
    return merged


def _merge(merged: dict[str, CatalogEntrySpec], bundled: Mapping[str, CatalogEntrySpec],
           overrides: Mapping[str, CatalogEntrySpec], problems: Problems) -> None:
    for model_id, entry in overrides.items():
        given = {name: getattr(entry, name) for name in entry.model_fields_set}
        base = bundled.get(model_id)
        if base is None:
            missing = [name for name in REQUIRED_FOR_NEW if given.get(name) is None]
            if missing:
                problems.add(("models", model_id), "a model that is not in the bundled catalog needs "
                             f"provider, tier, input and output; missing: {', '.join(missing)}")
                continue
            merged[model_id] = entry
            continue
        nulls = [name for name, value in given.items() if value is None and name not in NULLABLE]
        for name in nulls:
            problems.add(("models", model_id, name), "cannot be null")
        if nulls:
            continue
        repriced = any(name in given and given[name] != getattr(base, name) for name in PRICE_FIELDS)
        if repriced and not {"source", "as_of"} & given.keys():
            # New prices without their own provenance must not carry the bundled page's date.
            given.update(source=None, as_of=None)
        if repriced and "price_history" not in given:
            # The policy's (negotiated) prices replace the list prices of every era, not only today's.
            given["price_history"] = None
        if "input" in given and given["input"] != base.input:
            # Cache writes are billed as multiples of the input price: a new input price moves them.
            given.update({name: None for name in CACHE_WRITES if name not in given})
        for name in NAME_LISTS:  # a policy adds names to an entry; it does not take its names away
            if given.get(name) is not None:
                given[name] = list(dict.fromkeys([*(getattr(base, name) or []), *given[name]]))
        for name in ("service_tiers", "tool_calls"):
            if given.get(name) is not None:
                given[name] = {**(getattr(base, name) or {}), **given[name]}
        merged[model_id] = base.model_copy(update=given)


def _check_names(merged: Mapping[str, CatalogEntrySpec], overrides: Mapping[str, CatalogEntrySpec],
                 problems: Problems) -> None:
    """A snapshot or alias names one entry, and never another entry's id."""
    owners: dict[str, str] = {}
    for model_id, entry in merged.items():
        for field in NAME_LISTS:
            for index, name in enumerate(getattr(entry, field) or []):
                owner = name if name in merged else owners.get(name)
                if owner is None or owner == model_id:
                    owners[name] = model_id
                    continue
                # Report it on the policy's entry when one is involved: that is the one to change.
                at = model_id if model_id in overrides or owner not in overrides else owner
                problems.add(("models", at, field, index) if at == model_id else ("models", at),
                             f"{name!r} already names the model {owner if at == model_id else model_id!r}")


def to_model_spec(model_id: str, entry: CatalogEntrySpec) -> ModelSpec:
    """A core ModelSpec from a complete entry (provider, tier, input and output are set).

    Raises ValueError when a service tier's multiplier gives a price finer than the catalog's
    unit (a millionth of a dollar per 1M tokens)."""
    assert entry.provider is not None and entry.tier is not None
    assert entry.input is not None and entry.output is not None
    kind = entry.kind or "chat"
    # Sizes left out fall back to ModelSpec's defaults; an embedding model writes no output.
    sizes: dict[str, Any] = {"max_output": 0} if kind == "embedding" else {}
    if entry.max_output is not None:
        sizes["max_output"] = entry.max_output
    if entry.context_window is not None:
        sizes["context_window"] = entry.context_window
    standard = _prices(entry, entry.provider)
    long = entry.long_context
    long_prices = _prices(long, entry.provider) if long is not None else None
    return ModelSpec(
        id=model_id,
        provider=entry.provider,
        tier=entry.tier,
        input=standard.input,
        output=standard.output,
        cached_input=standard.cached_input,
        downgrade_to=entry.downgrade_to,
        kind=kind,
        source=entry.source or "",
        as_of=entry.as_of or "",
        cache_write_5m=standard.cache_write_5m,
        cache_write_1h=standard.cache_write_1h,
        audio=standard.audio,
        image=standard.image,
        long_context_above=long.above if long is not None else None,
        long_context=long_prices,
        service_tiers=tuple(_tier(tier, spec, standard, long_prices)
                            for tier, spec in sorted((entry.service_tiers or {}).items())),
        tool_fees=tuple(ToolFee(tool, fee) for tool, fee in sorted((entry.tool_calls or {}).items())),
        snapshots=tuple(entry.snapshots or ()),
        aliases=tuple(entry.aliases or ()),
        history=tuple(_era(model_id, entry, era) for era in entry.price_history or ()),
        **sizes,
    )


def _era(model_id: str, entry: CatalogEntrySpec, era: PriceEraSpec) -> PriceEra:
    """The entry as priced before ``era.until``: its prices replaced by the era's."""
    prices = {name: getattr(era, name) for name in PricesSpec.model_fields}
    earlier = entry.model_copy(update={**prices, "as_of": era.as_of, "price_history": None})
    until = datetime.combine(date.fromisoformat(era.until), datetime.min.time(), UTC)
    return PriceEra(until, to_model_spec(model_id, earlier))


def _price(value: Decimal | None) -> Price | None:
    return Price(value) if value is not None else None


def _prices(spec: PricesSpec | CatalogEntrySpec, provider: str) -> Prices:
    """Complete prices from a spec whose input and output are set, with the provider's cache-write
    rule for writes it does not list."""
    assert spec.input is not None and spec.output is not None
    writes = [spec.cache_write_5m, spec.cache_write_1h]
    rule = CACHE_WRITE_RULES.get(provider)
    if rule is not None:
        writes = [given if given is not None else spec.input * factor for given, factor in zip(writes, rule, strict=True)]
    return Prices(Price(spec.input), Price(spec.output), _price(spec.cached_input), _price(writes[0]),
                  _price(writes[1]), _price(spec.audio), _price(spec.image))


def _tier(tier: ServiceTier, spec: ServiceTierSpec, standard: Prices, long: Prices | None) -> TierPrices:
    """A service tier's complete prices: those it lists, the rest scaled from the standard ones."""
    factor = spec.multiplier if spec.multiplier is not None else Decimal(1)
    scaled = standard.scaled(factor)
    given = {name: Price(value) for name in PricesSpec.model_fields if (value := getattr(spec, name)) is not None}
    prices = Prices(**{name: given.get(name, getattr(scaled, name)) for name in PricesSpec.model_fields})
    return TierPrices(tier, prices, long.scaled(factor) if long is not None else None)
