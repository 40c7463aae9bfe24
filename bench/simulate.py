"""Events replayed per second by ``simulate``, against the goal of 200,000 a second (issue 8).

Synthetic events, made in memory and fed in time order: one month, five departments of which
each call touches the organization's monthly budget, its department's monthly budget and a
per-key rolling-hour breaker, plus the department's rpm and tpm limits (the policy of
bench/engine.py). Department budgets of $200-$600 hold 30,000-90,000 calls, so at 200,000 events
one department runs out near the end of the month and at 1,000,000 every department runs out and
most calls are downgraded or refused: every regime of the replay is timed. Reading events from the
ledger is not timed here: that is the export's speed.

Timed: ``simulate()`` from the list of ``UsageEvent``s to its result, best of ``--repeat`` runs,
in CPU seconds of this process (the figure to compare: the machine is shared) and wall seconds.
Run: python bench/simulate.py [--events N [N ...]] [--repeat R]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from datetime import UTC, datetime, timedelta

from costwarden.core.events import UsageEvent
from costwarden.policy import parse_policy
from costwarden.reports.simulate import Simulation, simulate

GOAL = 200_000  # events per second

POLICY = """
version: 1
timezone: America/New_York
models:
  gpt-4o:      {provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25, downgrade_to: gpt-4o-mini}
  gpt-4o-mini: {provider: openai, tier: 1, input: 0.15, output: 0.60, cached_input: 0.075}
organization:
  budgets: [{limit: 1000000, period: monthly, action: reject}]
departments:
""" + "".join(f"""
  DEPT{i}:
    budgets: [{{limit: {200 + 100 * i}, period: monthly, alert_at: [0.5, 0.8], action: downgrade}}]
    limits: {{tpm: 1000000000, rpm: 100000000}}
    per_key:
      budgets: [{{limit: 10000, period: 1h, action: reject}}]
""" for i in range(5))


def events(count: int) -> list[UsageEvent]:
    rng = random.Random(1)
    start = datetime(2026, 11, 1, 5, tzinfo=UTC)
    step = timedelta(days=30) / count
    made = []
    for n in range(count):
        model = "gpt-4o" if n % 3 else "gpt-4o-mini"
        made.append(UsageEvent(
            id=f"e{n}", admitted_at=start + step * n, finished_at=start + step * n, department=f"DEPT{n % 5}",
            model_requested=model, model_served=model, provider="openai", endpoint="/v1/chat/completions",
            key_id=f"k{n % 40}", input_tokens=rng.randint(200, 4000), cached_input_tokens=0,
            output_tokens=rng.randint(50, 800), cost_nanos=1000))
    return made


def timed(count: int, repeat: int) -> None:
    policy = parse_policy(POLICY)
    replayed = events(count)
    cpu: list[float] = []
    wall: list[float] = []
    result = Simulation()
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = asyncio.run(simulate(policy, replayed))
        cpu.append(time.process_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    outcomes = result.departments.values()
    print(f"simulate {count:,} events: allowed {sum(o.allowed for o in outcomes):,}, downgraded "
          f"{sum(o.downgraded for o in outcomes):,}, rejected {sum(o.rejected for o in outcomes):,}; "
          f"budgets run out: {len(result.ran_out)}")
    for name, seconds in (("cpu", cpu), ("wall", wall)):
        best, worst = min(seconds), max(seconds)
        rate = count / best
        print(f"  {name:4}: best {best:.3f} s = {rate:,.0f} events/s = {rate / GOAL:.2f}x the {GOAL:,}/s goal "
              f"(spread {100 * (worst - best) / best:.0f}% over {repeat} runs: {', '.join(f'{s:.3f}' for s in seconds)} s)")
    print(f"  load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for count in args.events:
        timed(count, args.repeat)


if __name__ == "__main__":
    main()
