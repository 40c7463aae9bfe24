"""What the watched alerts cost a call (SPEC §13 ``loop`` and the key breaker).

1. The ``loop`` hook (``CallObserver.on_request``) on a 1.5 KB chat body: with no ``loop`` rule,
   with a rule and every body distinct (ordinary traffic), and with a rule and one body sent
   again and again (a loop: counted, reported once).
2. ``Admission.admit`` + ``settle`` through the memory store with and without a rule that may
   trip a breaker (which adds the key's breaker flag to the call's snapshot).

Each figure is the best of ``--runs`` runs, with the spread (worst / best): other processes on a
shared machine only ever slow a run down. Run: python bench/watch.py [--calls N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from costwarden.app.loops import LoopWatch
from costwarden.app.observer import CallObserver
from costwarden.app.tripwire import Tripwire
from costwarden.core.decision import CallRequest
from costwarden.core.scopes import Caller, Planner
from costwarden.core.watch import LoopRule
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.policy import parse_policy

POLICY = """
version: 1
organization:
  budgets: [{{limit: 1000000, period: monthly, action: reject}}]
{alerts}
departments:
  ENGINEERING:
    budgets: [{{limit: 100000, period: monthly, alert_at: [0.5, 0.8], action: reject}}]
    per_key:
      budgets: [{{limit: 10000, period: 1h, action: reject}}]
"""
SYSTEM = "You are a careful reviewer. " * 20
QUESTION = "Review this change and list the risks it brings, in order of severity. " * 15


class Clock:
    """Advances 1 ms per reading, so windows move as they would under real traffic."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1000)
        return self.now


class Targets:
    timezone = ZoneInfo("UTC")

    def targets(self, department: str | None) -> tuple[str, ...]:
        return ()


def body(i: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "max_tokens": 400, "user": "u1",
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{i}: {QUESTION}"}]}


async def hook(calls: int, rule: LoopRule | None, distinct: bool) -> float:
    """Seconds per call of the loop hook."""
    admission = Admission(MemoryCounterStore(), Clock())
    observer = CallObserver(cast(Any, None), cast(Any, None),
                            LoopWatch(Tripwire(admission, lambda note, notify: None)))
    bodies = [body(i if distinct else 0) for i in range(1000)]
    caller, notify = Caller("ENGINEERING", key_id="k1"), Targets()
    start = time.perf_counter()
    for i in range(calls):
        observer.on_request(caller, bodies[i % 1000], notify, rule)
    elapsed = time.perf_counter() - start
    await asyncio.sleep(0)  # let a reported loop's task run
    return elapsed / calls


async def admissions(calls: int, alerts: str) -> float:
    """Seconds per admit + settle pair."""
    admission = Admission(MemoryCounterStore(), Clock())
    planner = Planner(parse_policy(POLICY.format(alerts=alerts)))
    requests = [CallRequest(Caller("ENGINEERING", key_id=f"key{i}"), "gpt-4o-mini", 800, 400) for i in range(50)]
    start = time.perf_counter()
    for i in range(calls):
        outcome = await admission.admit(str(i), requests[i % 50], planner)
        if isinstance(outcome, Admitted):
            await admission.settle(outcome, 800, 200)
    return (time.perf_counter() - start) / calls


def best(runs: int, measure: Callable[[], float]) -> tuple[float, float]:
    """(best seconds per call, worst / best) over ``runs`` runs."""
    figures = [measure() for _ in range(runs)]
    return min(figures), max(figures) / min(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    calls, runs = args.calls, args.runs
    rule = LoopRule(repeats=20, window_s=60)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; best of {runs} runs of {calls:,} calls")
    for name, loop_rule, distinct in (("no loop rule", None, True), ("loop rule, distinct bodies", rule, True),
                                      ("loop rule, one body again and again", rule, False)):
        seconds, spread = best(runs, lambda r=loop_rule, d=distinct: asyncio.run(hook(calls, r, d)))
        print(f"loop hook, {name}: {seconds * 1e6:.2f} us per call (spread {spread:.2f}x)")
    for name, alerts in (("no breaker rule", ""), ("a rule that may trip breakers",
                                                   "alerts: {loop: {trip_breaker: true}}")):
        seconds, spread = best(runs, lambda a=alerts: asyncio.run(admissions(calls, a)))
        print(f"admit+settle, {name}: {seconds * 1e6:.2f} us per pair (spread {spread:.2f}x)")


if __name__ == "__main__":
    main()
