"""Cursor paging over ledger listings that come newest first.

A cursor holds the time of the last item handed out and how many items at exactly that time were
handed out so far. The next page asks for items up to that time (inclusive) and skips those, so
rows recorded meanwhile at later times never shift a page, as they would with a plain offset.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

import orjson

from costwarden import errors

T = TypeVar("T")
TICK = timedelta(microseconds=1)  # the ledger's time resolution
# Bounds of a cursor made by ``encode``: its time is a ledger time, and its count of items at
# that microsecond is far below what a database offset can hold (2**63).
_EARLIEST, _LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
MAX_SEEN = 2**31
Fetch = Callable[[datetime | None, int, int], Awaitable[list[T]]]  # (until, limit, offset) -> items


@dataclass(frozen=True, slots=True)
class Cursor:
    at: datetime
    seen: int  # items at exactly ``at`` already handed out

    def encode(self) -> str:
        raw = orjson.dumps({"at": self.at.isoformat(), "seen": self.seen})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """The cursor ``encode`` wrote; a 400 for anything else (a cursor is client input)."""
        try:
            data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            at, seen = datetime.fromisoformat(data["at"]), data["seen"]
            # The next page reads up to at + TICK, in UTC: both must exist (not so for year 9999).
            valid = (at.tzinfo is not None and _EARLIEST <= (at + TICK).astimezone(UTC) <= _LATEST
                     and type(seen) is int and 0 <= seen <= MAX_SEEN)
        except (binascii.Error, orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
            valid = False
        if not valid:
            raise errors.InvalidRequest("Bad cursor: pass the next_cursor of the previous page unchanged.",
                                        param="cursor")
        return cls(at, seen)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


async def newest_first(fetch: Fetch[T], time_of: Callable[[T], datetime], until: datetime | None,
                       limit: int, cursor: str | None) -> Page[T]:
    """One page of ``limit`` items, newest first, after ``cursor``."""
    offset = 0
    after = None if cursor is None else Cursor.decode(cursor)
    if after is not None:
        until = after.at + TICK if until is None else min(until, after.at + TICK)
        offset = after.seen
    rows = await fetch(until, limit + 1, offset)
    items = rows[:limit]
    if len(rows) <= limit:
        return Page(items, None)
    last = time_of(items[-1])
    seen = sum(1 for item in items if time_of(item) == last)
    if after is not None and after.at == last:
        seen += after.seen
    return Page(items, Cursor(last, seen).encode())
