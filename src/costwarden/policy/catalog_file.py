"""The bundled model catalog (``costwarden/data/catalog.yaml``) and merging a policy's models.

The bundled file is read with the same exact-Decimal YAML reader and the same entry schema as a
policy's ``models:`` section. A policy entry for a known model overrides it field by field; an
entry for a new model must give provider, tier, input and output.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.core.money import Price
from costwarden.errors import PolicyError
from costwarden.policy.checks import check_downgrades
from costwarden.policy.problems import Path, Problems, describe
from costwarden.policy.schema import ModelEntrySpec
from costwarden.policy.yamlnodes import YamlSyntaxError, parse_yaml

CATALOG_FILE = "catalog.yaml"
REQUIRED_FOR_NEW = ("provider", "tier", "input", "output")
REQUIRED_IN_BUNDLE = ("provider", "kind", "tier", "input", "output", "context_window", "max_output",
                      "source", "as_of")
PRICE_FIELDS = ("input", "cached_input", "output")
NULLABLE = ("cached_input", "downgrade_to", "source", "as_of")


def bundled_catalog_text() -> str:
    """The YAML text of the bundled catalog."""
    return (files("costwarden") / "data" / CATALOG_FILE).read_text(encoding="utf-8")


def read_entries(raw: object, prefix: Path, problems: Problems) -> dict[str, ModelEntrySpec]:
    """Validate a ``models:`` mapping entry by entry; invalid entries are left out (and reported)."""
    if not isinstance(raw, dict):
        problems.add(prefix, f"must be a mapping of model id to entry (got {describe(raw)})")
        return {}
    entries: dict[str, ModelEntrySpec] = {}
    for model_id, value in raw.items():
        entry = problems.validate(ModelEntrySpec, value, (*prefix, model_id))
        if entry is not None:
            entries[model_id] = entry
    return entries


def bundled_entries() -> dict[str, ModelEntrySpec]:
    """Every entry of the bundled catalog, complete; raises PolicyError if the file is broken."""
    try:
        document = parse_yaml(bundled_catalog_text())
    except YamlSyntaxError as exc:
        raise PolicyError([f"YAML syntax error: {exc}"], source=CATALOG_FILE) from exc
    problems = Problems(document.lines)
    data: Any = document.data
    entries = read_entries(data.get("models") if isinstance(data, dict) else data, ("models",), problems)
    for model_id, entry in entries.items():
        for name in REQUIRED_IN_BUNDLE:
            if getattr(entry, name) is None:
                problems.add(("models", model_id, name), "is required in the bundled catalog")
    if problems:
        raise PolicyError(problems.messages(), source=CATALOG_FILE)
    return entries


def bundled_catalog() -> Catalog:
    """The bundled catalog as a core Catalog (every provider, no policy overrides)."""
    entries = bundled_entries()
    catalog = Catalog({model_id: to_model_spec(model_id, entry) for model_id, entry in entries.items()})
    problems = Problems()
    check_downgrades(catalog, list(entries), {}, problems)
    if problems:
        raise PolicyError(problems.messages(), source=CATALOG_FILE)
    return catalog


def merge_entries(bundled: Mapping[str, ModelEntrySpec], overrides: Mapping[str, ModelEntrySpec],
                  problems: Problems) -> dict[str, ModelEntrySpec]:
    """The bundled entries with the policy's entries merged in, field by field."""
    merged = dict(bundled)
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
        merged[model_id] = base.model_copy(update=given)
    return merged


def to_model_spec(model_id: str, entry: ModelEntrySpec) -> ModelSpec:
    """A core ModelSpec from a complete entry (provider, tier, input and output are set)."""
    assert entry.provider is not None and entry.tier is not None
    assert entry.input is not None and entry.output is not None
    kind = entry.kind or "chat"
    # Sizes left out fall back to ModelSpec's defaults; an embedding model writes no output.
    sizes: dict[str, Any] = {"max_output": 0} if kind == "embedding" else {}
    if entry.max_output is not None:
        sizes["max_output"] = entry.max_output
    if entry.context_window is not None:
        sizes["context_window"] = entry.context_window
    return ModelSpec(
        id=model_id,
        provider=entry.provider,
        tier=entry.tier,
        input=Price(entry.input),
        output=Price(entry.output),
        cached_input=Price(entry.cached_input) if entry.cached_input is not None else None,
        downgrade_to=entry.downgrade_to,
        kind=kind,
        source=entry.source or "",
        as_of=entry.as_of or "",
        **sizes,
    )
