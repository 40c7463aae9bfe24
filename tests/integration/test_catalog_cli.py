"""``costwarden catalog list`` and ``costwarden catalog import``, as a user runs them (offline)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from typer.testing import CliRunner

from costwarden.cli import app
from costwarden.core.catalog import Catalog
from costwarden.policy.catalog_file import overlay_entries, to_model_spec, with_overlays
from costwarden.policy.problems import Problems

SAMPLE = Path(__file__).parents[1] / "data" / "litellm_prices_sample.json"
runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_list_shows_every_bundled_model_as_a_table() -> None:
    code, out = cli("catalog", "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["model", "provider", "kind", "tier"]
    models = {row.split()[0]: row.split() for row in rows}
    assert models["gpt-4o-mini"][4:7] == ["0.15", "0.075", "0.60"]
    assert {"claude-sonnet-4-5", "gemini-2.5-pro", "text-embedding-3-small"} <= models.keys()


def test_list_filters_by_provider_and_speaks_json() -> None:
    code, out = cli("catalog", "list", "--provider", "anthropic", "--format", "json")
    assert code == 0
    models = {model["id"]: model for model in json.loads(out)}
    assert {model["provider"] for model in models.values()} == {"anthropic"}
    sonnet = models["claude-sonnet-4-5"]
    assert (sonnet["input"], sonnet["cache_write_5m"], sonnet["cache_write_1h"]) == ("3.00", "3.75", "6.00")
    assert sonnet["long_context"]["above"] == 200000 and sonnet["long_context"]["output"] == "22.50"
    assert sonnet["service_tiers"]["batch"]["input"] == "1.50"
    assert sonnet["tool_calls_per_1000"] == {"web_search": "10.00"}
    assert "claude-sonnet-4-5-20250929" in sonnet["snapshots"]
    code, out = cli("catalog", "list", "--provider", "acme")
    assert code == 1 and "no models of provider 'acme'" in out


def test_list_shows_a_policys_catalog(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: 1\nmodels:\n  gpt-4o: {input: 2.00, source: contract, as_of: 2026-01-01}\n")
    code, out = cli("catalog", "list", "--policy", str(policy), "--provider", "openai", "--format", "json")
    assert code == 0
    gpt4o = next(model for model in json.loads(out) if model["id"] == "gpt-4o")
    assert (gpt4o["input"], gpt4o["source"], gpt4o["as_of"]) == ("2.00", "contract", "2026-01-01")


def test_import_writes_an_overlay_with_exact_prices(tmp_path: Path) -> None:
    out_file = tmp_path / "overlay.yaml"
    code, out = cli("catalog", "import", str(SAMPLE), "--out", str(out_file), "--as-of", "2026-11-30")
    assert code == 0 and "imported 7 models; left out 4" in out
    text = out_file.read_text()
    # 1.1e-06 and 2.75e-07 per token read as floats would give 1.0999999999999999 and 0.27499999999999997.
    assert "    input: 1.1\n    cached_input: 0.275\n" in text
    entries = overlay_entries(out_file)
    assert set(entries) == {"gpt-4o", "gpt-4o-2024-05-13", "o4-mini", "acme-gpt-house", "claude-sonnet-4-5",
                            "gemini-2.5-pro", "text-embedding-3-small"}
    assert entries["gpt-4o"].snapshots == ["gpt-4o-2024-08-06"]  # same prices: folded in
    assert entries["claude-sonnet-4-5"].cache_write_1h == Decimal("6")
    long = entries["claude-sonnet-4-5"].long_context
    assert long is not None and (long.above, long.cache_write_1h, long.output) == (200000, Decimal(12), Decimal("22.5"))
    assert entries["gemini-2.5-pro"].tool_calls == {"web_search": Decimal(35)}
    assert entries["gpt-4o"].tier is None and entries["acme-gpt-house"].tier == 2  # known models keep their tier
    assert entries["acme-gpt-house"].source == SAMPLE.name and entries["acme-gpt-house"].as_of == "2026-11-30"
    assert entries["gemini-2.5-pro"].source == "https://ai.google.dev/gemini-api/docs/pricing"


def test_an_overlay_merges_over_the_bundled_catalog(tmp_path: Path) -> None:
    out_file = tmp_path / "overlay.yaml"
    assert cli("catalog", "import", str(SAMPLE), "--out", str(out_file), "--tier", "1")[0] == 0
    problems = Problems()
    merged = with_overlays(["overlay.yaml"], tmp_path, problems)
    assert not problems
    catalog = Catalog({model_id: to_model_spec(model_id, entry) for model_id, entry in merged.items()})
    house = catalog.resolve("openai/acme-gpt-house")
    assert house is not None and (house.tier, house.input.usd_per_million) == (1, Decimal("0.3"))
    sonnet = catalog.resolve("claude-sonnet-4-5-20250929")
    assert sonnet is not None and sonnet.tier == 2 and sonnet.as_of != "2025-09-29"  # the overlay's date
    assert "claude-sonnet-4-5-20250929" in sonnet.snapshots
    broken = Problems()
    with_overlays(["missing.yaml"], tmp_path, broken)
    assert "catalog[0]: missing.yaml" in broken.messages()[0]


def test_import_to_standard_output_and_its_errors(tmp_path: Path) -> None:
    code, out = cli("catalog", "import", str(SAMPLE), "--as-of", "2026-11-30")
    assert code == 0 and "\n# costwarden catalog overlay, imported from" in out and "\nmodels:\n" in out
    not_json = tmp_path / "prices.json"
    not_json.write_text("[1, 2")
    code, out = cli("catalog", "import", str(not_json))
    assert code == 1 and "not JSON" in out
    not_a_map = tmp_path / "list.json"
    not_a_map.write_text("[1, 2]")
    code, out = cli("catalog", "import", str(not_a_map))
    assert code == 1 and "JSON object" in out
    code, out = cli("catalog", "import", str(SAMPLE), "--as-of", "yesterday")
    assert code == 1 and "not a date" in out
    code, out = cli("catalog", "import", str(tmp_path / "absent.json"))
    assert code == 1 and "absent.json" in out
