"""Admission over a real (in-process) counter store tells a rate-limited call exactly when to
retry, from the ages of its window's buckets, and a refused call takes no room."""

from __future__ import annotations

from collections.abc import Sequence

from clock import FakeClock
from costwarden.core.decision import CallRequest, Decision
from costwarden.core.periods import Window
from costwarden.core.scopes import Caller, Planner
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.errors import StorageError
from costwarden.policy import parse_policy

POLICY = parse_policy("""
version: 1
departments:
  SALES:
    limits: {rpm: 10}
""")
CALL = CallRequest(Caller("SALES"), "gpt-4o-mini", input_tokens=10, output_tokens=10)


class NoBuckets(MemoryCounterStore):
    """A store that fails when asked for a window's buckets (and only then)."""

    async def buckets(self, windows: Sequence[Window]) -> list[list[tuple[int, int]]]:
        raise StorageError("counter store unreachable")


async def fill(admission: Admission, clock: FakeClock) -> Planner:
    """4 calls at the start of a second, 6 more 30 s later: the window is full."""
    planner = Planner(POLICY)
    for i in range(10):
        if i == 4:
            clock.advance(seconds=30)
        outcome = await admission.admit(f"a{i}", CALL, planner)
        assert isinstance(outcome, Admitted)
        await admission.settle(outcome, 10, 5)
    return planner


async def refused(admission: Admission, planner: Planner, call_id: str) -> int:
    outcome = await admission.admit(call_id, CALL, planner)
    assert isinstance(outcome, Decision) and outcome.denial is not None
    assert outcome.denial.retry_after is not None
    return outcome.denial.retry_after


async def test_the_call_gets_in_when_the_oldest_calls_leave_and_not_a_second_before() -> None:
    clock = FakeClock()
    admission = Admission(MemoryCounterStore(), clock)
    planner = await fill(admission, clock)
    clock.advance(seconds=10, milliseconds=300)  # 40.3 s after the first four
    assert await refused(admission, planner, "b1") == 20
    assert await refused(admission, planner, "b2") == 20  # a refusal took no room
    clock.advance(seconds=19)
    assert await refused(admission, planner, "b3") == 1
    clock.advance(seconds=1)
    assert isinstance(await admission.admit("b4", CALL, planner), Admitted)


async def test_a_store_that_cannot_tell_the_buckets_still_refuses_never_early() -> None:
    clock = FakeClock()
    admission = Admission(NoBuckets(), clock)
    planner = await fill(admission, clock)
    clock.advance(seconds=10, milliseconds=300)
    assert await refused(admission, planner, "b1") == 60  # as if every call were in the newest second
