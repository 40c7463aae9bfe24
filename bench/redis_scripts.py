"""What the counter scripts cost the Redis server: admit+settle pairs through the Redis store.

The policy and callers of ``engine.py`` (five holds per call: organization and department
monthly, a per-key rolling hour, department TPM and RPM), driven at concurrency 1 and 64 against
a throwaway Redis. Prints, from ``INFO commandstats`` (reset before each run): the scripts run
(FCALL, or EVALSHA on a store of an earlier version), the server's CPU per script
(usec_per_call), the commands the scripts ran per pair and pairs per second. Server CPU times on a shared machine move by tens of percent from run to run;
with ``--callgrind`` the server runs under valgrind and the figure is the instructions it ran per
script and per pair, which does not move (slow: use a few hundred pairs).
With ``--replay N`` it measures the other side, what the store's calls cost the gateway: 200 pairs
are run against the server and their answers recorded, then N pairs at concurrency 1 are given
those answers in turn with no server (packing the scripts' arguments, reading their answers, the
remembered figures, and the admission around them). Run it under callgrind for two values of N:
the difference of the totals divided by the difference of N is the instructions per pair.
It runs on the store of any version: ``PYTHONPATH`` at another tree's ``src`` compares the two.
Run: python bench/redis_scripts.py [--pairs N] [--repeat R] [--callgrind] [--replay N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as redis_client
from engine import POLICY, STEP
from services import free_port, redis, stop, wait_until

from costwarden.core.decision import CallRequest
from costwarden.core.scopes import Caller, Planner
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.policy import parse_policy

SCRIPTS = ("evalsha", "fcall")
OUTER = ("cmdstat_evalsha", "cmdstat_fcall", "cmdstat_info")  # the commands not run by the scripts


class Clock:
    """Today's time, advancing 1 ms per reading: rolling buckets move as under real traffic, and
    calendar windows are the current ones (so key expiry is what it is in service)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.now += STEP
        return self.now


@contextlib.contextmanager
def callgrind_redis() -> Iterator[tuple[str, Callable[[], None], Callable[[], int]]]:
    """A Redis server under callgrind: yields its URL, a function that zeroes the instruction
    count and one that returns the instructions run since."""
    base = Path(tempfile.mkdtemp(prefix="costwarden-bench-callgrind-"))
    log, port = base / "redis.log", free_port()
    try:
        with open(log, "wb") as out:
            server = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={base}/cg.%p",
                                       "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(base)], stdout=out, stderr=subprocess.STDOUT)

        def ping() -> bool:
            with contextlib.suppress(redis_client.RedisError), redis_client.Redis(port=port) as client:
                return bool(client.ping())
            return False

        def control(option: str) -> None:
            subprocess.run(["callgrind_control", option, str(server.pid)], check=True, capture_output=True)

        def counted() -> int:
            control("-d")
            dump = max(base.glob("cg.*"), key=lambda path: path.stat().st_mtime)
            found = re.search(r"^summary:\s*(\d+)", dump.read_text(), re.MULTILINE)
            return int(found[1]) if found else 0

        try:
            wait_until(ping, "redis-server under callgrind", server, log)
            yield f"redis://127.0.0.1:{port}/0", lambda: control("-z"), counted
        finally:
            stop(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def run(url: str, pairs: int, concurrency: int, zero: Callable[[], None] | None = None) -> tuple[float, int]:
    store = RedisCounterStore.from_url(url)
    await store.replace([], "m1")  # the generation marker every script checks
    try:
        await drive(store, 1, 1)  # scripts loaded, connections open
        with redis_client.Redis.from_url(url) as client:
            client.config_resetstat()
        if zero is not None:
            zero()
        start = time.perf_counter()
        admitted = await drive(store, pairs, concurrency)
        return time.perf_counter() - start, admitted
    finally:
        await store.close()


async def replay(url: str, pairs: int) -> None:
    """Record the answers of 200 pairs from the server at ``url``, then run ``pairs`` more that are
    given those answers in turn, without the server (a completed future per script). Answers are
    told apart by the first 96 bytes of their command (the function's name or the script's digest,
    the counts around it, the first keys), so that this runs on the store of any version."""
    answers: dict[bytes, list[Any]] = {}
    store = RedisCounterStore.from_url(url)
    sent = store._calls.run_packed

    async def recorded(script: Any, command: bytes) -> Any:
        answer = await sent(script, command)
        answers.setdefault(command[:96], []).append(answer)
        return answer

    store._calls.run_packed = recorded  # type: ignore[method-assign]
    await store.replace([], "m1")
    await drive(store, 200, 1)
    await store.close()
    store = RedisCounterStore.from_url(url)
    await store.replace([], "m1")
    turns = {shape: [given, 0] for shape, given in answers.items()}
    loop = asyncio.get_running_loop()

    def answered(script: Any, command: bytes) -> asyncio.Future[Any]:
        turn = turns[command[:96]]
        given, turn[1] = turn[0], turn[1] + 1
        future = loop.create_future()
        future.set_result(given[turn[1] % len(given)])
        return future

    store._calls.run_packed = answered  # type: ignore[method-assign]
    await drive(store, pairs, 1)
    await store.close()


def scripts_run(found: dict[str, Any]) -> int:
    """The scripts and functions run (EVALSHA, FCALL), from ``INFO commandstats``."""
    return sum(int(found.get(f"cmdstat_{name}", {"calls": 0})["calls"]) for name in SCRIPTS)


async def drive(store: RedisCounterStore, pairs: int, concurrency: int) -> int:
    """Admit and settle ``pairs`` calls through ``store``; returns how many were admitted."""
    admission = Admission(store, Clock())
    planner = Planner(parse_policy(POLICY))
    requests = [CallRequest(Caller(f"DEPT{i % 5}", key_id=f"key{i % 50}"), "gpt-4o-mini", 800, 400)
                for i in range(100)]
    admitted = 0
    counter = iter(range(pairs))

    async def worker() -> None:
        nonlocal admitted
        for i in counter:
            outcome = await admission.admit(str(i), requests[i % 100], planner)
            if isinstance(outcome, Admitted):
                admitted += 1
                await admission.settle(outcome, 800, 200)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return admitted


def stats(url: str) -> dict[str, Any]:
    with redis_client.Redis.from_url(url) as client:
        found: dict[str, Any] = client.info("commandstats")
        client.flushdb()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="count the server's instructions")
    parser.add_argument("--replay", type=int, metavar="N", help="N pairs on recorded answers, no server")
    args = parser.parse_args()
    if args.replay is not None:
        with redis() as url:
            asyncio.run(replay(url, args.replay))
        return
    if args.callgrind:
        with callgrind_redis() as (url, zero, counted):
            asyncio.run(run(url, 20, 1))  # scripts compiled, keys created, expiries set
            stats(url)
            for concurrency in (1, 64):
                asyncio.run(run(url, args.pairs, concurrency, zero))
                instructions = counted()
                scripts = scripts_run(stats(url))
                print(f"c={concurrency}: {instructions / scripts:,.0f} instructions per script, "
                      f"{instructions / args.pairs:,.0f} per pair ({scripts} scripts)")
        return
    with redis() as url:
        for concurrency in (1, 64):
            rows = []
            for _ in range(args.repeat):
                elapsed, admitted = asyncio.run(run(url, args.pairs, concurrency))
                found = stats(url)
                run_ = scripts_run(found)
                used_us = sum(float(found.get(f"cmdstat_{name}", {"usec": 0})["usec"]) for name in SCRIPTS)
                inner = sum(int(v["calls"]) for k, v in found.items() if k not in OUTER)
                rows.append((used_us / max(run_, 1), run_, inner / args.pairs, args.pairs / elapsed, admitted))
                print(f"c={concurrency}: scripts {rows[-1][1]} calls, {rows[-1][0]:.2f} usec_per_call, "
                      f"{rows[-1][2]:.2f} commands per pair, {rows[-1][3]:,.0f} pairs/s ({admitted} admitted)")
            usec = [r[0] for r in rows]
            rate = [r[3] for r in rows]
            print(f"c={concurrency}: best usec_per_call {min(usec):.2f} (spread {max(usec) - min(usec):.2f}), "
                  f"best pairs/s {max(rate):,.0f} (spread {max(rate) - min(rate):,.0f})")
            if concurrency == 1:
                per = sorted(found.items())
                print("  last run, commands per pair: " + ", ".join(
                    f"{k.removeprefix('cmdstat_')} {int(v['calls']) / args.pairs:.2f}" for k, v in per
                    if k not in OUTER))

if __name__ == "__main__":
    main()
