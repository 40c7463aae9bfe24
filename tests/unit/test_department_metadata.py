"""Department names and codes by day (core.metadata): which version is in force, what adopting a
policy adds, and what a statement must keep."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from costwarden.core.metadata import MetadataVersion, changes, in_force, merged, relevant
from costwarden.policy import parse_policy

DAYS = st.dates(min_value=date(2026, 1, 1), max_value=date(2026, 12, 31))
VERSIONS = st.lists(st.builds(MetadataVersion, st.sampled_from(("HR", "ENG")), DAYS, st.just("name"),
                              st.sampled_from(("CC-1", "CC-2", "CC-3")), st.just("")), max_size=12)


def policy(cost_center: str, effective_from: str = "") -> str:
    since = f", effective_from: {effective_from}" if effective_from else ""
    return f"version: 1\ndepartments:\n  HR: {{cost_center: {cost_center}{since}}}\n  ENG: {{}}\n"


@given(VERSIONS, DAYS)
def test_the_version_in_force_is_the_latest_on_or_before_the_day(versions: list[MetadataVersion], day: date) -> None:
    found = in_force(versions, "HR", day, strict=True)
    earlier = [v for v in versions if v.department == "HR" and v.effective_from <= day]
    if not earlier:
        assert found is None
        return
    assert found is not None and found.effective_from == max(v.effective_from for v in earlier)


@given(VERSIONS, DAYS, st.integers(min_value=0, max_value=60))
def test_a_statement_keeps_every_version_it_needs(versions: list[MetadataVersion], first: date, length: int) -> None:
    history = merged([], versions)  # one version per department and day, as stored
    last = first + timedelta(days=length)
    kept = relevant(history, first, last)
    for offset in range(length + 1):
        day = first + timedelta(days=offset)
        for department in ("HR", "ENG"):
            assert in_force(kept, department, day) == in_force(history, department, day)


def test_adopting_a_policy_adds_only_what_it_changes() -> None:
    first = changes([], parse_policy(policy("CC-OLD")), date(2026, 11, 1))
    assert [(v.department, v.effective_from.day, v.cost_center) for v in first] == [
        ("HR", 1, "CC-OLD"), ("ENG", 1, "")]
    history = merged([], first)
    assert changes(history, parse_policy(policy("CC-OLD")), date(2026, 11, 9)) == []  # the same again
    moved = changes(history, parse_policy(policy("CC-NEW")), date(2026, 11, 15))
    assert [(v.department, v.effective_from.day, v.cost_center) for v in moved] == [("HR", 15, "CC-NEW")]
    history = merged(history, moved)
    # back-dated to the 10th, adopted on the 20th: a version on the 10th; the 15th's stays as it is
    back = changes(history, parse_policy(policy("CC-NEW", "2026-11-10")), date(2026, 11, 20))
    assert [(v.effective_from.day, v.cost_center) for v in back] == [(10, "CC-NEW")]
    history = merged(history, back)
    assert changes(history, parse_policy(policy("CC-NEW", "2026-11-10")), date(2026, 11, 25)) == []
    assert [in_force(history, "HR", date(2026, 11, d)).cost_center for d in (9, 10, 16)] == [  # type: ignore[union-attr]
        "CC-OLD", "CC-NEW", "CC-NEW"]
