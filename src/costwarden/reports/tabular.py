"""One shape for the flat reports (forecast, efficiency, simulation, journal): named columns and
rows of text or integers, rendered as a table, CSV or JSON from the same values, so that the
three formats cannot disagree. Money is already an exact decimal string when it gets here."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from io import StringIO
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from costwarden.core.csvsafe import safe_cell

Cell = str | int | None


class Format(StrEnum):
    """The output formats every report takes."""

    TABLE = "table"
    CSV = "csv"
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Report:
    """A titled list of rows; ``notes`` are printed under the table and carried in the JSON."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[Mapping[str, Cell]]
    notes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)  # JSON-only sections

    def document(self) -> dict[str, Any]:
        """The JSON document: the title, the rows (every column present) and the notes."""
        rows = [{name: row.get(name) for name in self.columns} for row in self.rows]
        return {"report": self.title, **self.extra, "rows": rows, "notes": list(self.notes)}


def write_report(report: Report, fmt: Format, out: TextIO) -> None:
    """Render ``report`` to ``out`` in ``fmt``."""
    if fmt == Format.CSV:
        write_csv(report, out)
    elif fmt == Format.JSON:
        out.write(json.dumps(report.document(), indent=2, ensure_ascii=False) + "\n")
    else:
        console = Console(file=out, width=None if out.isatty() else 200, no_color=not out.isatty())
        table = Table(title=report.title, title_justify="left")
        for name in report.columns:
            table.add_column(name, overflow="fold")
        for row in report.rows:
            table.add_row(*["" if row.get(name) is None else str(row.get(name)) for name in report.columns])
        console.print(table)
        for note in report.notes:
            console.print(note, highlight=False, soft_wrap=True)


def write_csv(report: Report, out: TextIO) -> None:
    """The rows as CSV with a header; cells that a spreadsheet would run as formulas are quoted safe."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow([_cell(row.get(name)) for name in report.columns])


def csv_text(report: Report) -> str:
    """``write_csv`` into a string (for downloads)."""
    buffer = StringIO()
    write_csv(report, buffer)
    return buffer.getvalue()


def _cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return safe_cell(value, numeric=True)  # a plain number such as -12.50 stays a number


__all__ = ["Cell", "Format", "Report", "csv_text", "write_csv", "write_report"]
