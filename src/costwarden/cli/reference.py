"""The CLI reference (docs/cli.md), generated from ``--help`` so that it cannot drift.

Regenerate with ``python -m costwarden.cli.reference > docs/cli.md``; a test keeps it current.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from costwarden.cli.app import app

WIDTH = 100


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += _paths(sub, (*prefix, name))
    return paths


def render() -> str:
    """Markdown with the help text of every command, in a fixed width."""
    runner = CliRunner()
    sections = ["# costwarden command reference", "",
                "Generated from `--help` by `python -m costwarden.cli.reference`; do not edit by hand.", ""]
    for path in _paths(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH),
                                                            "NO_COLOR": "1", "_TYPER_FORCE_DISABLE_TERMINAL": "1"},
                               prog_name="costwarden")
        title = " ".join(("costwarden", *path))
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        sections += [f"## {title}", "", "```text", text, "```", ""]
    return "\n".join(sections)


if __name__ == "__main__":
    print(render(), end="")
