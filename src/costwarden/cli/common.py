"""Shared CLI plumbing: options, error translation, policy resolution."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from costwarden import errors
from costwarden.app.preflight import check_listen
from costwarden.app.settings import db_url_from_env
from costwarden.core.audit import CLI_ROLE, Actor, AuditAction, AuditEntry
from costwarden.ledger import Ledger

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
        err_console.print(Text(exc.message, style="red"), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    except errors.CostwardenError as exc:
        raise fail(exc.message) from exc


async def open_ledger(db: str | None) -> Ledger:
    """Open the ledger (bringing its schema up to date first)."""
    return await Ledger.open(db_url_from_env(db))


@asynccontextmanager
async def ledger_at(db: str | None) -> AsyncIterator[Ledger]:
    """The ledger, open for the block and closed after it, whatever happens inside."""
    ledger = await open_ledger(db)
    try:
        yield ledger
    finally:
        await ledger.close()


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on one line of stderr (never wrapped at the terminal's width, and
    with any [brackets] in the message shown as they are); the caller raises the returned Exit."""
    line = " ".join(message.split())  # a driver's message may span lines (psycopg: "...\n\tIs the server running")
    err_console.print(Text.assemble(("error:", "red"), " ", line), highlight=False, soft_wrap=True)
    sys.stderr.flush()
    return typer.Exit(1)


def listen_or_fail(host: str, port: int, option: str = "--port") -> None:
    """End the command in one line unless ``host:port`` (given as ``option``) can be listened on:
    a port out of range or in use, a host that is no interface here."""
    try:
        check_listen(host, port, option)
    except errors.ConfigurationError as exc:
        raise fail(exc.message) from None


def cli_actor() -> Actor:
    """Who the audit log names for a change made on the command line: the operating-system user."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no password-database entry (some containers)
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return Actor(user, CLI_ROLE)


async def audit(ledger: Ledger, action: AuditAction, target: str | None, department: str | None,
                detail: Mapping[str, object]) -> None:
    """Append one audit entry for a change made on the command line now."""
    entry = AuditEntry(datetime.now(UTC), cli_actor(), action, target=target, department=department,
                       detail=detail)
    await ledger.record_audit([entry])
