"""The direct lane of a PostgreSQL ledger (``ledger/direct_lane.py``): a lone call's rows are
committed from the event loop, not through the writer process; a call's event never lands before
its own write-ahead row; and a lane whose connections are cut, or whose database restarts, loses
nothing, counts nothing twice and fails no call. Checked in the database itself."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from spooling_process import call, event

from costwarden.ledger import Ledger
from costwarden.ledger.direct_lane import APPLICATION_NAME
from service_fixtures import PostgresServer

pytestmark = pytest.mark.service
WAIT_S = 15.0
CUTS = 8  # the lane's connections terminated at least this often


def writer_pids() -> list[int]:
    """This process's ledger writer processes."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if parent == os.getpid() and b"writer_process.py" in cmdline.read():
                    pids.append(int(entry))
    return pids


def lane_backends(url: str) -> list[int]:
    """The server processes of the lane's connections."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                            (APPLICATION_NAME,)).fetchall()
    return [row[0] for row in rows]


def stored(url: str, prefix: str) -> tuple[int, int, int, int]:
    """Events of calls ``prefix*``, their summed output tokens, the output tokens the rollups
    hold, and write-ahead rows left, read on a connection of the test's own."""
    with psycopg.connect(url, autocommit=True) as conn:
        events, tokens = conn.execute("SELECT count(*), coalesce(sum(output_tokens), 0) FROM usage_events "
                                      "WHERE id LIKE %s", (prefix + "%",)).fetchone() or (0, 0)
        rolled = conn.execute("SELECT coalesce(sum(output_tokens), 0) FROM usage_rollups").fetchone()
        ahead = conn.execute("SELECT count(*) FROM inflight").fetchone()
    assert rolled is not None and ahead is not None
    return events, tokens, rolled[0], ahead[0]


async def lane_open(ledger: Ledger, url: str) -> bool:
    """Whether the ledger's lane is open, on connections still alive (the server's view)."""
    return ledger.direct_lane_open and len(await asyncio.to_thread(lane_backends, url)) == 2


async def until(ready: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval


@contextlib.asynccontextmanager
async def opened(url: str, spool: Path) -> AsyncIterator[Ledger]:
    """A ledger whose writer process has started and whose lane is open, after a lone call (no
    output tokens): calls come one at a time."""
    ledger = await Ledger.open(url, spool_dir=spool)
    try:
        ledger.start_writer()
        await until(lambda: asyncio.to_thread(lambda: bool(writer_pids())), "the writer process")
        await until(lambda: asyncio.sleep(0, ledger.direct_lane_open), "the lane open")
        await lone_call(ledger, "first", 0)
        yield ledger
    finally:
        await asyncio.wait_for(ledger.close(), WAIT_S)


@contextlib.contextmanager
def writer_stopped() -> Iterator[None]:
    """The writer process stopped (SIGSTOP): nothing sent to it is committed meanwhile."""
    pids = writer_pids()
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def lone_call(ledger: Ledger, ident: str, n: int, upstream_s: float = 0.0) -> None:
    ledger.begin(dataclasses.replace(call(n), id=ident))
    if upstream_s:
        await asyncio.sleep(upstream_s)  # the upstream's answer, not synchronization
    await ledger.record(dataclasses.replace(event(n), id=ident))


async def test_a_lone_call_is_committed_without_the_writer_process(postgres_database: str, tmp_path: Path) -> None:
    async with opened(postgres_database, tmp_path / "spool") as ledger:
        with writer_stopped():
            for n in range(5):
                await lone_call(ledger, f"lone_{n}", n, 0.001 * (n % 2))
            assert ledger.available  # committed, not spooled after its deadline
            assert await asyncio.to_thread(stored, postgres_database, "lone_") == (5, 10, 10, 0)
    assert not list((tmp_path / "spool").rglob("*.cwspool"))


async def test_an_event_never_lands_before_its_write_ahead_row(postgres_database: str, tmp_path: Path) -> None:
    """Lone calls whose event comes at once (its write-ahead row still being committed) or after
    a while, and bursts of concurrent calls, which share the lane and the writer process."""
    async with opened(postgres_database, tmp_path / "spool") as ledger:
        sent: list[int] = []  # the n of each call, by its number

        async def one(n: int, upstream_s: float) -> None:
            sent.append(n)
            await lone_call(ledger, f"order_{len(sent) - 1}", n, upstream_s)

        for n in range(300):
            await one(n, 0.0005 * (n % 3))
            if n % 30 == 0:
                await asyncio.gather(*(one(i, 0.001 * (i % 4)) for i in range(1 + n // 10)))
        assert ledger.available
    tokens = sum(event(n).output_tokens for n in sent)
    assert await asyncio.to_thread(stored, postgres_database, "order_") == (len(sent), tokens, tokens, 0)


async def test_cut_lane_connections_lose_nothing(postgres_database: str, tmp_path: Path) -> None:
    """The lane's server processes are terminated again and again while lone calls run: every
    call returns, every event is stored once, no write-ahead row is left, nothing is spooled."""
    async with opened(postgres_database, tmp_path / "spool") as ledger:
        cuts = 0

        async def cut() -> None:
            nonlocal cuts
            with psycopg.connect(postgres_database, autocommit=True) as conn:
                while True:
                    found = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE application_name = %s", (APPLICATION_NAME,)).fetchall()
                    cuts += len(found)
                    await asyncio.sleep(random.uniform(0.005, 0.05))  # between cuts, not synchronization

        cutter = asyncio.create_task(cut())
        calls = 0
        try:
            deadline = time.monotonic() + WAIT_S
            while cuts < CUTS and time.monotonic() < deadline:
                await lone_call(ledger, f"cut_{calls}", calls, 0.0005 * (calls % 2))
                calls += 1
        finally:
            cutter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cutter
        assert cuts >= CUTS
        assert ledger.available
        await until(lambda: lane_open(ledger, postgres_database), "the lane open again")
        with writer_stopped():  # the lane is used again
            await lone_call(ledger, f"cut_{calls}", calls)
    tokens = sum(event(n).output_tokens for n in range(calls + 1))
    assert await asyncio.to_thread(stored, postgres_database, "cut_") == (calls + 1, tokens, tokens, 0)
    assert not list((tmp_path / "spool").rglob("*.cwspool"))


async def test_a_restarted_database_fails_no_call(postgres_server: PostgresServer, tmp_path: Path) -> None:
    """PostgreSQL stopped as by a crash between lone calls and started again: the calls made
    after it return, their events reach the database, and the lane opens again."""
    url = postgres_server.url
    async with opened(url, tmp_path / "spool") as ledger:
        await lone_call(ledger, "restart_0", 0)
        await asyncio.to_thread(postgres_server.stop_immediately)
        await asyncio.to_thread(postgres_server.start)
        for n in range(1, 4):
            await lone_call(ledger, f"restart_{n}", n)  # never raises
        await until(lambda: asyncio.sleep(0, ledger.available), "the ledger available again")
        await until(lambda: lane_open(ledger, url), "the lane open again")
        with writer_stopped():
            await lone_call(ledger, "restart_4", 4)
            assert ledger.available
    tokens = sum(event(n).output_tokens for n in range(5))
    assert await asyncio.to_thread(stored, url, "restart_") == (5, tokens, tokens, 0)
