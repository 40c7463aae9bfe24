"""A process that opens a ledger and says so, waits for a line on its input (its database is then
locked), records calls, says so once every call has returned (so its rows are in the spool), then
waits to be killed.

Run: python spooling_process.py DB_URL SPOOL_DIR CALLS
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from costwarden.core.events import InflightCall, UsageEvent
from costwarden.ledger import Ledger

T0 = datetime(2026, 11, 10, 15, 0, tzinfo=UTC)


def call(n: int) -> InflightCall:
    return InflightCall(id=f"req_{n}", admitted_at=T0, department="HR", model_requested="gpt-4o-mini",
                        model_served="gpt-4o-mini", provider="openai", endpoint="/v1/chat/completions",
                        estimate_input_tokens=10, estimate_output_tokens=100, estimate_nanos=61_500,
                        price_version="p1")


def event(n: int) -> UsageEvent:
    return UsageEvent(id=f"req_{n}", admitted_at=T0, finished_at=T0 + timedelta(seconds=1), department="HR",
                      model_requested="gpt-4o-mini", model_served="gpt-4o-mini", provider="openai",
                      endpoint="/v1/chat/completions", input_tokens=10 + n, output_tokens=n, cost_nanos=1000 + n)


async def main(url: str, spool_dir: str, calls: int) -> None:
    ledger = await Ledger.open(url, spool_dir=spool_dir)
    print("opened", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for n in range(calls):
        ledger.begin(call(n))
    await asyncio.gather(*(ledger.record(event(n)) for n in range(calls)))
    print(f"recorded {calls} available={ledger.available}", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until killed (or its input closes)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
