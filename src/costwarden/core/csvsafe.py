"""CSV cells a spreadsheet will not run as formulas (OWASP "CSV injection").

Exports carry text that callers chose: user ids, tags, team and key names, refusal messages. A
cell starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or line break, which some spreadsheets
skip before reading one of those) is read as a formula, and ``=HYPERLINK(...)`` or a DDE call
would run on the reader's machine. Such a cell gets a leading single quote, which spreadsheets
show as text. In numeric columns a plain decimal number such as ``-12.50`` stays as it is, so
that negative amounts remain numbers.
"""

from __future__ import annotations

import re

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def safe_cell(text: str, numeric: bool = False) -> str:
    """``text`` as a CSV cell that no spreadsheet evaluates."""
    if not text.startswith(_TRIGGERS):
        return text
    if numeric and _NUMBER.fullmatch(text):
        return text
    return "'" + text


__all__ = ["safe_cell"]
