"""Admissions + settlements per second through the memory counter store.

A realistic policy: five departments; every call touches three scopes (organization,
department, and a per-key runaway breaker on a rolling hour) plus department rate limits.
Run: python bench/engine.py [--calls N] [--plans ROUNDS]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from datetime import UTC, datetime, timedelta

from costwarden.core.decision import CallRequest
from costwarden.core.scopes import Caller, Planner
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.policy import parse_policy

POLICY = """
version: 1
timezone: America/New_York
organization:
  budgets: [{limit: 1000000, period: monthly, action: reject}]
departments:
""" + "".join(f"""
  DEPT{i}:
    budgets: [{{limit: 100000, period: monthly, alert_at: [0.5, 0.8], action: reject}}]
    limits: {{tpm: 1000000000, rpm: 100000000}}
    per_key:
      budgets: [{{limit: 10000, period: 1h, action: reject}}]
""" for i in range(5))


STEP = timedelta(microseconds=1000)  # made once: the clock's own cost is not the engine's


class Clock:
    """Advances 1 ms per reading, so rolling buckets move as they would under real traffic."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 10, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += STEP
        return self.now


async def run(calls: int) -> tuple[float, int]:
    admission = Admission(MemoryCounterStore(), Clock())
    planner = Planner(parse_policy(POLICY))
    requests = [CallRequest(Caller(f"DEPT{i % 5}", key_id=f"key{i % 50}"), "gpt-4o-mini", 800, 400)
                for i in range(100)]
    admitted = 0
    start = time.perf_counter()
    for i in range(calls):
        outcome = await admission.admit(str(i), requests[i % 100], planner)
        if isinstance(outcome, Admitted):
            admitted += 1
            await admission.settle(outcome, 800, 200)
    return time.perf_counter() - start, admitted


def plans(rounds: int) -> None:
    """Only the plans: the bench's 50 callers planned once a second for ``rounds`` seconds, so that
    every plan is rebuilt (its rate windows moved) and each department's rate checks are shared."""
    planner = Planner(parse_policy(POLICY))
    callers = [Caller(f"DEPT{i % 5}", key_id=f"key{i}") for i in range(50)]
    now = datetime(2026, 11, 10, tzinfo=UTC)
    for _ in range(rounds):
        now += timedelta(seconds=1)
        stamp = now.timestamp()
        for caller in callers:
            planner.plan(caller, now, stamp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--plans", type=int, metavar="ROUNDS",
                        help="only rebuild the 50 callers' plans, a second apart, ROUNDS times (for callgrind)")
    args = parser.parse_args()
    if args.plans is not None:
        plans(args.plans)
        return
    asyncio.run(run(2_000))  # warm up
    elapsed, admitted = asyncio.run(run(args.calls))
    rate = args.calls / elapsed
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"engine: {args.calls:,} admit+settle pairs in {elapsed:.2f} s on one core (load average {load})")
    print(f"engine: {rate:,.0f} admissions+settlements per second ({admitted:,} admitted), "
          f"{1e6 / rate:.1f} us per pair; goal >= 100,000/s: ratio {rate / 100_000:.2f}")


if __name__ == "__main__":
    main()
