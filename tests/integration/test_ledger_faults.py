"""SPEC section 10, the ledger's line, under real faults: PostgreSQL stopped immediately mid-load,
a SQLite ledger locked by another connection, a full disk, and a process killed with rows in its
spool. After each: every client that got a 200 has its event in the ledger, the ledger's tokens
equal what the upstream served, no client got a 5xx after the upstream answered, and the calls
made during the outage were refused with 503 ``storage_unavailable`` before being forwarded."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from spooling_process import call, event

from costwarden.core.events import UsageEvent
from costwarden.errors import StorageError
from costwarden.ledger import Ledger
from costwarden.ledger.company import SIBLINGS
from costwarden.ledger.outage import UNAVAILABLE, WhenDown
from costwarden.ledger.spool import Spool, SpoolError
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, start_gateway
from service_fixtures import PostgresServer, missing_service

gateway = contextlib.contextmanager(start_gateway)
POLICY = UPSTREAMS + "departments:\n" + PLAIN_DEPARTMENTS
CONCURRENCY = 12
OUTAGE_S = 3.0  # how long each fault is held (at least; until enough calls were refused)
DEADLINE_S = 45.0
WAIT_S = 10.0  # for one ledger's rows to land (past its commit deadline, through its spool)
SPOOLING_PROCESS = Path(__file__).with_name("spooling_process.py")


@dataclass
class Result:
    status: int  # 0: the connection failed
    request_id: str | None
    code: str | None = None
    should_retry: str | None = None
    complete: bool = True  # a stream reached its end


async def one_call(client: httpx.AsyncClient, key: str, tag: str, stream: bool) -> Result:
    body: dict[str, object] = {"model": "gpt-4o-mini", "max_tokens": 20,
                               "messages": [{"role": "user", "content": f"call {tag} #mock output_tokens=20"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}"}) as reply:
            content = await reply.aread()
    except httpx.HTTPError:
        return Result(0, None, complete=False)
    result = Result(reply.status_code, reply.headers.get("x-request-id"), should_retry=reply.headers.get("x-should-retry"))
    if reply.status_code != 200:
        result.code = orjson.loads(content)["error"]["code"]
    elif stream:
        result.complete = content.rstrip().endswith(b"data: [DONE]")
    return result


async def until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling interval


async def load_through(gw: Gateway, inject: Callable[[], object], repair: Callable[[], object]) -> list[Result]:
    """Calls from CONCURRENCY clients; mid-run the fault is injected, held while calls are refused,
    then repaired; the run ends once calls are served again."""
    results: list[Result] = []
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) as client:
        async def client_loop(worker: int) -> None:
            n = 0
            while not stop.is_set():
                results.append(await one_call(client, gw.keys["SALES"], f"{worker}-{n}", stream=n % 3 == 0))
                n += 1

        workers = [asyncio.create_task(client_loop(w)) for w in range(CONCURRENCY)]
        try:
            await until(lambda: sum(r.status == 200 for r in results) >= 30, "calls before the fault")
            await asyncio.to_thread(inject)
            started, mark = time.monotonic(), len(results)
            await until(lambda: time.monotonic() - started >= OUTAGE_S
                        and sum(r.status == 503 for r in results[mark:]) >= 10, "calls refused during the fault")
            await asyncio.to_thread(repair)
            mark = len(results)
            await until(lambda: sum(r.status == 200 for r in results[mark:]) >= 30, "calls served after the fault")
        finally:
            stop.set()
            await asyncio.gather(*workers)
    return results


def check_outcome(gw: Gateway, results: list[Result]) -> dict[str, int]:
    """The section 10 assertions; returns the counts for the record."""
    served = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 503]
    assert [r for r in results if r.status not in (200, 503)] == []  # no other status, no broken connection
    assert all(r.code == "storage_unavailable" and r.should_retry == "true" for r in refused)
    assert len(refused) >= 10  # the fault was seen
    assert all(r.complete for r in served)  # no stream broke

    def settled() -> tuple[list[UsageEvent], int]:
        async def read(ledger: Ledger) -> tuple[list[UsageEvent], int]:
            return await ledger.list_events(limit=100_000), await ledger.count_inflight()
        events, inflight = gw.ledger_query(read)
        return events, inflight

    def ready() -> bool:
        return httpx.get(f"{gw.url}/readyz").status_code == 200

    deadline = time.monotonic() + DEADLINE_S
    events, inflight = settled()
    while (len(events) < len(served) or inflight or not ready()) and time.monotonic() < deadline:
        time.sleep(0.2)  # polling interval: spooled rows replay in the background
        events, inflight = settled()
    assert {e.id for e in events} == {r.request_id for r in served}  # every 200 recorded, nothing else
    assert len(events) == len(served) and inflight == 0
    stats = gw.mock_stats()
    assert stats["requests"] == len(served)  # refused calls never reached the upstream
    assert stats["input_tokens"] == sum(e.input_tokens for e in events)
    assert stats["output_tokens"] == sum(e.output_tokens for e in events)
    assert ready()
    return {"calls": len(results), "served": len(served), "refused": len(refused)}


def report(name: str, counts: dict[str, int]) -> None:
    print(f"\n{name}: {counts}")


# -- through the gateway --------------------------------------------------------------------------


@pytest.mark.service
def test_postgres_stopped_immediately_mid_load(postgres_server: PostgresServer, mock_url: str, tmp_path: Path) -> None:
    httpx.post(f"{mock_url}/mock/reset")
    with gateway(tmp_path, mock_url, POLICY, db_url=postgres_server.url, spool_dir=str(tmp_path / "spool")) as gw:
        results = asyncio.run(load_through(gw, postgres_server.stop_immediately, postgres_server.start))
        report("PostgreSQL stopped", check_outcome(gw, results))


class Lock:
    """Another connection holding the SQLite file's write lock in an exclusive transaction."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def take(self) -> None:
        self.db.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


def test_sqlite_locked_mid_load(mock_url: str, tmp_path: Path) -> None:
    # Held a few seconds rather than 30: past the commit deadline (2 s) rows already go to the
    # spool and new calls are refused; a longer lock only keeps it so for longer.
    httpx.post(f"{mock_url}/mock/reset")
    with gateway(tmp_path, mock_url, POLICY) as gw:
        lock = Lock(tmp_path / "ledger.db")
        results = asyncio.run(load_through(gw, lock.take, lock.release))
        report("SQLite locked", check_outcome(gw, results))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs that a test may fill."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        missing_service(f"a tmpfs mount ({made.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class Filler:
    """Takes every free byte of a disk, and gives them back."""

    def __init__(self, disk: Path) -> None:
        self.path = disk / "filler"

    def fill(self) -> None:
        with contextlib.suppress(OSError), self.path.open("wb", buffering=0) as out:
            while True:  # until the disk is full
                out.write(b"\0" * 65536)

    def free(self) -> None:
        self.path.unlink()


def test_disk_full_mid_load(small_disk: Path, mock_url: str) -> None:
    # The spool is beside the database, on the same full disk: rows wait in memory meanwhile.
    httpx.post(f"{mock_url}/mock/reset")
    filler = Filler(small_disk)

    def fill() -> None:
        with contextlib.closing(sqlite3.connect(small_disk / "ledger.db", timeout=30)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the next commits need new space
        filler.fill()

    with gateway(small_disk, mock_url, POLICY) as gw:
        results = asyncio.run(load_through(gw, fill, filler.free))
        report("disk full", check_outcome(gw, results))


def test_every_append_to_a_full_spool_fails_loudly(small_disk: Path) -> None:
    # Appends that arrive together share one write: when it fails, each of them must hear it, or
    # a caller would take rows for spooled that are not.
    spool = Spool(small_disk / "spool")
    spool.append([("event", {"id": "before"})])  # type: ignore[list-item]
    Filler(small_disk).fill()
    failures: list[int] = []

    def appender(t: int) -> None:
        for i in range(10):
            try:
                spool.append([("event", {"id": f"{t}-{i}", "pad": "x" * 5000})])  # type: ignore[list-item]
            except SpoolError:
                failures.append(1)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failures) == 160
    journals = spool.rotate()
    assert [row["id"] for journal in journals for _, row in journal.read()] == ["before"]
    spool.release(journals)
    spool.close()


# -- the ledger itself ----------------------------------------------------------------------------


async def test_a_locked_ledger_spools_refuses_and_catches_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = await Ledger.open(url, spool_dir=tmp_path / "spool")
    try:
        await ledger.record(event(0))
        lock = Lock(tmp_path / "ledger.db")
        lock.take()
        await asyncio.gather(*(ledger.record(event(n)) for n in range(1, 41)))  # returns: never raises
        assert not ledger.available and not await ledger.ready()
        with pytest.raises(StorageError, match="not forwarded and not charged") as refused:
            ledger.check_accepting()
        assert refused.value.message == UNAVAILABLE and refused.value.status == 503
        assert list((tmp_path / "spool").rglob("*.cwspool"))  # the rows wait in the spool
        lock.release()
        await until(lambda: ledger.available, "the ledger to be available again")
        assert await ledger.count_events() == 41
        assert list((tmp_path / "spool").rglob("*.cwspool")) == []
        assert await ledger.ready()
    finally:
        await ledger.close()


@pytest.mark.service
async def test_a_stopped_postgres_ledger_spools_and_catches_up(postgres_server: PostgresServer,
                                                                tmp_path: Path) -> None:
    ledger = await Ledger.open(postgres_server.url, spool_dir=tmp_path / "spool")
    try:
        await ledger.record(event(0))
        await asyncio.to_thread(postgres_server.stop_immediately)
        for n in range(1, 21):
            ledger.begin(call(n))  # write-ahead rows: through the writer thread, nobody waits
        await asyncio.gather(*(ledger.record(event(n)) for n in range(1, 11)))  # never raises
        assert not ledger.available
        with pytest.raises(StorageError):
            ledger.check_accepting()
        await asyncio.to_thread(postgres_server.start)
        await until(lambda: ledger.available, "the ledger to be available again")
        assert await ledger.count_events() == 11
        assert await ledger.count_inflight() == 10  # calls 11-20 are still in flight
        assert list((tmp_path / "spool").rglob("*.cwspool")) == []
    finally:
        await ledger.close()


class EarlyTimers(asyncio.SelectorEventLoop):
    """An event loop whose timers fire before ``time.monotonic`` has moved by their delay, as
    uvloop's often do by a fraction of a millisecond (it rounds a delay to whole milliseconds and
    reads a coarser clock): here by half the delay, so that it always shows."""

    def call_later(self, delay: float, callback: Callable[..., object], *args: object,
                   context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        return super().call_later(delay / 2, callback, *args, context=context)


@pytest.mark.service
def test_the_last_event_of_a_burst_is_committed_by_the_end_of_its_wait(postgres_database: str,
                                                                       tmp_path: Path) -> None:
    """With calls in flight, an event waits a little for theirs (``company.py``); the last of a
    burst, which no other row follows, goes when its wait is over, whatever the clocks say. It
    once stayed until another row came: past its commit deadline it went to the spool, and the
    spool's replay, which first waits for the rows already sent to the writer, waited for it."""

    async def scenario() -> None:
        ledger = await Ledger.open(postgres_database, spool_dir=tmp_path / "spool")
        try:
            for n in range(2 * SIBLINGS):
                ledger.begin(call(n))  # calls in flight: an event waits for company
            await until_async(ledger.count_inflight, 2 * SIBLINGS, "the write-ahead rows")
            await ledger.record(event(0))  # no other row comes after it
            await until_async(ledger.count_events, 1, "the event in the ledger")
            await until(lambda: ledger.available, "the ledger to be available", WAIT_S)
            assert await ledger.count_inflight() == 2 * SIBLINGS - 1
        finally:
            await asyncio.wait_for(ledger.close(), WAIT_S)  # not for ever: it waits for the writer

    with asyncio.Runner(loop_factory=EarlyTimers) as runner:
        runner.run(scenario())


async def until_async(read: Callable[[], Awaitable[int]], wanted: int, what: str) -> None:
    """Poll ``read`` until it gives ``wanted``, for at most ``WAIT_S`` (by ``time.monotonic``)."""
    deadline = time.monotonic() + WAIT_S
    while (got := await read()) != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}: {got}, not {wanted}")
        await asyncio.sleep(0.05)  # polling interval


async def test_new_calls_may_be_accepted_into_the_spool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = await Ledger.open(url, spool_dir=tmp_path / "spool", when_down=WhenDown.SPOOL)
    lock = Lock(tmp_path / "ledger.db")
    try:
        await ledger.record(event(0))
        lock.take()
        await ledger.record(event(1))
        assert not ledger.available
        ledger.check_accepting()  # does not raise: calls are spooled meanwhile
        assert await ledger.ready()
        await ledger.record(event(2))  # straight to the spool, without waiting for the deadline
    finally:
        lock.release()
    try:
        await until(lambda: ledger.available, "the ledger to be available again")
        assert await ledger.count_events() == 3
    finally:
        await ledger.close()


def _writer_processes(db: Path) -> list[int]:
    """Writer processes of the SQLite file ``db`` still running (a killed parent's outlive it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if any(part.endswith(b"writer_process.py") for part in cmdline) and str(db).encode() in cmdline:
                found.append(int(pid))
    return found


async def test_a_spool_left_by_a_killed_process_is_replayed_once_at_the_next_start(tmp_path: Path) -> None:
    db, spool, calls = tmp_path / "ledger.db", tmp_path / "spool", 60
    url = f"sqlite:///{db}"
    lock = Lock(db)
    process = subprocess.Popen([sys.executable, str(SPOOLING_PROCESS), url, str(spool), str(calls)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        assert (await asyncio.to_thread(process.stdout.readline)).strip() == "opened"
        lock.take()
        process.stdin.write("go\n")
        process.stdin.flush()
        line = await asyncio.to_thread(process.stdout.readline)
        assert line.strip() == f"recorded {calls} available=False"
        assert [p.stat().st_size > 0 for p in spool.rglob("*.cwspool")] == [True]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        process.stdout.close()
        lock.release()
    # Its writer process outlives it, commits what it was sent once the lock is gone, and exits:
    # the same rows are then both in the database and in the spool.
    await until(lambda: not _writer_processes(db), "the killed process's writer process to exit")
    ledger = await Ledger.open(url, spool_dir=spool)  # replays the spool first
    try:
        events = await ledger.list_events(limit=1000)
        assert sorted(e.id for e in events) == sorted(f"req_{n}" for n in range(calls))
        assert sum(e.input_tokens for e in events) == sum(10 + n for n in range(calls))  # nothing twice
        assert await ledger.count_inflight() == 0
        assert list(spool.rglob("*.cwspool")) == []
    finally:
        await ledger.close()
