"""costwarden simulate"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from costwarden import errors
from costwarden.cli.common import DbOption, err_console, fail, ledger_at, run
from costwarden.cli.report import _PERIOD, FormatOption, OutputOption, emit, report_format
from costwarden.core.events import UsageEvent
from costwarden.ledger.export import read_jsonl
from costwarden.policy import load_policy
from costwarden.reports.collect import period_bounds
from costwarden.reports.simulate import Simulation, simulate, simulate_ledger, simulation_report

LARGE = 50_000  # events from which a progress bar is shown


def simulate_command(
    policy: Annotated[str, typer.Option("--policy", help="The policy file to replay the calls under.")],
    period: Annotated[str | None, typer.Option("--period", help="Replay the ledger's calls of this billing period YYYY-MM (in NEW's timezone; default: the current one).")] = None,
    events: Annotated[Path | None, typer.Option("--events", help="Replay the usage events of this JSON Lines export instead of the ledger.")] = None,
    fmt: FormatOption = "table",
    output: OutputOption = None,
    db: DbOption = None,
) -> None:
    """Replay recorded calls in time order under another policy: per department, the calls that
    would have been allowed, downgraded, clamped and rejected, the cost before and after, and the
    date each budget would have run out."""
    chosen = report_format(fmt)
    if period is not None and events is not None:
        raise fail("give one of --period P (the ledger's calls) and --events FILE, not both")
    if period is not None and not _PERIOD.fullmatch(period):
        raise fail(f"bad billing period {period!r}: use YYYY-MM, e.g. 2026-11")
    try:
        new = load_policy(policy)
    except errors.PolicyError as exc:
        raise fail(exc.message) from exc

    async def work() -> Simulation:
        if events is not None:
            replayed = sorted(_file_events(events), key=lambda e: (e.admitted_at, e.id))
            with _bar(len(replayed)) as tick:
                return await simulate(new, replayed, tick)
        async with ledger_at(db) as ledger:
            start, end = period_bounds(period or f"{datetime.now(UTC).astimezone(new.timezone):%Y-%m}", new)
            total = sum(row.requests for row in await ledger.totals(start, end))
            with _bar(total) as tick:
                return await simulate_ledger(new, ledger, start, end, tick)

    started = datetime.now(UTC)
    result = run(work)
    seconds = (datetime.now(UTC) - started).total_seconds()
    emit(simulation_report(result, new), chosen, output)
    if result.events >= LARGE:
        err_console.print(f"replayed {result.events} events in {seconds:.1f} s", highlight=False)


def _file_events(path: Path) -> Iterator[UsageEvent]:
    try:
        with path.open(encoding="utf-8") as lines:
            for record in read_jsonl(lines):
                if isinstance(record, UsageEvent):
                    yield record
    except (OSError, ValueError) as exc:
        raise fail(f"{path}: {exc}") from exc


@contextmanager
def _bar(total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress callback drawing a bar on standard error for large replays; None for small ones."""
    if total < LARGE:
        yield None
        return
    with Progress(TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("replay", total=total)
        yield lambda done: progress.update(task, completed=done)
