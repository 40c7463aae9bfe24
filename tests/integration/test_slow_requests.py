"""Slow and incomplete requests (SPEC §10): heads and bodies that never finish are cut, and however
many connections hold a half-sent head, real calls still get through."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from costwarden.http.timeouts import BACKLOG, ReadLimits, TimedProtocolFactory, raise_fd_limit
from gateway_fixtures import Gateway, start_gateway

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nX-Half-Sent: "
SLOW = 2_000  # half-sent heads per test (the 10,000-connection run is bench/abuse.py)
CHAT = {"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True, scope="module")
def descriptors() -> None:
    # each half-sent head costs two descriptors here: the client's socket and the server's
    if raise_fd_limit() < 3 * SLOW:
        pytest.skip(f"needs an open-file limit of at least {3 * SLOW} (ulimit -n)")


@contextmanager
def gateway(tmp_path: Path, mock_url: str, limits: ReadLimits) -> Iterator[tuple[Gateway, TimedProtocolFactory]]:
    factory = TimedProtocolFactory(limits)
    with contextmanager(start_gateway)(tmp_path, mock_url, server={"http": factory, "backlog": BACKLOG}) as gw:
        yield gw, factory


def address(gw: Gateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


def open_half_sent(gw: Gateway, count: int, head: bytes = HEAD) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(address(gw))
        if head:
            sock.sendall(head)
        sockets.append(sock)
    return sockets


def closed_by_server(sockets: list[socket.socket], want: int, within_s: float) -> dict[int, bytes]:
    """Wait until ``want`` of ``sockets`` are closed by the server; their indexes, with what each
    received before the end."""
    selector = selectors.DefaultSelector()
    received: dict[int, bytes] = {}
    for index, sock in enumerate(sockets):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, index)
    closed: dict[int, bytes] = {}
    deadline = time.monotonic() + within_s
    while len(closed) < want and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock, index = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if data:
                received[index] = received.get(index, b"") + data
                continue
            closed[index] = received.get(index, b"")
            selector.unregister(sock)
    selector.close()
    return closed


def chat(gw: Gateway) -> httpx.Response:
    return httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=30,
                      headers={"Authorization": f"Bearer {gw.keys['SALES']}"})


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def test_half_sent_heads_are_capped_and_real_calls_still_pass(tmp_path: Path, mock_url: str) -> None:
    limits = ReadLimits(header_timeout_s=60, body_timeout_s=60, max_pending=500)
    with gateway(tmp_path, mock_url, limits) as (gw, factory):
        sockets = open_half_sent(gw, SLOW)
        try:
            # beyond the cap, the connections waiting longest are closed, as soon as newer ones come
            closed = closed_by_server(sockets, SLOW - 500, within_s=20)
            assert sorted(closed) == list(range(SLOW - 500))
            assert len(factory.pending) == 500
            reply = chat(gw)
            assert reply.status_code == 200, reply.text
            assert reply.json()["usage"]["completion_tokens"] > 0
            # keep-alive connections and streams go through the timed protocol unchanged
            with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {gw.keys['SALES']}"}) as client:
                for _ in range(3):
                    assert client.post(f"{gw.url}/v1/chat/completions", json=CHAT).status_code == 200
                with client.stream("POST", f"{gw.url}/v1/chat/completions", json={**CHAT, "stream": True}) as stream:
                    assert stream.status_code == 200
                    assert b"".join(stream.iter_bytes()).rstrip().endswith(b"data: [DONE]")
        finally:
            close_all(sockets)


def test_heads_that_never_end_are_cut_at_the_deadline(tmp_path: Path, mock_url: str) -> None:
    limits = ReadLimits(header_timeout_s=1.0, body_timeout_s=60, max_pending=100_000)
    with gateway(tmp_path, mock_url, limits) as (gw, factory):
        silent = open_half_sent(gw, 1, head=b"")  # connects and sends nothing
        sockets = open_half_sent(gw, SLOW) + silent
        trickle = socket.create_connection(address(gw))
        cut_after: list[float] = []

        def drip() -> None:  # one byte every 0.1 s: never idle, never done
            started = time.monotonic()
            trickle.sendall(HEAD)
            while time.monotonic() - started < 15:
                try:
                    trickle.sendall(b"a")
                except OSError:
                    cut_after.append(time.monotonic() - started)
                    return
                time.sleep(0.1)

        dripping = threading.Thread(target=drip)
        dripping.start()
        try:
            closed = closed_by_server(sockets, len(sockets), within_s=20)
            assert len(closed) == SLOW + 1 and set(closed.values()) == {b""}
            dripping.join()
            assert cut_after and cut_after[0] < 15  # a deadline, not an idle timer
            assert factory.pending == {}
            assert chat(gw).status_code == 200
        finally:
            dripping.join()
            close_all([*sockets, trickle])


def test_a_body_that_never_finishes_is_answered_408_and_not_forwarded(tmp_path: Path, mock_url: str) -> None:
    limits = ReadLimits(header_timeout_s=10, body_timeout_s=1.0, max_pending=1000)
    with gateway(tmp_path, mock_url, limits) as (gw, _):
        before = gw.mock_stats()
        body = orjson.dumps(CHAT)
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {gw.keys['SALES']}\r\nContent-Length: {len(body) + 1000}\r\n\r\n").encode()
        stalled = socket.create_connection(address(gw))
        stalled.sendall(head + body)  # 1,000 bytes short, forever
        try:
            [answer] = closed_by_server([stalled], 1, within_s=20).values()
        finally:
            stalled.close()
        status, _, rest = answer.partition(b"\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout"
        error: dict[str, Any] = orjson.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error["code"] == "request_timeout" and "within 1 s" in error["message"]
        # a body sent in pieces within the deadline is fine
        slow_but_complete = socket.create_connection(address(gw))
        try:
            slow_but_complete.sendall(head.replace(str(len(body) + 1000).encode(), str(len(body)).encode()))
            slow_but_complete.sendall(body[:10])
            slow_but_complete.sendall(body[10:])
            slow_but_complete.settimeout(30)
            assert slow_but_complete.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            slow_but_complete.close()
        after = gw.mock_stats()
        assert after["requests"] == before["requests"] + 1  # only the complete call was forwarded
        assert gw.ledger_query(lambda ledger: ledger.count_events()) == 1
