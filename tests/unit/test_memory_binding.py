"""The memory store's admission path: a reservation made right after a snapshot of the same
windows (held through the counters that snapshot found, and known by identity when its holds are
those held through them last) answers and counts exactly as one made without it, whatever happens
in between (rolling windows moving on, settlements, refusals)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.core.decision import Hold
from costwarden.core.kinds import Unit
from costwarden.core.periods import Window
from costwarden.counters import MemoryCounterStore
from costwarden.counters.base import Attempt, Reservation, Threshold

T = 1_800_000_000.0
END = datetime.fromtimestamp(T, UTC)


def _window(key: str, bucket: int, span: int) -> Window:
    end = datetime.fromtimestamp(bucket * 60, UTC) if span > 1 else END
    return Window(key, bucket, span, end - timedelta(minutes=span), end)


# (bucket step, amounts and limits per window, settle or release, whether a snapshot goes first,
# whether the holds name other windows than the snapshot read, whether they are the very holds of
# the call before when it was on the same windows: an admission's are made once per plan and size)
Call = tuple[int, list[tuple[int, int | None]], str, bool, bool, bool]
CALLS = st.lists(st.tuples(st.integers(0, 2), st.lists(st.tuples(st.integers(0, 40), st.sampled_from((None, 60, 150))),
                                                        min_size=3, max_size=3),
                           st.sampled_from(("settle", "release", "open")), st.booleans(), st.booleans(),
                           st.booleans()),
                 min_size=1, max_size=25)


async def _run(calls: list[Call], snapshots: bool) -> list[object]:
    store = MemoryCounterStore()
    bucket = 100
    seen: list[object] = []
    plans: dict[int, tuple[Window, ...]] = {}
    holds: tuple[Hold, ...] = ()
    in_order = True
    for n, (step, terms, end, snapshot_first, other, again) in enumerate(calls):
        bucket += step
        again = again and step == 0 and n > 0
        # one windows tuple per bucket, as a plan holds it: a calendar counter and two rolling ones
        windows = plans.setdefault(bucket, (_window("month", 0, 1), _window("rpm", bucket, 3),
                                            _window("key", bucket // 2, 2)))
        if not again:
            made = [Hold(w, amount, limit, Unit.USD) for w, (amount, limit) in zip(windows, terms, strict=True)]
            if other:  # holds on the snapshot's windows but in another order: not the binding's
                made.reverse()
            holds, in_order = tuple(made), not other
        before = (await store.snapshot(windows, [], T)).usage if snapshots and snapshot_first else None
        attempt = await store.try_reserve(f"r{n}", holds, T + 600, [], T)
        if before is not None and in_order:
            assert attempt.usage == before  # nothing moved in between
        seen.append(_answer(attempt))
        if isinstance(attempt.outcome, Reservation):
            if end == "settle":
                # an alert level on the calendar counter and one on a rolling one, claimed once
                thresholds = [Threshold(0, 30, "alert|month", T + 3600), Threshold(2, 10, f"alert|key|{bucket // 2}", T + 3600)]
                settled = await store.settle_claiming(attempt.outcome, [hold.amount // 2 for hold in holds], thresholds, T)
                seen.append((settled.moved, settled.claimed))
            elif end == "release":
                await store.release(attempt.outcome)
        seen.append((await store.snapshot(windows, [], T)).usage)
    seen.append([r.id for r in await store.expire(T + 601)])
    return seen


def _answer(attempt: Attempt) -> object:
    outcome = attempt.outcome
    held = outcome.id if isinstance(outcome, Reservation) else outcome
    return held, attempt.usage, attempt.flags


@settings(max_examples=150, deadline=None)
@given(CALLS)
def test_a_reservation_after_a_snapshot_counts_as_one_without(calls: list[Call]) -> None:
    assert asyncio.run(_run(calls, snapshots=True)) == asyncio.run(_run(calls, snapshots=False))


def test_a_refused_hold_after_a_snapshot_holds_nothing() -> None:
    async def run() -> None:
        store = MemoryCounterStore()
        windows = (_window("month", 0, 1), _window("rpm", 100, 3))
        await store.load([(windows[0], 90)])
        await store.snapshot(windows, [], T)
        attempt = await store.try_reserve("a", [Hold(windows[0], 5, None, Unit.USD),
                                                Hold(windows[1], 20, 10, Unit.REQUESTS)], T + 600, [], T)
        assert not isinstance(attempt.outcome, Reservation)
        assert (attempt.outcome.index, attempt.outcome.used) == (1, 0)
        assert attempt.usage == [(90, 0), (0, 0)]
        assert (await store.snapshot(windows, [], T)).usage == [(90, 0), (0, 0)]

    asyncio.run(run())
