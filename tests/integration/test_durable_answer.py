"""SPEC §3 invariant 3 and §10: an event is durable before the client sees the end of its
response. The gateway renders a response while its event's commit is in flight; here that commit
is held (a lock on the events table) and the client must not have the end of its answer until
the lock is released. A real gateway (``costwarden serve``), its writer process and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import psycopg
import pytest

from costwarden.ledger import Ledger
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, policy_text
from gateway_process import GatewayProcess
from service_fixtures import free_port

pytestmark = pytest.mark.service
POLICY = UPSTREAMS + "departments:\n" + PLAIN_DEPARTMENTS
WAIT_S = 10.0
# How long the client is watched while the commit is held: well inside the ledger's commit
# deadline (2 s), after which a held event would go to the spool and be answered from there.
HELD_S = 0.4


def _request(key: str) -> bytes:
    body = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def _ended(received: bytes) -> bool:
    """Whether ``received`` holds a whole answer: its head and as many body bytes as it declares."""
    head, found, body = received.partition(b"\r\n\r\n")
    if not found:
        return False
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return bool(lengths) and len(body) >= lengths[0]


async def _received_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Whatever the gateway sends within ``seconds`` (a bounded watch for what must not come)."""
    received = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            break
        if not chunk:
            break
        received += chunk
    return received


def _waiting_on_locks(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'").fetchone()
    assert row is not None
    return int(row[0])


async def _key(db_url: str) -> str:
    ledger = await Ledger.open(db_url)
    try:
        return (await ledger.create_key("SALES"))[1]
    finally:
        await ledger.close()


async def test_the_client_sees_no_end_of_its_answer_before_the_event_is_committed(
        tmp_path: Path, mock_url: str, postgres_database: str) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(mock_url, POLICY))
    key = await _key(postgres_database)
    port = free_port()
    gateway = GatewayProcess(policy, postgres_database, port, tmp_path / "gateway.log")
    gateway.start()
    try:
        with psycopg.connect(postgres_database) as lock, psycopg.connect(postgres_database, autocommit=True) as watch:
            lock.execute("LOCK TABLE usage_events IN EXCLUSIVE MODE")  # held until the rollback below
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_request(key))
            deadline = time.monotonic() + WAIT_S
            while not _waiting_on_locks(watch):  # the call's event is being committed, and is held
                assert time.monotonic() < deadline, "the call's event never reached the database"
                await asyncio.sleep(0.01)  # polling interval
            early = await _received_within(reader, HELD_S)
            assert not _ended(early), "the client had its whole answer before the event was committed"
            lock.rollback()
            received = early
            deadline = time.monotonic() + WAIT_S
            while not _ended(received):
                assert time.monotonic() < deadline, "no answer once the event could be committed"
                chunk = await asyncio.wait_for(reader.read(65536), WAIT_S)
                assert chunk, "the gateway closed the connection without an answer"
                received += chunk
            writer.close()
            await writer.wait_closed()
            row = watch.execute("SELECT count(*) FROM usage_events").fetchone()
        assert received.startswith(b"HTTP/1.1 200 ")
        assert row == (1,)
    finally:
        gateway.stop()
