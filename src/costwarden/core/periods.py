"""Budget periods: calendar periods in a timezone (DST-aware) and rolling windows.

A calendar period (``monthly``, ``weekly`` from Monday, ``daily``) starts at local midnight in the
policy's timezone; the instants are computed in UTC so that a 23- or 25-hour day is handled. A
rolling window (``90m``, ``1h``, ``7d``) is approximated by 60 buckets, so a counter forgets spend
in steps of 1/60 of the window (one minute for ``1h``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

ROLLING_BUCKETS = 60
_ROLLING = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
CALENDAR_KINDS = ("monthly", "weekly", "daily")


@dataclass(frozen=True, slots=True)
class Window:
    """Where a counter for one period lives at one instant.

    ``key`` names the counter (calendar periods put their start date in it); the counter's value
    is the sum of buckets ``bucket - span + 1 .. bucket``; ``start``/``end`` bound the window.
    """

    key: str
    bucket: int
    span: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Period:
    """A budget or limit period, parsed from the policy text (``monthly``, ``1h``...)."""

    text: str
    kind: str  # monthly | weekly | daily | rolling
    seconds: int = 0  # rolling windows only
    # Derived once: read each time a plan is rebuilt (for every caller, as its rate windows move)
    is_calendar: bool = field(init=False, repr=False, compare=False)
    bucket_seconds: int = field(init=False, repr=False, compare=False)
    """Width of one bucket of a rolling window (at least one second)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_calendar", self.kind != "rolling")
        object.__setattr__(self, "bucket_seconds", max(1, self.seconds // ROLLING_BUCKETS))

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``monthly``, ``weekly``, ``daily`` or ``<N>m|h|d``; raises ValueError."""
        if text in CALENDAR_KINDS:
            return cls(text=text, kind=text)
        match = _ROLLING.match(text)
        if not match:
            raise ValueError(
                f"unknown period {text!r}: use monthly, weekly, daily or a rolling window like 90m, 1h, 7d"
            )
        return cls(text=text, kind="rolling", seconds=int(match[1]) * _UNIT_SECONDS[match[2]])

    def bounds(self, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
        """The window containing ``now``: [start, end) for calendar periods, (now - d, now] rolling."""
        if self.kind == "rolling":
            return now - timedelta(seconds=self.seconds), now
        local_day = now.astimezone(tz).date()
        first, following = _calendar_days(self.kind, local_day)
        return local_midnight(first, tz), local_midnight(following, tz)

    def window(self, base_key: str, now: datetime, tz: ZoneInfo) -> Window:
        """The counter window for ``now`` under ``base_key``."""
        start, end = self.bounds(now, tz)
        if self.kind == "rolling":
            width = self.bucket_seconds
            bucket = int(now.timestamp()) // width
            span = -(-self.seconds // width)
            return Window(key=base_key, bucket=bucket, span=span, start=start, end=end)
        return Window(key=f"{base_key}@{start.astimezone(tz).date().isoformat()}", bucket=0, span=1, start=start, end=end)

    def describe(self) -> str:
        """Words for messages: 'monthly', 'rolling 1h'."""
        return self.text if self.is_calendar else f"rolling {self.text}"


def _calendar_days(kind: str, day: date) -> tuple[date, date]:
    if kind == "daily":
        return day, day + timedelta(days=1)
    if kind == "weekly":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    first = day.replace(day=1)
    following = date(first.year + 1, 1, 1) if first.month == 12 else date(first.year, first.month + 1, 1)
    return first, following


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant (UTC) of ``day`` in ``tz``.

    Where midnight does not exist (a DST gap at 00:00), zoneinfo's fold=0 reading maps it to the
    instant of the transition, which is the first instant of that local day.
    """
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def parse_timezone(name: str) -> ZoneInfo:
    """Load an IANA timezone by name; raises ValueError with the name on failure."""
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}: use an IANA name like America/New_York") from exc


# Years 1970-8999: a month outside the ledger's time range has bounds that cannot be computed in
# every timezone (year 1 in New York starts before datetime.min in UTC) nor printed as YYYY-MM.
BILLING_PERIOD = re.compile(r"(19[7-9][0-9]|[2-8][0-9]{3})-(0[1-9]|1[0-2])")


def month_bounds(month: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Bounds of a billing month given as ``YYYY-MM`` in ``tz``."""
    match = BILLING_PERIOD.fullmatch(month)
    if not match:
        raise ValueError(f"bad billing period {month!r}: use YYYY-MM, e.g. 2026-11 (years 1970 to 8999)")
    return Period.parse("monthly").bounds(local_midnight(date(int(match[1]), int(match[2]), 1), tz), tz)
