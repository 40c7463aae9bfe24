"""costwarden ledger export|import"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from costwarden.cli.common import (
    DbOption,
    PolicyOption,
    console,
    err_console,
    fail,
    ledger_at,
    run,
)
from costwarden.core.catalog import Catalog, CatalogTimeline
from costwarden.errors import PolicyError
from costwarden.ledger import Ledger, PolicyVersion
from costwarden.ledger.export import ImportResult, write_export
from costwarden.ledger.import_rows import ImportRefused
from costwarden.ledger.import_stream import import_lines
from costwarden.policy import bundled_catalog, load_policy, parse_policy

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
        async with ledger_at(db) as ledger:
            where = None if department is None else {"department": department.upper()}
            total = sum(row.requests for row in await ledger.totals(start, end, where=where))
            with progress_bar("exporting", total) as advance:
                if output is None:
                    return await write_export(ledger, sys.stdout, fmt, start, end,
                                              department.upper() if department else None, progress=advance)
                with output.open("w", encoding="utf-8", newline="") as out:
                    return await write_export(ledger, out, fmt, start, end, department.upper() if department else None,
                                              progress=advance)

    written = run(work)
    err_console.print(f"exported {written} records", highlight=False)


async def catalog_timeline(ledger: Ledger) -> Catalog | CatalogTimeline:
    """The catalogs of the policy versions stored in the ledger, each in force from the time it was
    loaded (read when first needed); the bundled catalog when there is none."""
    versions = await ledger.policy_versions()
    if not versions:
        return bundled_catalog()
    return CatalogTimeline([(version.loaded_at, partial(_catalog_of, version)) for version in versions])


def _catalog_of(version: PolicyVersion) -> Catalog:
    return parse_policy(version.yaml, source=f"stored policy version {version.id}").catalog


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A JSON Lines export (costwarden ledger export).")],
    db: DbOption = None,
    policy: PolicyOption = None,
) -> None:
    """Load a JSON Lines export, re-pricing every event at the prices in force when it was admitted:
    those of the policy version then in force (or of --policy; the bundled catalog when the
    database has no policy and none is given), by the catalog's price history.
    A file with a negative, inconsistent or unknown-model record is refused whole, listing each
    with its line; records already present (same id) are left as they are."""
    if not path.exists():
        raise fail(f"{path} does not exist")

    async def work() -> ImportResult:
        async with ledger_at(db) as ledger:
            catalog = load_policy(policy).catalog if policy else await catalog_timeline(ledger)
            lines = _line_count(path)
            with path.open(encoding="utf-8") as source, progress_bar("importing", lines) as advance:
                try:
                    return await ledger.write_with(lambda conn: import_lines(conn, source, catalog, advance))
                except ImportRefused as exc:
                    raise fail(str(exc)) from exc
                except PolicyError as exc:  # a stored version that no longer loads
                    raise fail(f"{exc}\ngive --policy FILE to price the import with it") from exc

    done = run(work)
    console.print(f"imported {done.events_new} new events and {done.rejections_new} new refused calls from "
                  f"{path}; {done.events_present} events and {done.rejections_present} refused calls were already "
                  f"present; {done.repriced} events re-priced from the catalog", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on standard error (when it is a terminal) for ``total`` records; yields a
    function taking the number done so far, which may be called from any thread."""
    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(what, total=total)
        yield lambda done: progress.update(task, completed=done)


def _line_count(path: Path) -> int:
    """The lines of a file, counted in binary blocks (the progress bar's total)."""
    lines = 0
    with path.open("rb") as raw:
        while block := raw.read(1 << 20):
            lines += block.count(b"\n")
    return lines
