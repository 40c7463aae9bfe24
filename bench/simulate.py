"""Events replayed per second by ``simulate`` (the gateway's Admission over the memory store).

Synthetic events, made in memory and fed in time order: one month, five departments of which
each call touches the organization's monthly budget, its department's monthly budget and a
per-key rolling-hour breaker, plus the department's rpm and tpm limits (the policy of
bench/engine.py). Reading events from the ledger is not timed here: that is the export's speed.
Run: python bench/simulate.py [--events N]
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
from costwarden.reports.simulate import simulate

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    policy = parse_policy(POLICY)
    replayed = events(args.events)
    started = time.perf_counter()
    result = asyncio.run(simulate(policy, replayed))
    seconds = time.perf_counter() - started
    outcomes = result.departments.values()
    print(f"simulate: {result.events} events in {seconds:.2f} s = {result.events / seconds:,.0f} events/s "
          f"(allowed {sum(o.allowed for o in outcomes)}, downgraded {sum(o.downgraded for o in outcomes)}, "
          f"rejected {sum(o.rejected for o in outcomes)}; budgets run out: {len(result.ran_out)}); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
