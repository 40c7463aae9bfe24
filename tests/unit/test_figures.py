"""The figures a shared store's admission decides on: the last answer, moved by the commands sent
and not yet answered, whatever order they are sent and answered in."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from costwarden.core.periods import Window
from costwarden.counters.figures import Figures

START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
WINDOWS = [Window(f"w{i}", 0, 1, START, END) for i in range(3)]
KEYS = [window.key for window in WINDOWS]  # what commands sent and answers learnt name them by

# a command: the change it makes per window (0 for none), and when it is answered (a later step)
COMMANDS = st.lists(st.tuples(st.lists(st.integers(-5, 5), min_size=3, max_size=3), st.integers(0, 20)),
                    max_size=20)


@given(COMMANDS, st.lists(st.integers(0, 1000), min_size=3, max_size=3))
def test_the_figures_are_the_last_answer_and_the_changes_still_coming(
        commands: list[tuple[list[int], int]], base: list[int]) -> None:
    figures = Figures()
    figures.learn(KEYS, base)
    pending: dict[int, list[int]] = {}
    tickets: dict[int, int] = {}
    answered = sorted(range(len(commands)), key=lambda i: (commands[i][1], i))
    for i, (changes, recalled) in enumerate(commands):
        tickets[i] = figures.expect(KEYS, changes)
        pending[i] = changes
        if recalled % 2:  # recalled meanwhile, or not: the changes are counted then, or later
            coming = [sum(changes[j] for changes in pending.values()) for j in range(3)]
            seen = figures.recall(WINDOWS, ())
            assert seen is not None and seen.usage == [(b + c, 0) for b, c in zip(base, coming, strict=True)]
    for i in answered:
        coming = [sum(changes[j] for changes in pending.values()) for j in range(3)]
        seen = figures.recall(WINDOWS, ())
        assert seen is not None and seen.usage == [(b + c, 0) for b, c in zip(base, coming, strict=True)]
        figures.arrived(tickets[i])
        del pending[i]
    seen = figures.recall(WINDOWS, ())
    assert seen is not None and seen.usage == [(b, 0) for b in base]


def test_a_counter_never_seen_is_not_recalled_though_a_change_to_it_is_coming() -> None:
    figures = Figures()
    figures.expect(KEYS[:1], [5])
    assert figures.recall(WINDOWS[:1], ()) is None
    figures.learn(KEYS[:1], [10])
    seen = figures.recall(WINDOWS[:1], ())
    assert seen is not None and seen.usage == [(15, 0)]


def test_figures_for_other_counters_than_named_are_refused_and_nothing_is_learnt() -> None:
    figures = Figures()
    with pytest.raises(ValueError, match="3 counters and 2 figures"):
        figures.learn(KEYS, [1, 2])
    assert figures.recall(WINDOWS[:1], ()) is None
