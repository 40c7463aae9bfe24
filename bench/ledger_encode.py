"""What queueing a call's row for the PostgreSQL writer process costs the gateway: the PostgreSQL
program's ``encode`` of batches of one usage event (or one write-ahead row), as a call's close
(or begin) queues them, rows like the gateway's. No database: encoding only.

    PYTHONPATH=src python bench/ledger_encode.py --kind event [--batches 20000] [--prebuilt]

prints the best of five runs in microseconds per batch (``--prebuilt``: the row is built
beforehand, so only the encoding is counted, not ``event_row``). Timings move with the machine's
load; instructions do not: run it under ``valgrind --tool=callgrind`` for two numbers of batches
(``--repeat 1``) and divide the difference of the totals by the difference of the numbers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects.postgresql import psycopg

from costwarden.core.events import InflightCall, UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.ledger.queue_items import RowKind, Write
from costwarden.ledger.rows import event_row, inflight_row
from costwarden.ledger.writer_process_client import postgres_program

POOL = 64  # distinct calls, encoded in turn
T0 = datetime(2026, 12, 2, 5, 0, 0, tzinfo=UTC)


def event(i: int) -> UsageEvent:
    at = T0 + timedelta(microseconds=i * 1_234_567)
    return UsageEvent(id=f"req_{i:032x}", admitted_at=at, finished_at=at + timedelta(milliseconds=347, microseconds=11),
                      department="research", model_requested="gpt-4o-mini", model_served="gpt-4o-mini",
                      provider="openai", endpoint="/v1/chat/completions", team="nlp", key_id="key_01",
                      input_tokens=120, output_tokens=64, cost_nanos=56_100, estimate_nanos=80_000,
                      price_version="2026-11-01", status=CallStatus.OK, latency_ms=347, model_sent="gpt-4o-mini")


def call(i: int) -> InflightCall:
    return InflightCall(id=f"req_{i:032x}", admitted_at=T0 + timedelta(microseconds=i * 1_234_567),
                        department="research", model_requested="gpt-4o-mini", model_served="gpt-4o-mini",
                        provider="openai", endpoint="/v1/chat/completions", estimate_input_tokens=120,
                        estimate_output_tokens=256, estimate_nanos=80_000, price_version="2026-11-01", team="nlp",
                        key_id="key_01", replica="r1", model_sent="gpt-4o-mini")


def run(kind: str, batches: int, prebuilt: bool) -> float:
    """Seconds to encode ``batches`` batches of one row of ``kind``."""
    encode = postgres_program("postgresql://bench@127.0.0.1/bench", psycopg.dialect()).encode
    build: Callable[[int], Write]
    if kind == "event":
        events = [event(i) for i in range(POOL)]
        build = lambda i: Write(RowKind.EVENT, event_row(events[i]))  # noqa: E731
    else:
        calls = [call(i) for i in range(POOL)]
        build = lambda i: Write(RowKind.INFLIGHT, inflight_row(calls[i]))  # noqa: E731
    built = [build(i) for i in range(POOL)]
    start = time.perf_counter()
    if prebuilt:
        for number in range(batches):
            encode(number, [built[number % POOL]])
    else:
        for number in range(batches):
            encode(number, [build(number % POOL)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["event", "ahead"], default="event")
    parser.add_argument("--batches", type=int, default=20_000)
    parser.add_argument("--prebuilt", action="store_true", help="rows built beforehand: the encoding only")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    best = min(run(args.kind, args.batches, args.prebuilt) for _ in range(args.repeat))
    print(f"{args.kind}{' (prebuilt)' if args.prebuilt else ''}: {best / args.batches * 1e6:.2f} us/batch, "
          f"best of {args.repeat}")


if __name__ == "__main__":
    main()
