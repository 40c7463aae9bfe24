"""How long a ledger writer's batch waits for other calls' events (``ledger/company.py``)."""

from __future__ import annotations

from costwarden.ledger.company import SIBLINGS, WINDOW_S, Company
from costwarden.ledger.queue_items import RowKind, Write


def begin(call: str) -> Write:
    return Write(RowKind.INFLIGHT, {"id": call})


def end(call: str) -> Write:
    return Write(RowKind.EVENT, {"id": call})


def test_a_lone_call_never_waits() -> None:
    company = Company()
    assert company.note([begin("a")], now=0.0) == 0
    assert company.wait() is None
    assert company.note([end("a")], now=0.001) == 1
    assert company.in_flight == 0 and company.wait() is None


def test_a_batch_waits_while_enough_calls_are_in_flight() -> None:
    company = Company()
    company.note([begin(f"c{i}") for i in range(SIBLINGS - 1)], now=0.0)
    assert company.wait() is None
    company.note([begin("last")], now=0.0)
    wait = company.wait()
    assert wait is not None and 0 < wait[0] <= WINDOW_S and wait[1] == 1 + SIBLINGS // 8
    company.note([begin(f"more{i}") for i in range(60)], now=0.0)
    assert company.wait() == (WINDOW_S, 1 + (SIBLINGS + 60) // 8)


def test_the_window_follows_the_gap_between_events() -> None:
    company = Company()
    company.note([begin(f"c{i}") for i in range(200)], now=0.0)
    for i in range(100):  # an event every millisecond
        company.note([end(f"c{i}")], now=i * 0.001)
    wait = company.wait()
    assert wait is not None and 0.004 <= wait[0] < 0.005


def test_calls_whose_event_never_comes_are_forgotten() -> None:
    company = Company(kept=10)
    company.note([begin(f"c{i}") for i in range(25)], now=0.0)
    assert company.in_flight == 10
    assert company.note([end("c24"), end("c0")], now=0.0) == 2  # c0 was forgotten already
    assert company.in_flight == 9


def test_calls_that_ended_elsewhere_no_longer_hold_a_batch() -> None:
    company = Company()
    company.note([begin(f"c{i}") for i in range(SIBLINGS)], now=0.0)
    assert company.wait() is not None
    company.forget(["c0", "c1", "never-begun"])  # their events went to the spool
    assert company.in_flight == SIBLINGS - 2 and company.wait() is None


def test_calls_one_at_a_time_make_a_lull() -> None:
    company = Company()
    assert not company.lull
    company.note([begin("a")], now=0.0)
    assert not company.lull  # no call has ended alone yet
    company.note([end("a")], now=0.001)
    assert company.lull
    company.note([begin("b")], now=0.002)
    assert company.lull


def test_calls_side_by_side_end_a_lull() -> None:
    company = Company()
    company.note([begin("a"), end("a")], now=0.0)
    assert company.lull
    company.note([begin("b"), begin("c")], now=0.001)
    assert not company.lull
    company.note([end("b"), end("c")], now=0.002)
    assert not company.lull  # neither was alone from beginning to end
    company.note([begin("d")], now=0.003)  # the first call of a pause begins alone
    assert not company.lull
    company.note([begin("e"), end("d"), end("e")], now=0.004)
    assert not company.lull
