"""costwarden ledger export|import"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TextIO

import typer

from costwarden.cli.common import DbOption, console, err_console, fail, open_ledger, run
from costwarden.core.events import UsageEvent
from costwarden.ledger.export import read_jsonl, write_export

app = typer.Typer(help="Export and import the usage ledger.", no_args_is_help=True)


def parse_instant(text: str | None, option: str) -> datetime | None:
    """An ISO date or date-time; naive values are taken as UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise fail(f"{option} {text!r} is not an ISO date or date-time (e.g. 2026-11-01 or 2026-11-01T09:00:00Z)") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.command("export")
def export(
    since: Annotated[str | None, typer.Option(help="Only calls admitted at or after this ISO date/time (UTC if naive).")] = None,
    until: Annotated[str | None, typer.Option(help="Only calls admitted before this ISO date/time.")] = None,
    department: Annotated[str | None, typer.Option(help="Only this department.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of standard output.")] = None,
    db: DbOption = None,
) -> None:
    """Write usage events (and refused calls, marked record=rejection) for inspection and Finance."""
    if fmt not in ("jsonl", "csv"):
        raise fail(f"unknown format {fmt!r}: use jsonl or csv")
    start, end = parse_instant(since, "--since"), parse_instant(until, "--until")

    async def work() -> int:
        ledger = await open_ledger(db)
        try:
            if output is None:
                return await write_export(ledger, sys.stdout, fmt, start, end, department.upper() if department else None)
            with output.open("w", encoding="utf-8", newline="") as out:
                return await write_export(ledger, out, fmt, start, end, department.upper() if department else None)
        finally:
            await ledger.close()

    written = run(work)
    err_console.print(f"exported {written} records", highlight=False)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A JSON Lines export (costwarden ledger export).")],
    db: DbOption = None,
) -> None:
    """Load a JSON Lines export; records already present (same id) are left as they are."""

    async def work() -> tuple[int, int]:
        ledger = await open_ledger(db)
        events = rejections = 0
        try:
            with path.open(encoding="utf-8") as source:
                batch: list[UsageEvent] = []
                for record in _records(source):
                    if isinstance(record, UsageEvent):
                        batch.append(record)
                        events += 1
                        if len(batch) >= 1000:
                            await ledger.record_many(batch)
                            batch = []
                    else:
                        await ledger.record_rejection(record)
                        rejections += 1
                await ledger.record_many(batch)
        finally:
            await ledger.close()
        return events, rejections

    if not path.exists():
        raise fail(f"{path} does not exist")
    events, rejections = run(work)
    console.print(f"imported {events} events and {rejections} refused calls from {path}")


def _records(source: TextIO):  # type: ignore[no-untyped-def]
    try:
        yield from read_jsonl(source)
    except ValueError as exc:
        raise fail(str(exc)) from exc
