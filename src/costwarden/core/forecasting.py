"""Budget forecasts that know office traffic is weekday-heavy: the one method that ``report
forecast``, budget status and the ``forecast`` alert all use.

Method (stated on every line): the mean spend of a complete local weekday, and of a complete
weekend day, observed over the last 28 days (never before the ledger's first usage: days
without data are not zeros); the period's spend up to today's local midnight, plus each day left
in the period (today included) at the mean of its kind. A linear projection would read a quiet
Sunday as a slump and a busy Monday as a runaway; eight hours into a month it projected a whole
month from one morning. So nothing is projected before ``MIN_DAYS`` complete days are observed
("insufficient data"). When only one kind of day has been seen, the other is assumed to match it,
and the method says so.

Pure: daily amounts, the period's bounds and ``now`` come in; values come out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from zoneinfo import ZoneInfo

MIN_DAYS = 3  # complete days observed before projecting
LOOKBACK_DAYS = 28  # four whole weeks: every weekday and weekend day four times


class ForecastState(StrEnum):
    """Whether a line is projected, waits for data, or is final."""

    PROJECTED = "projected"
    INSUFFICIENT = "insufficient data"
    ENDED = "period ended"


@dataclass(frozen=True, slots=True)
class Projection:
    """A budget's spend so far and where it is headed, in the budget's unit (nano-dollars or tokens)."""

    state: ForecastState
    spent: int
    projected: int | None  # at the period's end; None with insufficient data
    reaches_on: date | None  # the local date the limit is (projected to be) reached
    observed_days: int
    weekday_mean: Fraction | None
    weekend_mean: Fraction | None
    method: str


def local_days(start: datetime, end: datetime, tz: ZoneInfo) -> list[date]:
    """The local dates of the period [start, end)."""
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def is_weekend(day: date) -> bool:
    return day.weekday() >= 5


def project(daily: Mapping[date, int], period_days: list[date], today: date, limit: int,
            first_data_day: date | None, min_days: int = MIN_DAYS) -> Projection:
    """Project one budget. ``daily`` maps local dates (the lookback and the period) to amounts;
    ``today`` is the current local date (after the period: the period has ended)."""
    in_period = [d for d in period_days if d < today]
    spent = sum(daily.get(d, 0) for d in period_days if d <= today)
    if today > period_days[-1]:
        return Projection(ForecastState.ENDED, spent, spent, _reached(daily, period_days, 0, limit), len(in_period),
                          None, None, "actual spend: the period has ended")
    start = today - timedelta(days=LOOKBACK_DAYS)
    if first_data_day is not None:
        start = max(start, first_data_day)
    observed = [start + timedelta(days=i) for i in range((today - start).days)] if first_data_day else []
    weekdays = [daily.get(d, 0) for d in observed if not is_weekend(d)]
    weekends = [daily.get(d, 0) for d in observed if is_weekend(d)]
    if len(observed) < min_days:
        return Projection(ForecastState.INSUFFICIENT, spent, None, _reached(daily, period_days, 0, limit),
                          len(observed), None, None,
                          f"insufficient data: {len(observed)} complete day(s) observed, {min_days} needed")
    weekday_mean = Fraction(sum(weekdays), len(weekdays)) if weekdays else None
    weekend_mean = Fraction(sum(weekends), len(weekends)) if weekends else None
    method = (f"mean per weekday and per weekend day over the last {len(observed)} complete day(s) "
              f"({len(weekdays)} weekdays, {len(weekends)} weekend days)")
    if weekday_mean is None:
        weekday_mean = weekend_mean
        method += "; no weekday observed yet: weekdays assumed like weekend days"
    if weekend_mean is None:
        weekend_mean = weekday_mean
        method += "; no weekend day observed yet: weekend days assumed like weekdays"
    assert weekday_mean is not None and weekend_mean is not None
    so_far = sum(daily.get(d, 0) for d in in_period)
    ahead = [(d, weekend_mean if is_weekend(d) else weekday_mean) for d in period_days if d >= today]
    projected = max(spent, _round(so_far + sum((m for _, m in ahead), Fraction(0))))
    reaches_on = _reached(daily, in_period, 0, limit)
    if reaches_on is None and limit > 0 and spent >= limit:
        reaches_on = today
    elif reaches_on is None and limit > 0:
        running = Fraction(so_far)
        for day, mean in ahead:
            running += mean
            if running >= limit:
                reaches_on = day
                break
    return Projection(ForecastState.PROJECTED, spent, projected, reaches_on, len(observed), weekday_mean,
                      weekend_mean, method)


def _reached(daily: Mapping[date, int], days: list[date], start: int, limit: int) -> date | None:
    """The first day on which the running total of ``days`` reached ``limit``, if it did."""
    running = start
    for day in days:
        running += daily.get(day, 0)
        if limit > 0 and running >= limit:
            return day
    return None


def _round(value: Fraction) -> int:
    """Half to even, as every figure of the reports."""
    return round(value)


__all__ = ["LOOKBACK_DAYS", "MIN_DAYS", "ForecastState", "Projection", "is_weekend", "local_days", "project"]
