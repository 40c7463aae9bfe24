"""The PostgreSQL writer process's event statement: what the server spends on it, before and after.

A throwaway PostgreSQL (PostgreSQL's durable defaults) gets the ledger's schema as the project
creates it, then --events events (100,000 by default) over five departments and twenty days, their
rollups, and --inflight write-ahead rows of calls still open. Then the statement that stores a
call's event (deleting its write-ahead row and adding to the rollups: ``PostgresStatements``) is
run --rounds times for batches of one event and of 32, as the writer process runs it (an
autocommit connection, psycopg preparing the text), each variant on a connection of its own and
the variants interleaved:

- ``before``: the text as it was (``RETURNING *``, every batch grouped) on a connection with
  PostgreSQL's default plan cache mode;
- ``generic``: the text as it was, on a connection set up as the writer process sets its own up;
- ``texts``: today's texts (``rollups.after_insert_postgres``), default plan cache mode;
- ``after``: today's texts on a connection set up as the writer process sets its own up.

Each execution's write-ahead rows are inserted first, on another connection, as the gateway's
are. The timed commits do not wait for the WAL flush unless --flush is given (the writer's do,
but the flush is the same for every variant and the disk's noise would hide the rest). Timed per execution: the server process's CPU time (``/proc/PID/schedstat``, Linux; the
machine may be shared, and CPU time is what other processes move least) and the wall time the
client waited (the commit's flush included). Printed: the median, the 10th and 90th percentiles,
per event, and how often each connection's prepared statement was planned anew (custom plans).
At the end the rollups are checked against a GROUP BY over usage_events.

With ``--calls BATCH`` it runs instead the writer's stream of statements at high concurrency
(``calls``): every PostgreSQL process's CPU per event, and with ``--mixed`` the forms a round of
write-ahead rows and events may take, side by side.

Run: python bench/ledger_statements.py [--events 100000] [--inflight 200] [--rounds 300] [--flush] [--url URL]
     python bench/ledger_statements.py --calls 16 --same [--mixed] [--rounds 900] [--sql STATEMENT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import services
from services import postgres
from sqlalchemy.dialects import postgresql

from costwarden.core.events import InflightCall, UsageEvent
from costwarden.ledger import Ledger, rollups
from costwarden.ledger.queue_items import RowKind, Write
from costwarden.ledger.rows import event_row, inflight_row
from costwarden.ledger.schema import ROLLUP_DIMENSIONS, ROLLUP_MEASURES
from costwarden.ledger.sqlite_statements import PostgresStatements
from costwarden.ledger.writer_process import PLANNER_SETTINGS, Statement

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DEPARTMENTS = ("ENGINEERING", "MARKETING", "SALES", "HR", "FINANCE")
SIZES = (1, 32)
Built = tuple[str, list[Any]]


class Events:
    """Events of a realistic spread, with fresh ids."""

    def __init__(self) -> None:
        self._random = random.Random(7)
        self._ids = itertools.count()

    def make(self, count: int, days: int = 20, same: bool = False) -> list[UsageEvent]:
        """``count`` events over ``days`` days; ``same``: every one of the same rollup group but for
        its day (as a load generator's calls: one key, one model)."""
        pick = (lambda choices: choices[0]) if same else self._random.choice
        events = []
        for _ in range(count):
            at = T0 + timedelta(seconds=self._random.randrange(days * 86_400))
            events.append(UsageEvent(
                id=f"call-{next(self._ids)}", admitted_at=at, finished_at=at + timedelta(seconds=2),
                department=pick(DEPARTMENTS), team=pick((None, "DESK", "OPS", "WEB")),
                key_id=pick((None, "key_1", "key_2")), user=pick((None, "ana", "bo", "cy")),
                model_requested="gpt-4o", model_served=pick(("gpt-4o", "gpt-4o-mini")), provider="openai",
                endpoint="/v1/chat/completions", tags=pick(({}, {}, {"project": "atlas"})),
                input_tokens=self._random.randrange(100_000), cached_input_tokens=10,
                output_tokens=self._random.randrange(10_000), cost_nanos=self._random.randrange(10**10),
                estimate_nanos=5, price_version="p1"))
        return events


def ahead(event: UsageEvent) -> InflightCall:
    return InflightCall(
        id=event.id, admitted_at=event.admitted_at, department=event.department,
        model_requested=event.model_requested, model_served=event.model_served, provider=event.provider,
        endpoint=event.endpoint, estimate_input_tokens=1000, estimate_output_tokens=1000, estimate_nanos=5,
        price_version="p1", team=event.team, key_id=event.key_id, user=event.user, tags=event.tags)


def one(statements: list[Statement]) -> Built:
    [(sql, params)] = statements
    return sql, params


def before(sql: str) -> str:
    """The event statement as it was: the whole row returned, every batch grouped."""
    insert = sql.split(" RETURNING ", 1)[0].split("stored AS (", 1)[1]
    head = sql.split("stored AS (", 1)[0]
    return f"{head}stored AS ({insert} RETURNING *) " + rollups.from_events("postgresql", "true", "stored")


def cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/schedstat") as stat:
        return int(stat.read().split()[0])


@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with postgres(durable=True) as fresh:
        yield fresh


def fill(url: str, events: Events, statements: PostgresStatements, count: int, inflight: int) -> None:
    async def migrate() -> None:
        await (await Ledger.open(url)).close()

    asyncio.run(migrate())
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, count, 1000):
            batch = events.make(min(1000, count - start))
            conn.execute(*one(statements.batch([Write(RowKind.EVENT, event_row(e)) for e in batch])))
        if inflight:
            calls = [Write(RowKind.INFLIGHT, inflight_row(ahead(e))) for e in events.make(inflight)]
            conn.execute(*one(statements.batch(calls)))
        conn.execute("VACUUM ANALYZE")


def measure(url: str, rounds: int, events: Events, statements: PostgresStatements, flush: bool) -> None:
    variants: dict[str, tuple[Callable[[str], str], tuple[str, ...]]] = {
        "before": (before, ()), "generic": (before, PLANNER_SETTINGS), "texts": (lambda sql: sql, ()),
        "after": (lambda sql: sql, PLANNER_SETTINGS)}
    cpu: dict[tuple[str, int], list[int]] = {(v, n): [] for v in variants for n in SIZES}
    wall: dict[tuple[str, int], list[int]] = {(v, n): [] for v in variants for n in SIZES}
    conns: dict[tuple[str, int], tuple[psycopg.Connection[Any], int]] = {}
    order = list(variants)
    shuffle = random.Random(11).shuffle
    with psycopg.connect(url, autocommit=True) as writer:
        writer.execute("SET synchronous_commit TO off")  # as the writer process's write-ahead rows
        try:
            for key in cpu:
                conn = psycopg.connect(url, autocommit=True)
                if not flush:  # the statement's own work, without the commit's disk flush (the same for all)
                    conn.execute("SET synchronous_commit TO off")
                for setting in variants[key[0]][1]:
                    conn.execute(setting)
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                conns[key] = conn, row[0]
            for _ in range(rounds):
                shuffle(order)
                for size in SIZES:
                    for name in order:
                        batch = events.make(size, days=1)
                        writer.execute(*one(statements.batch(
                            [Write(RowKind.INFLIGHT, inflight_row(ahead(e))) for e in batch])))
                        sql, params = one(statements.batch([Write(RowKind.EVENT, event_row(e)) for e in batch]))
                        conn, pid = conns[(name, size)]
                        sql = variants[name][0](sql)
                        used, started = cpu_ns(pid), time.perf_counter_ns()
                        conn.execute(sql, params)
                        waited, used = time.perf_counter_ns() - started, cpu_ns(pid) - used
                        cpu[(name, size)].append(used)
                        wall[(name, size)].append(waited)
            for (name, size), (conn, _) in conns.items():
                plans = conn.execute("SELECT sum(generic_plans), sum(custom_plans) FROM pg_prepared_statements"
                                     ).fetchone()
                report(name, size, cpu[(name, size)], wall[(name, size)], plans)
        finally:
            for conn, _ in conns.values():
                conn.close()


def server_cpu_s(postmaster: int) -> float:
    """CPU seconds of every PostgreSQL process: the postmaster's tree (backends, WAL writer,
    checkpointer, autovacuum) and the children it has reaped (autovacuum workers)."""
    stat = Path(f"/proc/{postmaster}/stat").read_text()
    reaped = stat[stat.rindex(")") + 2:].split()[13:15]
    return services.tree_cpu_seconds(postmaster) + sum(map(int, reaped)) / os.sysconf("SC_CLK_TCK")


def writer_connection(url: str, unflushed: bool) -> tuple[psycopg.Connection[Any], int]:
    """A connection set up as the writer process sets its own up, and its backend's pid."""
    conn = psycopg.connect(url, autocommit=True)
    for setting in PLANNER_SETTINGS:
        conn.execute(setting)
    if unflushed:
        conn.execute("SET synchronous_commit TO off")
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return conn, row[0]


def run(conn: psycopg.Connection[Any], batch: list[Statement]) -> None:
    """A batch as the writer process commits it: one statement alone, several in a transaction."""
    if len(batch) == 1:
        conn.execute(*one(batch), prepare=True)
        return
    with conn.transaction():
        for sql, params in batch:
            conn.execute(sql, params, prepare=True)


FORMS = ("apart", "one transaction", "one statement")


def calls(url: str, rounds: int, batch: int, events: Events, statements: PostgresStatements, same: bool,
          mixed: bool) -> None:
    """The writer process's statements at high concurrency, as a stream: each round, a batch of
    ``batch`` write-ahead rows (committed without waiting for the flush, on a connection of its
    own), then the events of the calls begun two rounds before (their insert, the deletion of
    their write-ahead rows and the rollups, committed durably), so that about 2 x ``batch`` calls
    are in flight. Printed: every PostgreSQL process's CPU per event (the two backends, and the
    rest: WAL writer, checkpointer, autovacuum), and WAL bytes per event.

    ``mixed``: the rounds take turns between three forms, and each form's CPU (both backends',
    and this process's, which does the writer process's work) is printed per event: ``apart``
    as above; ``one transaction``, the write-ahead rows' statement and the events' in one
    transaction (the writer process commits a batch of write-ahead rows that waited for the next
    batch so); ``one statement``, the write-ahead rows in the events' statement (a batch of the
    gateway's holding both)."""
    (ahead_conn, ahead_pid), (event_conn, event_pid) = writer_connection(url, True), writer_connection(url, False)
    postmaster = int(Path(f"/proc/{event_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    open_calls: list[list[UsageEvent]] = []
    servers: dict[str, list[int]] = {form: [] for form in FORMS}
    clients: dict[str, list[int]] = {form: [] for form in FORMS}
    turns = itertools.cycle(FORMS if mixed else FORMS[:1])

    def step() -> None:
        begun = events.make(batch, days=1, same=same)
        writes = [Write(RowKind.INFLIGHT, inflight_row(ahead(e))) for e in begun]
        open_calls.append(begun)
        if len(open_calls) <= 2:
            run(ahead_conn, statements.batch(writes))
            return
        ended = [Write(RowKind.EVENT, event_row(e)) for e in open_calls.pop(0)]
        form = next(turns)
        used, own = cpu_ns(ahead_pid) + cpu_ns(event_pid), time.thread_time_ns()
        if form == "apart":
            run(ahead_conn, statements.batch(writes))
            run(event_conn, statements.batch(ended))
        elif form == "one transaction":
            run(event_conn, statements.batch(writes) + statements.batch(ended))
        else:
            run(event_conn, statements.batch(writes + ended))
        servers[form].append(cpu_ns(ahead_pid) + cpu_ns(event_pid) - used)
        clients[form].append(time.thread_time_ns() - own)

    try:
        for _ in range(max(10, rounds // 10)):  # prepared statements, a steady table
            step()
        for kept in (*servers.values(), *clients.values()):
            kept.clear()
        wal = event_conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        total, backends = server_cpu_s(postmaster), (cpu_ns(ahead_pid), cpu_ns(event_pid))
        started = time.perf_counter()
        for _ in range(rounds):
            step()
        elapsed = time.perf_counter() - started
        total, ahead_ns, event_ns = server_cpu_s(postmaster) - total, cpu_ns(ahead_pid) - backends[0], \
            cpu_ns(event_pid) - backends[1]
        size = event_conn.execute("SELECT pg_current_wal_lsn() - %s::pg_lsn", wal).fetchone()
    finally:
        ahead_conn.close()
        event_conn.close()
    count = rounds * batch
    assert size is not None
    print(f"calls: {rounds} rounds of {batch} ({'one group' if same else 'spread'}{', mixed' * mixed}): server CPU "
          f"{total / count * 1e6:.1f} us per event (write-ahead backend {ahead_ns / count / 1000:.1f}, event backend "
          f"{event_ns / count / 1000:.1f}, other processes {(total - (ahead_ns + event_ns) / 1e9) / count * 1e6:.1f}); "
          f"WAL {int(size[0]) / count:.0f} bytes per event; {count / elapsed:,.0f} events/s")
    for form in FORMS if mixed else ():
        used, own = servers[form], clients[form]
        print(f"  {form:15}: backends' CPU median {statistics.median(used) / 1000 / batch:5.1f} us per event "
              f"(p10 {statistics.quantiles(used, n=10)[0] / 1000 / batch:5.1f}, {len(used)} rounds); "
              f"this process's {statistics.median(own) / 1000 / batch:5.1f} us per event")


def report(name: str, size: int, cpu: list[int], wall: list[int], plans: Any) -> None:
    cpu, wall = cpu[10:], wall[10:]  # the first executions are not yet prepared
    low, *_, high = statistics.quantiles(cpu, n=10)
    median = statistics.median(cpu)
    print(f"{name:7} {size:3} event(s): server CPU median {median / 1000:6.0f} us (p10 {low / 1000:5.0f}, "
          f"p90 {high / 1000:5.0f}), {median / 1000 / size:5.1f} us per event; wall median "
          f"{statistics.median(wall) / 1000:6.0f} us; plans generic/custom {plans[0]}/{plans[1]}")


def check(url: str) -> None:
    """The rollups equal a GROUP BY over usage_events."""
    key = ["to_char(admitted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
           *(f"coalesce(\"{d}\", '')" for d in ROLLUP_DIMENSIONS)]
    sums = ["count(*)", *(f"sum(\"{m}\")" for m in ROLLUP_MEASURES)]
    columns = ", ".join(f'"{c}"' for c in rollups.COLUMNS)
    with psycopg.connect(url, autocommit=True) as conn:
        scan = conn.execute(f"SELECT {', '.join(key + sums)} FROM usage_events GROUP BY "
                            f"{', '.join(map(str, range(1, len(key) + 1)))} EXCEPT SELECT {columns} FROM usage_rollups"
                            ).fetchall()
        extra = conn.execute(f"SELECT {columns} FROM usage_rollups EXCEPT SELECT {', '.join(key + sums)} "
                             f"FROM usage_events GROUP BY {', '.join(map(str, range(1, len(key) + 1)))}").fetchall()
    print("rollups equal the events' GROUP BY:", not scan and not extra)
    assert not scan and not extra, (scan[:3], extra[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--inflight", type=int, default=200, help="write-ahead rows of calls still open")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--flush", action="store_true",
                        help="timed commits wait for the WAL flush, as the writer's do (adds the disk's noise)")
    parser.add_argument("--calls", type=int, default=0, metavar="BATCH",
                        help="instead: the writer's stream of statements at high concurrency, BATCH calls per batch")
    parser.add_argument("--same", action="store_true", help="with --calls: every call in one rollup group")
    parser.add_argument("--mixed", action="store_true",
                        help="with --calls: write-ahead rows in the same batch as the events")
    parser.add_argument("--sql", action="append", default=[],
                        help="run this statement after the fill, before measuring (to try a schema change)")
    parser.add_argument("--url", help="an existing, empty PostgreSQL database (default: a throwaway cluster)")
    args = parser.parse_args()
    statements = PostgresStatements(postgresql.dialect())
    events = Events()
    with database(args.url) as url:
        fill(url, events, statements, args.events, args.inflight)
        with psycopg.connect(url, autocommit=True) as conn:
            for sql in args.sql:
                conn.execute(sql.encode())
        if args.calls:
            calls(url, args.rounds, args.calls, events, statements, args.same, args.mixed)
        else:
            measure(url, args.rounds, events, statements, args.flush)
        check(url)


if __name__ == "__main__":
    main()
