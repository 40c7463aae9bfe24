"""Shared CLI plumbing: options, error translation, policy resolution."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from costwarden import errors
from costwarden.app.settings import db_url_from_env
from costwarden.core.policy import Policy
from costwarden.ledger import Ledger
from costwarden.policy import load_policy, parse_policy

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)

DbOption = Annotated[str | None, typer.Option("--db", help="Ledger database URL (default: COSTWARDEN_DB or sqlite:///./costwarden.db).")]
PolicyOption = Annotated[str | None, typer.Option("--policy", help="Policy file (default: the policy most recently loaded by a server on this database).")]


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run an async command, turning costwarden errors into a message and exit code 1."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except errors.PolicyError as exc:
        err_console.print(f"[red]{exc.message}[/red]", highlight=False)
        raise typer.Exit(1) from exc
    except errors.CostwardenError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}", highlight=False)
        raise typer.Exit(1) from exc


async def open_ledger(db: str | None) -> Ledger:
    """Open the ledger (bringing its schema up to date first)."""
    return await Ledger.open(db_url_from_env(db))


async def policy_for(ledger: Ledger, path: str | None) -> Policy | None:
    """``--policy`` when given, else the latest stored policy, else None."""
    if path:
        return load_policy(path)
    version = await ledger.latest_policy_version()
    return parse_policy(version.yaml, source=f"stored policy version {version.id}") if version else None


def fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}", highlight=False)
    sys.stderr.flush()
    return typer.Exit(1)
