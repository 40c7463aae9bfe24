"""Reports at scale: a month of N events (10 million by default) in a SQLite ledger, and the
twelve months before it closed; then the time of each report against its goal.

How the ledger is made: the events are inserted by SQLite itself (``INSERT ... SELECT`` over a
recursive counter, in transactions of 500,000), each followed by the writer's own rollup statement, so that the rollups are kept exactly as the gateway's writes keep them. Each
event's fields come from a hash of its number: 300 users in 5 departments and 30 teams, each with
its key and its project tag (none for a sixth of them); 4 models of 2 providers at the policy's
prices (costs are the catalog's, so an import re-prices nothing), each user calling one model 70 %
of the time and another 30 %; calls spread evenly over the month. The
eleven months before it hold N/20 events each and are closed, then the month itself is timed
live and closed: the next month is an open month after twelve closed ones.

Timed (best of --repeat runs, with the spread; wall and CPU seconds, since the machine is shared):
the chargeback statement (CSV), the FOCUS export, the open month after the twelve closed ones
(nothing late, then one late call), and ``ledger export`` / ``ledger import`` of the first
--io-events events of the month (JSON Lines, the CLI's code path, with its checks and re-pricing).

Run: python bench/reports.py [--events 10000000] [--io-events 1000000] [--dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from costwarden.core.events import UsageEvent
from costwarden.core.policy import Policy
from costwarden.ledger import Ledger
from costwarden.ledger.export import write_export
from costwarden.ledger.import_stream import import_lines
from costwarden.ledger.rollups import SQLITE_AFTER_INSERT
from costwarden.policy import parse_policy
from costwarden.reports.collect import close, live_statement
from costwarden.reports.focus import bundled_list_prices, write_focus
from costwarden.reports.render import write_csv
from costwarden.reports.shared import SharedCosts

MONTH = "2026-11"
NEXT = "2026-12"
CLOSED_BEFORE = [f"2025-{m:02d}" for m in (12,)] + [f"2026-{m:02d}" for m in range(1, 11)]
DEPARTMENTS = ("ENGINEERING", "MARKETING", "SALES", "HR", "FINANCE")
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-haiku-4-5", "claude-sonnet-4-5")
POLICY = """
version: 1
timezone: UTC
models:
  gpt-4o:            {provider: openai, tier: 3, input: 2.50, output: 10.00, cached_input: 1.25}
  gpt-4o-mini:       {provider: openai, tier: 1, input: 0.15, output: 0.60, cached_input: 0.075}
  claude-haiku-4-5:  {provider: anthropic, tier: 1, input: 1.00, output: 5.00, cached_input: 0.10}
  claude-sonnet-4-5: {provider: anthropic, tier: 2, input: 3.00, output: 15.00, cached_input: 0.30}
attribution: {require: false}
departments:
""" + "".join(f"""
  {name}:
    cost_center: CC-{100 * (i + 1)}
    budgets: [{{limit: {5_000_000 * (i + 1)}, period: monthly, action: alert}}]
""" for i, name in enumerate(DEPARTMENTS))
GOALS = {"chargeback statement": 1.0, "FOCUS export": 5.0, "open month after 12 closed": 1.0}
CHUNK = 500_000


def setup_tables(db: sqlite3.Connection, policy: Policy) -> None:
    """Small lookup tables the generator joins by number: users, models, tags."""
    db.execute("CREATE TEMP TABLE bench_users (n INTEGER PRIMARY KEY, department TEXT, team TEXT, usr TEXT, key_id TEXT)")
    db.executemany("INSERT INTO bench_users VALUES (?, ?, ?, ?, ?)", [
        (n, DEPARTMENTS[n % 5], f"{DEPARTMENTS[n % 5][:3]}-T{n % 30 // 5}", f"user{n:03d}", f"key_{n:03d}")
        for n in range(300)])
    db.execute("CREATE TEMP TABLE bench_models (n INTEGER PRIMARY KEY, model TEXT, provider TEXT, "
               "pi INTEGER, pc INTEGER, po INTEGER, price_version TEXT)")
    rows = []
    for n, name in enumerate(MODELS):
        spec = policy.catalog.resolve(name)
        assert spec is not None
        per_input, per_cached, per_output = spec._picos  # the prices cost() uses, in picodollars per token
        rows.append((n, spec.id, spec.provider, per_input, per_cached, per_output, spec.price_version))
    db.executemany("INSERT INTO bench_models VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    db.execute("CREATE TEMP TABLE bench_tags (n INTEGER PRIMARY KEY, tags TEXT)")
    db.executemany("INSERT INTO bench_tags VALUES (?, ?)", [
        (0, "{}"), (1, '{"project":"atlas"}'), (2, '{"project":"zeus"}'), (3, '{"env":"prod","project":"atlas"}'),
        (4, '{"project":"hermes"}'), (5, '{"project":"apollo"}')])


GENERATE = """
WITH RECURSIVE seq(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM seq WHERE i < ?),
calls AS (SELECT i, (i * 2654435761) % 4294967296 AS h,
                 ? + (i - ?) * ? AS at FROM seq),
priced AS (SELECT c.i, c.h, c.at, u.*, m.model, m.provider, m.pi, m.pc, m.po, m.price_version, t.tags,
                  200 + (c.h >> 8) % 4000 AS input, ((200 + (c.h >> 8) % 4000) * ((c.h >> 4) % 4)) / 10 AS cached,
                  50 + (c.h >> 12) % 800 AS output
           FROM calls c JOIN bench_users u ON u.n = c.h % 300 JOIN bench_models m ON m.n = (u.n + ((c.h >> 20) % 10 >= 7)) % 4
                JOIN bench_tags t ON t.n = u.n % 6)
INSERT INTO usage_events (id, admitted_at, finished_at, department, team, key_id, "user", model_requested,
    model_served, provider, endpoint, tags, input_tokens, cached_input_tokens, output_tokens, cost_nanos,
    estimate_nanos, price_version, decision, status, http_status, latency_ms, overrun_tokens, interrupted,
    shadow, stream, model_sent)
SELECT 'ev-' || i,
       strftime('%Y-%m-%d %H:%M:%S', CAST(at AS INTEGER), 'unixepoch') || printf('.%06d', CAST((at - CAST(at AS INTEGER)) * 1000000 AS INTEGER)),
       strftime('%Y-%m-%d %H:%M:%S', CAST(at AS INTEGER) + 2, 'unixepoch') || '.000000',
       department, team, key_id, usr, model, model, provider, '/v1/chat/completions', tags,
       input, cached, output, ((input - cached) * pi + cached * pc + output * po + 999) / 1000,
       ((input - cached) * pi + cached * pc + (output + 500) * po + 999) / 1000, price_version,
       'allow', 'ok', 200, 300 + h % 2000, 0, 0, '[]', h % 2, model
FROM priced WHERE true
"""


def generate(path: Path, policy: Policy, start: int, count: int, month_start: datetime, month_end: datetime) -> None:
    """Events ``start`` .. ``start + count - 1`` spread evenly over [month_start, month_end)."""
    spacing = (month_end - month_start).total_seconds() / count
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    setup_tables(db, policy)
    for first in range(start, start + count, CHUNK):
        last = min(first + CHUNK, start + count) - 1
        db.execute("BEGIN IMMEDIATE")
        db.execute(GENERATE, (first, last, month_start.timestamp(), start, spacing))
        db.execute(SQLITE_AFTER_INSERT[0])  # the writer's rollup statement, after its insert
        db.execute("COMMIT")
    db.close()


def month_bounds(period: str) -> tuple[datetime, datetime]:
    year, month = int(period[:4]), int(period[5:])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


async def timed(label: str, repeat: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, float, float]:
    """Best wall time, spread (worst - best) and best CPU time of ``repeat`` runs of ``work``."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        await work()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    goal = GOALS.get(label)
    verdict = "" if goal is None else f"  goal < {goal:g} s: {'met' if min(walls) < goal else 'MISSED'} " \
                                      f"(measured/goal {min(walls) / goal:.2f})"
    print(f"{label:<40} best {min(walls):8.3f} s  spread {max(walls) - min(walls):6.3f} s  "
          f"cpu {min(cpus):8.3f} s{verdict}", flush=True)
    return min(walls), max(walls) - min(walls), min(cpus)


def throughput(label: str, events: int, wall: float, cpu: float) -> None:
    rate, cpu_rate = events / wall, events / cpu
    print(f"{label:<40} {events:,} events: {rate:,.0f} events/s wall, {cpu_rate:,.0f} events/s cpu  "
          f"goal >= 100,000/s: {'met' if rate >= 100_000 else 'MISSED'} (measured/goal {rate / 100_000:.2f})",
          flush=True)


async def main(events: int, io_events: int, base: Path, repeat: int, generate_only: bool = False) -> None:
    policy = parse_policy(POLICY)
    path = base / "ledger.db"
    url = f"sqlite:///{path}"
    await (await Ledger.open(url)).close()  # the schema
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; ledger {path}", flush=True)
    marker = base / "generated.txt"
    if marker.exists():  # generated by an earlier run with --generate-only
        print(f"reusing {marker.read_text().strip()}", flush=True)
    else:
        started = time.perf_counter()
        number = 0
        for period in CLOSED_BEFORE:
            count = max(events // 20, 1000)
            generate(path, policy, number, count, *month_bounds(period))
            number += count
        generate(path, policy, number, events, *month_bounds(MONTH))
        done = f"{number + events:,} events ({events:,} in {MONTH}, {number:,} in the 11 months before)"
        print(f"generated {done} in {time.perf_counter() - started:.1f} s", flush=True)
        if generate_only:
            marker.write_text(f"{done} in {path}\n")
            return

    ledger = await Ledger.open(url)
    try:
        now = datetime(2027, 1, 15, tzinfo=UTC)
        closed = await ledger.closed_periods()
        for period in CLOSED_BEFORE:
            if period not in closed:
                await close(ledger, policy, period, SharedCosts(), None, now)

        async def chargeback(period: str = MONTH) -> None:
            statement = await live_statement(ledger, policy, period, SharedCosts(), None, now)
            write_csv(statement, io.StringIO())

        async def focus() -> None:
            statement = await live_statement(ledger, policy, MONTH, SharedCosts(), None, now)
            write_focus(statement, io.StringIO(), bundled_list_prices())

        await timed("chargeback statement", repeat, chargeback)
        await timed("FOCUS export", repeat, focus)
        if MONTH not in closed:
            closing = time.perf_counter()
            await close(ledger, policy, MONTH, SharedCosts(), None, now)
            print(f"closed {MONTH} in {time.perf_counter() - closing:.3f} s (12 closed months now)", flush=True)
        await timed("open month after 12 closed", repeat, lambda: chargeback(NEXT))
        late = datetime(2026, 6, 20, 12, tzinfo=UTC)
        spec = policy.catalog["gpt-4o"]
        await ledger.record(UsageEvent(
            id="late-1", admitted_at=late, finished_at=late, department="HR", model_requested="gpt-4o",
            model_served="gpt-4o", provider="openai", endpoint="/v1/chat/completions", input_tokens=1000,
            cost_nanos=spec.cost(1000, 0), price_version=spec.price_version))
        await timed("open month, one late call in 2026-06", repeat, lambda: chargeback(NEXT))

        since, _ = month_bounds(MONTH)
        until = since + (month_bounds(MONTH)[1] - since) * min(1.0, io_events / events)
        exported = base / "export.jsonl"

        async def export() -> None:
            with exported.open("w", encoding="utf-8") as out:
                await write_export(ledger, out, "jsonl", since, until, include_rejections=False)

        wall, _, cpu = await timed("ledger export (JSON Lines)", repeat, export)
        with exported.open("rb") as counted:
            lines = sum(block.count(b"\n") for block in iter(lambda: counted.read(1 << 20), b""))
        throughput("ledger export", lines, wall, cpu)
    finally:
        await ledger.close()

    for stale in base.glob("imported*.db*"):  # from an earlier run on the same directory
        stale.unlink()
    # each run into a new ledger, opened beforehand, so that every run stores every event
    targets = [await Ledger.open(f"sqlite:///{base / f'imported-{run}.db'}") for run in range(repeat)]
    runs = iter(targets)

    async def import_() -> None:
        target = next(runs)
        with exported.open(encoding="utf-8") as source:
            result = await target.write_with(lambda conn: import_lines(conn, source, policy.catalog))
        assert result.events_new == lines and result.repriced == 0, result

    try:
        wall, _, cpu = await timed("ledger import (JSON Lines)", repeat, import_)
        throughput("ledger import", lines, wall, cpu)
    finally:
        for target in targets:
            await target.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the timed month")
    parser.add_argument("--io-events", type=int, default=1_000_000, help="events exported and imported")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each report (best and spread shown)")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the ledger (default: a temp dir)")
    parser.add_argument("--generate-only", action="store_true",
                        help="build the ledger in --dir and stop; a later run on that --dir times it")
    arguments = parser.parse_args()
    if arguments.generate_only and arguments.dir is None:
        parser.error("--generate-only needs --dir")
    if arguments.dir is not None:
        arguments.dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(main(arguments.events, arguments.io_events, arguments.dir, arguments.repeat,
                         arguments.generate_only))
    else:
        with tempfile.TemporaryDirectory(prefix="costwarden-reports-") as tmp:
            asyncio.run(main(arguments.events, arguments.io_events, Path(tmp), arguments.repeat))
