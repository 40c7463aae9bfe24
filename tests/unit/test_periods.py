from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwarden.core.periods import Period, month_bounds, parse_timezone

ZONES = [ZoneInfo(z) for z in ("UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe",
                                "America/Santiago", "Asia/Kolkata", "Pacific/Chatham", "America/Havana")]
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1)).map(
    lambda d: d.replace(tzinfo=UTC))
zones = st.sampled_from(ZONES)
calendar = st.sampled_from([Period.parse(k) for k in ("monthly", "weekly", "daily")])


@given(instants, zones, calendar)
def test_calendar_window_contains_now_and_tiles_time(now: datetime, tz: ZoneInfo, period: Period) -> None:
    start, end = period.bounds(now, tz)
    assert start <= now < end
    assert period.bounds(end, tz)[0] == end  # the next window starts where this one ends
    assert period.bounds(start - timedelta(microseconds=1), tz)[1] == start


@given(instants, zones, calendar)
def test_calendar_window_starts_at_the_first_instant_of_a_local_day(now: datetime, tz: ZoneInfo,
                                                                    period: Period) -> None:
    start, _ = period.bounds(now, tz)
    local = start.astimezone(tz)
    just_before = (start - timedelta(microseconds=1)).astimezone(tz)
    assert just_before.date() < local.date()
    if period.kind == "monthly":
        assert local.day == 1
    if period.kind == "weekly":
        assert local.weekday() == 0


def test_daily_window_spans_dst_days() -> None:
    tz = ZoneInfo("America/New_York")
    spring = datetime(2026, 3, 8, 12, tzinfo=UTC)
    fall = datetime(2026, 11, 1, 12, tzinfo=UTC)
    daily = Period.parse("daily")
    s, e = daily.bounds(spring, tz)
    assert e - s == timedelta(hours=23)
    s, e = daily.bounds(fall, tz)
    assert e - s == timedelta(hours=25)


def test_monthly_window_in_new_york() -> None:
    start, end = month_bounds("2026-11", ZoneInfo("America/New_York"))
    assert start == datetime(2026, 11, 1, 4, tzinfo=UTC)  # EDT until Nov 1 02:00
    assert end == datetime(2026, 12, 1, 5, tzinfo=UTC)  # EST


def test_midnight_that_does_not_exist() -> None:
    # Havana springs forward at 00:00 -> 01:00; the day starts at the transition.
    tz = ZoneInfo("America/Havana")
    start, _ = Period.parse("daily").bounds(datetime(2026, 3, 8, 12, tzinfo=UTC), tz)
    assert start.astimezone(tz).hour in (0, 1)
    assert start.astimezone(tz).date().isoformat() == "2026-03-08"


@given(instants, st.sampled_from(["90m", "1h", "24h", "7d", "5m"]))
def test_rolling_windows(now: datetime, text: str) -> None:
    period = Period.parse(text)
    start, end = period.bounds(now, ZoneInfo("UTC"))
    assert end == now and end - start == timedelta(seconds=period.seconds)
    window = period.window("k", now, ZoneInfo("UTC"))
    assert window.span * period.bucket_seconds >= period.seconds
    assert window.bucket == int(now.timestamp()) // period.bucket_seconds


def test_calendar_window_keys_change_with_the_period() -> None:
    tz = ZoneInfo("UTC")
    monthly = Period.parse("monthly")
    a = monthly.window("k", datetime(2026, 11, 30, 23, 59, tzinfo=UTC), tz)
    b = monthly.window("k", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), tz)
    assert a.key == "k@2026-11-01" and b.key == "k@2026-12-01"


@pytest.mark.parametrize("text", ["hourly", "0h", "1w", "h", "-1d", "1.5h", ""])
def test_bad_periods_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="period"):
        Period.parse(text)


def test_bad_timezone() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        parse_timezone("Mars/Olympus")
    with pytest.raises(ValueError):
        month_bounds("2026-13", ZoneInfo("UTC"))
