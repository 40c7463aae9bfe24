"""The weekday/weekend forecast method, on hand-made daily amounts."""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction

from costwarden.core.forecasting import ForecastState, project

NOVEMBER = [date(2026, 11, 1) + timedelta(days=i) for i in range(30)]  # Nov 1 2026 is a Sunday


def office(day: date) -> int:
    return 0 if day.weekday() >= 5 else 100


def test_waits_for_three_complete_days() -> None:
    daily = {d: office(d) for d in NOVEMBER}
    early = project(daily, NOVEMBER, date(2026, 11, 3), 10_000, date(2026, 11, 1))
    assert early.state == ForecastState.INSUFFICIENT
    assert early.projected is None
    assert early.spent == 200  # Nov 2 and Nov 3 so far (today counts in spent)
    assert "2 complete day(s)" in early.method


def test_projects_weekdays_and_weekends_separately() -> None:
    daily = {d: office(d) for d in NOVEMBER}
    today = date(2026, 11, 10)
    result = project(daily, NOVEMBER, today, 1_500, date(2026, 11, 1))
    # observed Nov 1..9: 6 weekdays of 100 and 3 weekend days of 0
    assert result.weekday_mean == Fraction(100) and result.weekend_mean == Fraction(0)
    # 600 so far + 15 weekdays left (Nov 10..30, today included) x 100 + 6 weekend days x 0
    assert result.projected == 600 + 15 * 100
    # 600 + 100 per weekday: 1,500 is reached on the 9th weekday from the 10th, Nov 20
    assert result.reaches_on == date(2026, 11, 20)
    assert "6 weekdays, 3 weekend days" in result.method


def test_a_linear_projection_would_be_wrong_where_this_is_exact() -> None:
    # Day 3 (Tuesday) of a month starting on Sunday: linear reads 100/3 per day and projects 1000.
    daily = {d: office(d) for d in NOVEMBER}
    result = project(daily, NOVEMBER, date(2026, 11, 4), 10_000, date(2026, 11, 1))
    assert result.projected == sum(office(d) for d in NOVEMBER) == 2100
    assert "no weekend" not in result.method


def test_only_one_kind_of_day_seen_assumes_the_other_alike() -> None:
    days = [date(2026, 6, 1) + timedelta(days=i) for i in range(30)]  # June 1 2026 is a Monday
    daily = {d: 50 for d in days}
    result = project(daily, days, date(2026, 6, 4), 10_000, date(2026, 6, 1))
    assert result.projected == 30 * 50
    assert "no weekend day observed yet" in result.method


def test_an_ended_period_shows_its_actual_spend_and_when_it_ran_out() -> None:
    daily = {d: office(d) for d in NOVEMBER}
    result = project(daily, NOVEMBER, date(2026, 12, 2), 1_000, date(2026, 11, 1))
    assert result.state == ForecastState.ENDED
    assert result.projected == result.spent == 2100
    assert result.reaches_on == date(2026, 11, 13)  # the 10th weekday of November


def test_days_before_the_first_usage_are_not_zeros() -> None:
    # Usage starts on Nov 5: the 28-day lookback must not average in the empty days before it.
    daily = {d: office(d) for d in NOVEMBER if d >= date(2026, 11, 5)}
    result = project(daily, NOVEMBER, date(2026, 11, 10), 10_000, date(2026, 11, 5))
    assert result.weekday_mean == Fraction(100)
    assert result.observed_days == 5
