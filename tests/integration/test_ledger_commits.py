"""One durable write per call on PostgreSQL: concurrent calls share their commits (group commit),
and the write-ahead rows of calls in flight ride in those commits. Counted by PostgreSQL itself
(``pg_stat_database.xact_commit``), not by the gateway: a count, not a timing."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import orjson
import psycopg
import pytest
from spooling_process import call, event
from sqlalchemy.dialects import postgresql

from costwarden.ledger import Ledger
from costwarden.ledger.queue_items import RowKind, Waiter, Write
from costwarden.ledger.rows import event_row, inflight_row
from costwarden.ledger.writer_process_client import WriterProcessClient, postgres_program
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, policy_text
from gateway_process import GatewayProcess
from service_fixtures import free_port

pytestmark = pytest.mark.service
POLICY = UPSTREAMS + "departments:\n" + PLAIN_DEPARTMENTS
CONCURRENCY = 32
ROUNDS = 20
SETTLE_S = 30.0
WAIT_S = 10.0


class CommitCounter:
    """``xact_commit`` of one database, read on a connection held in one open transaction, so
    that reading it commits nothing itself."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url)  # not autocommit: every read below is in one transaction

    def close(self) -> None:
        self._conn.close()

    def _value(self, sql: str) -> int:
        self._conn.execute("SELECT pg_stat_clear_snapshot()")  # read afresh, not the transaction's copy
        row = self._conn.execute(sql).fetchone()
        assert row is not None
        return int(row[0])

    def settled(self) -> int:
        """The count once no other connection to the database is left: a backend reports its
        counts when it exits (while busy, only about once a second, or ten seconds after it idles)."""
        deadline = time.monotonic() + SETTLE_S
        while self._value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                          "AND pid <> pg_backend_pid()"):
            assert time.monotonic() < deadline, "connections to the ledger database stayed open"
            time.sleep(0.05)  # polling interval, not synchronization
        return self._value("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")


async def _call(port: int, request: bytes) -> int:
    """One call on a connection of its own, with the least client work (a loaded test process
    would otherwise spread the calls it means to send at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await reader.readexactly(length)
        return int(head.split(b" ", 2)[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def _calls(port: int, key: str) -> list[int]:
    """ROUNDS rounds of CONCURRENCY calls sent at once, each held upstream for 300 ms so that they
    are all in flight together, as calls to a model are."""
    statuses: list[int] = []
    for round_ in range(ROUNDS):
        requests = []
        for i in range(CONCURRENCY):
            body = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [
                {"role": "user", "content": f"{round_}.{i} #mock output_tokens=20 delay_ms=300"}]})
            requests.append(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        statuses += await asyncio.gather(*(_call(port, request) for request in requests))
    return statuses


async def _key_and_count(db_url: str, key: bool) -> tuple[str, int]:
    ledger = await Ledger.open(db_url)
    try:
        secret = (await ledger.create_key("SALES"))[1] if key else ""
        return secret, await ledger.count_events()
    finally:
        await ledger.close()


def test_concurrent_calls_share_their_commits(tmp_path: Path, mock_url: str, postgres_database: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(mock_url, POLICY))
    key, _ = asyncio.run(_key_and_count(postgres_database, key=True))
    port = free_port()
    gateway = GatewayProcess(policy, postgres_database, port, tmp_path / "gateway.log")
    counter = CommitCounter(postgres_database)
    try:
        before = counter.settled()  # the gateway's start-up and stop count against it
        gateway.start()
        try:
            statuses = asyncio.run(_calls(port, key))
        finally:
            gateway.stop()
        commits = counter.settled() - before  # the gateway closed its connections: everything reported
    finally:
        counter.close()
    calls = CONCURRENCY * ROUNDS
    assert statuses == [200] * calls
    assert asyncio.run(_key_and_count(postgres_database, key=False))[1] == calls
    assert commits / calls < 0.5, f"{commits} commits for {calls} calls at concurrency {CONCURRENCY}"


async def test_a_lone_calls_event_goes_to_the_writer_at_once(postgres_database: str) -> None:
    """With no other call in flight, no event could join a call's batch: its event is sent as it
    is queued, not once the loop has run its other callbacks (the call's settlement, say), which
    would only delay the commit the client waits for. Here the loop runs nothing else after the
    event is queued, and the event must reach the ledger meanwhile."""
    ledger = await Ledger.open(postgres_database)
    try:
        ledger.begin(call(0))
        deadline = time.monotonic() + WAIT_S
        while await ledger.count_inflight() != 1:
            assert time.monotonic() < deadline, "the write-ahead row never reached the ledger"
            await asyncio.sleep(0.02)  # polling interval
        durable = ledger.queue(event(0))
        with psycopg.connect(postgres_database, autocommit=True) as conn:  # the loop is held from here
            deadline = time.monotonic() + WAIT_S
            while not _count(conn, "SELECT count(*) FROM usage_events"):
                assert time.monotonic() < deadline, "the event waited for the event loop's other callbacks"
                time.sleep(0.01)  # polling interval
        await durable
        assert await ledger.count_inflight() == 0
    finally:
        await ledger.close()


def _count(conn: psycopg.Connection[tuple[int]], sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


async def test_write_ahead_rows_alone_go_with_the_batch_after_the_one_being_committed(
        postgres_database: str) -> None:
    """Write-ahead rows queued alone while a batch is being committed wait for its answer and go
    with the next batch (one statement with the events queued meanwhile) rather than as a
    transaction of their own beside it; they still reach the ledger."""
    await (await Ledger.open(postgres_database)).close()  # the schema
    program = postgres_program(postgres_database, postgresql.dialect())
    batches: list[list[RowKind]] = []

    def encode(number: int, batch: list[Write]) -> bytes:
        batches.append([write.kind for write in batch])
        return program.encode(number, batch)

    def unexpected(*_: object) -> None:
        raise AssertionError("a row left the writer process")

    client = WriterProcessClient(dataclasses.replace(program, encode=encode), asyncio.get_running_loop(),
                                 unexpected, unexpected)
    client.start()
    try:
        await asyncio.wait_for(client.drain(), WAIT_S)  # the process has started
        ended = Write(RowKind.EVENT, event_row(event(0)), Waiter())
        client.put(Write(RowKind.INFLIGHT, inflight_row(call(0))))
        client.put(ended)  # a lone call's event: sent at once, with its write-ahead row
        client.put(Write(RowKind.INFLIGHT, inflight_row(call(1))))
        await asyncio.sleep(0)  # the loop's next turn, before it reads any answer
        assert batches == [[RowKind.INFLIGHT, RowKind.EVENT]]
        assert ended.waiter is not None
        await asyncio.wait_for(ended.waiter.future, WAIT_S)
        await asyncio.wait_for(client.drain(), WAIT_S)
    finally:
        await client.close()
    assert batches == [[RowKind.INFLIGHT, RowKind.EVENT], [RowKind.INFLIGHT]]
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        assert _count(conn, "SELECT count(*) FROM inflight") == 1
        assert _count(conn, "SELECT count(*) FROM usage_events") == 1
