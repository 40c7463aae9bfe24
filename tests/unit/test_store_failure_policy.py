"""`on_store_failure`: what a soft-only call does while the counter store is unreachable (SPEC §10).
A hard-checked call is refused either way."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from clock import FakeClock
from costwarden import errors
from costwarden.core.decision import CallRequest
from costwarden.core.kinds import StoreFailure
from costwarden.core.periods import Window
from costwarden.core.scopes import Caller, Planner
from costwarden.counters import MemoryCounterStore
from costwarden.counters.base import Snapshot
from costwarden.engine.admission import Admission, Admitted
from costwarden.policy import parse_policy


def policy_text(mode: str | None) -> str:
    head = f"on_store_failure: {mode}\n" if mode else ""
    return head + """version: 1
departments:
  MARKETING:
    budgets: [{limit: 1000, period: monthly, alert_at: [0.8], action: alert}]
  HR:
    budgets: [{limit: 200, period: monthly, action: reject}]
"""


class Unreachable(MemoryCounterStore):
    def remembered(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot | None:
        return None  # nothing seen yet: the first call reads the store

    async def snapshot(self, windows: Sequence[Window], flag_keys: Sequence[str], now: float) -> Snapshot:
        raise errors.StorageError("counter store unreachable")


def request(department: str) -> CallRequest:
    return CallRequest(Caller(department), "gpt-4o-mini", 100, 50)


@pytest.mark.parametrize(("mode", "expected"), [(None, StoreFailure.OPEN), ("open", StoreFailure.OPEN),
                                                ("closed", StoreFailure.CLOSED)])
def test_the_setting_is_read_with_open_by_default(mode: str | None, expected: StoreFailure) -> None:
    assert parse_policy(policy_text(mode)).on_store_failure == expected


def test_an_unknown_setting_is_refused_with_its_line() -> None:
    with pytest.raises(errors.PolicyError) as refused:
        parse_policy(policy_text("sometimes"))
    assert any("on_store_failure" in p and "(line 1)" in p for p in refused.value.problems)


async def test_open_lets_a_soft_only_call_through_and_refuses_a_hard_checked_one() -> None:
    planner = Planner(parse_policy(policy_text("open")))
    admission = Admission(Unreachable(), FakeClock())
    assert isinstance(await admission.admit("soft", request("MARKETING"), planner), Admitted)
    with pytest.raises(errors.StorageError):
        await admission.admit("hard", request("HR"), planner)


async def test_closed_refuses_soft_only_calls_too() -> None:
    planner = Planner(parse_policy(policy_text("closed")))
    admission = Admission(Unreachable(), FakeClock())
    with pytest.raises(errors.StorageError):
        await admission.admit("soft", request("MARKETING"), planner)
