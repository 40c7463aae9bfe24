"""The command line: a thin Typer shell over the library."""

from __future__ import annotations

from costwarden.cli.app import app, main

__all__ = ["app", "main"]
