from pathlib import Path

from costwarden.cli.reference import render

REFERENCE = Path(__file__).parents[2] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), "regenerate: python -m costwarden.cli.reference > docs/cli.md"
