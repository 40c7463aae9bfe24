"""True rate-limit hints (SPEC §9): when a sliding window of one-second buckets has room again.

The property tests replay a random bucket history second by second and check that the instant
``room_at`` names is the first at which the window has room, and that the whole seconds a
client is told to wait are the fewest that get it there.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from costwarden import errors
from costwarden.core.decision import CallRequest, Decision, decide, with_buckets
from costwarden.core.scopes import Caller, plan_for
from costwarden.core.sliding import NOW, restored_at, room_at, seconds_until
from costwarden.policy import parse_policy

SPAN, WIDTH = 60, 1  # the rate window: 60 buckets of one second
CURRENT = 1_795_000_000  # the current bucket (epoch seconds) of the histories below


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, int]]:
    """The non-empty live buckets of a rate window, oldest first."""
    ages = draw(st.lists(st.integers(0, SPAN - 1), unique=True, max_size=12))
    return sorted((CURRENT - age, draw(st.integers(1, 40))) for age in ages)


def counted(history: list[tuple[int, int]], instant: float) -> int:
    """What the window counts at ``instant``: the buckets that have not left it by then."""
    return sum(amount for bucket, amount in history if (bucket + SPAN) * WIDTH > instant)


def has_room(history: list[tuple[int, int]], limit: int, need: int, instant: float) -> bool:
    return counted(history, instant) + need <= limit


@given(histories(), st.integers(1, 200), st.integers(1, 60), st.floats(0, 0.999))
def test_room_comes_exactly_at_the_instant_named(history: list[tuple[int, int]], limit: int, need: int,
                                                 fraction: float) -> None:
    now = CURRENT + fraction
    at = room_at(history, limit, need, SPAN, WIDTH)
    if need > limit:
        assert at is None  # no wait is enough
        return
    assert at is not None
    if at == NOW:
        assert has_room(history, limit, need, now)
        return
    assert has_room(history, limit, need, at)
    # the window changes only at whole seconds: none of those before `at` (nor now) has room
    assert not has_room(history, limit, need, now)
    assert not any(has_room(history, limit, need, t) for t in range(CURRENT + 1, at))


@given(histories(), st.integers(1, 200), st.integers(1, 60), st.floats(0, 0.999))
def test_the_wait_in_whole_seconds_is_the_least_that_works(history: list[tuple[int, int]], limit: int, need: int,
                                                           fraction: float) -> None:
    now = CURRENT + fraction
    at = room_at(history, limit, need, SPAN, WIDTH)
    if at is None:
        return
    wait = seconds_until(at, now)
    assert 0 <= wait <= SPAN
    assert has_room(history, limit, need, now + wait)  # a client that waits this long gets in
    if wait > 0:
        assert not has_room(history, limit, need, now + wait - 1)  # one second less is too early


@given(histories(), st.floats(0, 0.999))
def test_the_window_is_restored_when_its_newest_bucket_leaves(history: list[tuple[int, int]],
                                                              fraction: float) -> None:
    now = CURRENT + fraction
    restored = restored_at(history, CURRENT, SPAN, WIDTH)
    assert counted(history, restored) == 0
    reset = seconds_until(restored, now)
    assert counted(history, now + reset) == 0
    if reset > 0:
        assert counted(history, now + reset - 1) > 0


POLICY = parse_policy("""
version: 1
departments:
  SALES:
    limits: {rpm: 10, tpm: 100000}
""")
SECOND = datetime.fromtimestamp(CURRENT, UTC)


def refused(history: list[tuple[int, int]], at: datetime, buckets: bool = True) -> Decision:
    """The decision on one more SALES call at ``at`` with ``history`` in its rpm window (and 20
    tokens per call in its tpm window); without ``buckets``, then told them by ``with_buckets``."""
    call = CallRequest(Caller("SALES"), "gpt-4o-mini", input_tokens=10, output_tokens=10)
    plan = plan_for(POLICY, call.caller, at)
    rpm = next(i for i, check in enumerate(plan.limits) if check.metric == "rpm")
    tpm_history = [(bucket, 20 * amount) for bucket, amount in history]
    live = [history if i == rpm else tpm_history for i in range(len(plan.limits))]
    usage = [(sum(a for _, a in window), 0) for window in live]
    if buckets:
        return decide(POLICY, call, plan, usage, frozenset(), at, live)
    blind = decide(POLICY, call, plan, usage, frozenset(), at)
    assert blind.needs_buckets
    return with_buckets(blind, call, plan, usage, live, at)


def test_a_refusal_says_when_the_oldest_calls_leave_the_window() -> None:
    # 4 calls 50 s ago, 6 calls 20 s ago: the window is full until the first 4 leave, in 10 s
    history = [(CURRENT - 50, 4), (CURRENT - 20, 6)]
    decision = refused(history, SECOND + timedelta(milliseconds=300))
    assert decision.denial is not None and decision.denial.error is errors.RateLimited
    assert decision.denial.retry_after == 10 and "Retry after 10 s" in decision.denial.message
    assert not decision.needs_buckets
    rate = decision.rate
    assert rate is not None
    assert (rate.limit_requests, rate.remaining_requests) == (10, 0)
    assert (rate.reset_requests_s, rate.reset_requests_at) == (40, CURRENT + 40)  # when the newest 6 leave
    assert (rate.limit_tokens, rate.remaining_tokens) == (100_000, 100_000 - 200)  # not counting this call


@given(histories(), st.floats(0, 0.999))
def test_a_refusal_told_its_buckets_afterwards_says_what_deciding_with_them_says(
        history: list[tuple[int, int]], fraction: float) -> None:
    at = SECOND + timedelta(seconds=fraction)
    short = 10 - sum(amount for _, amount in history)
    full = [(CURRENT - 59, short), *history] if short > 0 else history  # a full window: the call is refused
    told = refused(full, at)
    assert told.denial is not None and told.denial.error is errors.RateLimited
    assert refused(full, at, buckets=False) == told


def test_without_buckets_a_refusal_is_never_early_and_asks_for_them() -> None:
    at = SECOND + timedelta(milliseconds=300)
    call = CallRequest(Caller("SALES"), "gpt-4o-mini", input_tokens=10, output_tokens=10)
    decision = decide(POLICY, call, plan_for(POLICY, call.caller, at), [(10, 0), (200, 0)], frozenset(), at)
    assert decision.needs_buckets
    assert decision.denial is not None and decision.denial.retry_after == 60
    assert decision.rate is not None and decision.rate.reset_requests_s == 60


def test_an_admitted_call_restores_its_window_a_whole_window_later() -> None:
    call = CallRequest(Caller("SALES"), "gpt-4o-mini", input_tokens=10, output_tokens=10)
    at = SECOND + timedelta(milliseconds=700)
    plan = plan_for(POLICY, call.caller, at)
    decision = decide(POLICY, call, plan, [(3, 0), (60, 0)], frozenset(), at)
    assert decision.denial is None and decision.rate is not None
    assert (decision.rate.remaining_requests, decision.rate.reset_requests_s) == (6, 60)
    assert decision.rate.reset_requests_at == CURRENT + 60  # this call's own bucket leaves then
    assert decision.rate.remaining_tokens == 100_000 - 60 - 20


def test_a_call_larger_than_the_limit_is_told_it_can_never_fit() -> None:
    call = CallRequest(Caller("SALES"), "gpt-4o-mini", input_tokens=100_001, output_tokens=10)
    plan = plan_for(POLICY, call.caller, SECOND)
    decision = decide(POLICY, call, plan, [(0, 0), (0, 0)], frozenset(), SECOND, [[], []])
    assert decision.denial is not None and decision.denial.retry_after is None
    assert "can never fit" in decision.denial.message
    refused = decision.denial.exception()  # a 429 that tells SDKs not to retry it (x-should-retry: false)
    assert (refused.status, refused.code, refused.should_retry) == (429, "rate_limit_exceeded", False)
