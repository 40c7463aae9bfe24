"""What a replica remembers of until when its Redis counters were kept (``counters/kept.py``):
a reservation says nothing of expiries only for a deadline every counter is known kept past."""

from __future__ import annotations

from costwarden.counters.kept import FOREVER, KEEP_SLACK_MS, KeptCounters, keep_targets


def test_the_horizon_is_the_least_keep_until_and_none_while_a_counter_is_unknown_or_short() -> None:
    kept = KeptCounters()
    assert kept.horizon(["a", "b"], [100, 100]) == 0  # never kept
    assert kept.remember(["a", "b"], [500, 300]) == 300
    assert kept.horizon(["a", "b"], [100, 100]) == 300
    assert kept.horizon(["a", "b"], [100, 400]) == 0  # b's window outlives what it was kept for
    assert kept.horizon(["a", "c"], [100, 100]) == 0
    assert kept.horizon([], []) == FOREVER  # a reservation without counters


def test_a_counter_is_remembered_for_its_latest_keep_until() -> None:
    kept = KeptCounters()
    kept.remember(["a"], [500])
    kept.remember(["a"], [200])  # an earlier one, answered later: the expiry never moved back
    assert kept.horizon(["a"], [0]) == 500


def test_forgetting_and_a_full_memory_leave_every_counter_unknown() -> None:
    kept = KeptCounters(limit=2)
    kept.remember(["a", "b"], [500, 500])
    kept.remember(["c"], [500])  # full: forgotten wholesale first
    assert kept.horizon(["a"], [0]) == 0
    assert kept.horizon(["c"], [0]) == 500
    kept.forget()
    assert kept.horizon(["c"], [0]) == 0


def test_a_reservation_asks_past_the_later_of_its_deadline_and_each_window_by_the_slack() -> None:
    assert keep_targets([1_000, 9_000], 5_000) == [5_000 + KEEP_SLACK_MS, 9_000 + KEEP_SLACK_MS]
