"""costwarden catalog list | import"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from costwarden import errors
from costwarden.cli.common import err_console, fail
from costwarden.core.catalog import Catalog, ModelSpec
from costwarden.core.money import Price
from costwarden.core.pricing import Prices
from costwarden.policy import bundled_catalog, load_policy
from costwarden.policy.catalog_file import bundled_entries
from costwarden.policy.catalog_import import PriceMapError, import_price_map, overlay_yaml, read_price_map
from costwarden.policy.yamlnodes import UnreadableFile, read_text

app = typer.Typer(help="Inspect the model catalog and import price files.", no_args_is_help=True)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"


ProviderOption = Annotated[str | None, typer.Option("--provider", help="Only this provider's models (openai, anthropic, google, ...).")]
FormatOption = Annotated[Format, typer.Option("--format", help="table, or json (one document, prices as exact decimal strings).")]
CatalogPolicyOption = Annotated[str | None, typer.Option("--policy", help="List this policy's catalog (bundled models merged with its models:) instead of the bundled one.")]


@app.command("list")
def list_models(provider: ProviderOption = None, output: FormatOption = Format.TABLE,
                policy: CatalogPolicyOption = None) -> None:
    """List the catalog's models with their tier, prices per 1M tokens, sizes and price source."""
    try:
        catalog: Catalog = load_policy(policy).catalog if policy else bundled_catalog()
    except errors.PolicyError as exc:
        err_console.print(exc.message, highlight=False, markup=False)
        raise typer.Exit(1) from exc
    specs = [spec for spec in catalog.values() if provider is None or spec.provider == provider]
    if provider is not None and not specs:
        raise fail(f"no models of provider {provider!r} (providers: {', '.join(sorted({s.provider for s in catalog.values()}))})")
    if output is Format.JSON:
        print(json.dumps([describe(spec) for spec in specs], indent=2))
        return
    print(table_text(specs), end="")


def _usd(price: Price | None) -> str | None:
    """USD per 1M tokens as written on price pages: at least two decimals, no trailing zeros beyond."""
    if price is None:
        return None
    value = price.usd_per_million.normalize()
    exponent = value.as_tuple().exponent
    return format(value, "f") if isinstance(exponent, int) and exponent < -2 else format(value, ".2f")


def _prices(prices: Prices) -> dict[str, str]:
    fields = {"input": prices.input, "cached_input": prices.cached_input, "cache_write_5m": prices.cache_write_5m,
              "cache_write_1h": prices.cache_write_1h, "output": prices.output, "audio": prices.audio,
              "image": prices.image}
    return {name: text for name, price in fields.items() if (text := _usd(price)) is not None}


def describe(spec: ModelSpec) -> dict[str, Any]:
    """One model as JSON-ready data: every price as an exact decimal string, USD per 1M tokens."""
    pricing = spec.pricing
    data: dict[str, Any] = {"id": spec.id, "provider": spec.provider, "kind": spec.kind, "tier": spec.tier,
                            **_prices(pricing.standard), "context_window": spec.context_window,
                            "max_output": spec.max_output, "downgrade_to": spec.downgrade_to,
                            "snapshots": list(spec.snapshots), "aliases": list(spec.aliases)}
    if pricing.long_context is not None:
        data["long_context"] = {"above": pricing.long_context_above, **_prices(pricing.long_context)}
    if pricing.tiers:
        data["service_tiers"] = {tier.tier.value: _prices(tier.standard) for tier in pricing.tiers}
    if pricing.tool_fees:
        data["tool_calls_per_1000"] = {fee.tool.value: format(fee.usd_per_thousand, "f") for fee in pricing.tool_fees}
    data.update(source=spec.source, as_of=spec.as_of, price_version=spec.price_version)
    return data


COLUMNS = ("model", "provider", "kind", "tier", "input", "cached", "output", "context", "max_out", "names", "as_of")
NUMERIC = frozenset({"tier", "input", "cached", "output", "context", "max_out", "names"})


def table_text(specs: list[ModelSpec]) -> str:
    """A plain aligned table (prices in USD per 1M tokens; ``names``: snapshots and aliases)."""
    rows = [COLUMNS, *([spec.id, spec.provider, spec.kind, str(spec.tier), _usd(spec.input) or "",
                        _usd(spec.cached_input) or "-", _usd(spec.output) or "", str(spec.context_window),
                        str(spec.max_output), str(len(spec.snapshots) + len(spec.aliases)), spec.as_of or "-"]
                       for spec in specs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.rjust(width) if name in NUMERIC else cell.ljust(width)
                       for name, cell, width in zip(COLUMNS, row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


@app.command("import")
def import_prices(
    path: Annotated[Path, typer.Argument(help="A price file in LiteLLM's model_prices_and_context_window.json format (read offline).")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the overlay YAML here (default: standard output).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Date of the prices, YYYY-MM-DD (default: today, UTC).")] = None,
    tier: Annotated[int, typer.Option("--tier", min=1, max=3, help="Tier of models the bundled catalog does not have.")] = 2,
) -> None:
    """Read a LiteLLM price file into a catalog overlay that a policy can include.

    Only OpenAI, Anthropic and Gemini API text and embedding models are imported; prices are read
    as exact decimals. Models the bundled catalog has keep its tier; dated ids with the prices of
    their model become its snapshots.
    """
    day = as_of or datetime.now(UTC).date().isoformat()
    try:
        date.fromisoformat(day)
    except ValueError:
        raise fail(f"--as-of {day!r} is not a date YYYY-MM-DD") from None
    try:
        data = read_price_map(read_text(path, "price file"))
    except (UnreadableFile, PriceMapError) as exc:
        raise fail(f"{path}: {exc}") from exc
    imported = import_price_map(data, as_of=day, source=path.name, default_tier=tier,
                                known=frozenset(bundled_entries()))
    header = (f"costwarden catalog overlay, imported from {path.name} on {day}.\n"
              "Prices are USD per 1M tokens; check them against each provider's pricing page before billing.")
    text = overlay_yaml(imported.entries, header)
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
    err_console.print(f"imported {len(imported.entries)} models; left out {len(imported.skipped)} "
                      f"(other providers, modes or unpriced){f'; wrote {out}' if out else ''}", highlight=False)
