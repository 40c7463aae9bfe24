"""The ledger's commit deadlines: a pending future fails when its deadline's timer fires, as a
timer of its own would have failed it, and one timer serves every future watched."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from costwarden.ledger.deadlines import CommitDeadlines


class Overdue(Exception):
    pass


class FakeLoop:
    """The two things ``CommitDeadlines`` asks of a loop, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> object:
        self.timers.append((when, callback))
        return object()  # a handle: nothing here cancels one

    def fire(self, at: float | None = None) -> float:
        """Run the one timer armed, with the clock at ``at`` (default: the time it was armed for)."""
        assert len(self.timers) == 1, self.timers
        when, callback = self.timers.pop()
        self.now = when if at is None else at
        callback()
        return when


@pytest.fixture
def loop() -> FakeLoop:
    return FakeLoop()


def deadlines(loop: FakeLoop) -> CommitDeadlines:
    return CommitDeadlines(loop, 2.0, Overdue)  # type: ignore[arg-type]  # the fake has what it uses


async def test_only_the_futures_still_pending_at_their_deadline_fail(loop: FakeLoop) -> None:
    watched = deadlines(loop)
    futures: list[asyncio.Future[Any]] = []
    for at in (0.0, 0.5, 1.0):
        loop.now = at
        futures.append(asyncio.get_running_loop().create_future())
        watched.watch(futures[-1])
    assert len(loop.timers) == 1  # one timer for all three
    futures[1].set_result(None)
    watched.forget(futures[1])

    assert loop.fire() == 2.0
    assert isinstance(futures[0].exception(), Overdue)
    assert not futures[2].done()
    assert loop.fire() == 3.0  # armed for the next one still watched, not for the forgotten one
    assert isinstance(futures[2].exception(), Overdue)
    assert futures[1].result() is None
    assert loop.timers == [] and len(watched) == 0


async def test_a_timer_that_fires_a_little_early_still_fails_its_future(loop: FakeLoop) -> None:
    watched = deadlines(loop)
    future = asyncio.get_running_loop().create_future()
    watched.watch(future)
    loop.fire(at=1.9995)  # before the clock reaches the deadline, as uvloop's timers may
    assert isinstance(future.exception(), Overdue)


async def test_a_future_completed_in_time_is_left_as_it_is(loop: FakeLoop) -> None:
    watched = deadlines(loop)
    future = asyncio.get_running_loop().create_future()
    watched.watch(future)
    future.set_result("committed")
    loop.fire()
    assert future.result() == "committed"
    assert loop.timers == []  # nothing left to watch: no timer armed
    loop.now = 5.0
    watched.watch(asyncio.get_running_loop().create_future())
    assert [when for when, _ in loop.timers] == [7.0]  # the next one arms it again
