"""The pooled upstream client against real servers on loopback ports."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import pytest
import uvicorn

from costwarden.core.kinds import UpstreamType
from costwarden.core.policy import Upstream
from costwarden.errors import UpstreamError, UpstreamTimeout
from costwarden.mock_upstream import count_input_tokens, create_app
from costwarden.providers import ENDPOINTS, UpstreamPool, Usage
from costwarden.providers.pool import join_url

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
CHAT = ENDPOINTS["/v1/chat/completions"]
MESSAGES = ENDPOINTS["/v1/messages"]


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    # Listening before the server task starts: connections queue until it accepts them.
    sock.listen(256)
    return sock


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on a free loopback port for the duration of the block."""
    sock = listening_socket()
    config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


class EchoApp:
    """Echoes what it received, and can stall until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.clients: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.clients.append(tuple(scope["client"]))
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/stall-head"):
            await self.release.wait()
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        echo = orjson.dumps({"path": scope["path"], "headers": headers, "body": body.decode()})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"x-echo", b"1")]})
        if scope["path"].endswith("/stall-body"):
            await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
            await self.release.wait()
        await send({"type": "http.response.body", "body": echo})


def upstream(name: str, kind: str, base_url: str, timeout_s: str = "30") -> Upstream:
    return Upstream(name=name, type=UpstreamType(kind), base_url=base_url, timeout_s=Decimal(timeout_s))


@asynccontextmanager
async def pool_for(*upstreams: Upstream, keys: dict[str, str] | None = None) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool({u.name: u for u in upstreams}, keys or {u.name: "sk-test" for u in upstreams})
    try:
        yield pool
    finally:
        await pool.aclose()


@pytest.fixture
async def mock_port() -> AsyncIterator[int]:
    async with serving(create_app()) as port:
        yield port


@pytest.fixture
async def echo_app() -> AsyncIterator[tuple[EchoApp, int]]:
    app = EchoApp()
    async with serving(app) as port:
        try:
            yield app, port
        finally:
            app.release.set()


def test_join_url() -> None:
    openai = upstream("o", "openai", "http://h:1/v1/")
    anthropic = upstream("a", "anthropic", "http://h:2")
    assert join_url(openai, "/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert join_url(upstream("g", "openai", "https://h/openai/v1"), "/v1/embeddings") == "https://h/openai/v1/embeddings"
    assert join_url(anthropic, "/v1/messages") == "http://h:2/v1/messages"


async def test_post_chat_to_the_mock(mock_port: int) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello, please."}]}
    prepared = CHAT.prepare(body, model="gpt-4o-mini", output_bound=5, stream=False)
    async with pool_for(upstream("openai", "openai", f"http://127.0.0.1:{mock_port}/v1")) as pool:
        reply = await pool.post("openai", "/v1/chat/completions", prepared.body, {})
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert "content-length" not in reply.headers
    usage = CHAT.usage_from_response(json.loads(reply.body))
    assert usage == Usage(count_input_tokens(body, "/v1/chat/completions"), 0, 5, service_tier="default")
    assert CHAT.estimate_input_tokens(body) >= usage.input_tokens


async def test_stream_chat_through_a_tap(mock_port: int) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    prepared = CHAT.prepare(body, model="gpt-4o-mini", output_bound=None, stream=True)
    tap = CHAT.stream_tap(client_wants_usage=prepared.client_wants_usage, usage_extra=lambda u: {})
    out = b""
    openai = upstream("openai", "openai", f"http://127.0.0.1:{mock_port}/v1")
    async with pool_for(openai) as pool, pool.stream("openai", "/v1/chat/completions", prepared.body, {}) as reply:
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        async for chunk in reply.chunks:
            out += tap.feed(chunk)
            assert b"[DONE]" not in out
    assert tap.completed
    out += tap.finish()
    assert out.endswith(b"data: [DONE]\n\n")
    assert b'"choices":[]' not in out  # the usage chunk the client did not ask for
    assert tap.usage == Usage(count_input_tokens(body, "/v1/chat/completions"), 0, 16, service_tier="default")
    assert tap.produced_output_tokens == 16


async def test_stream_anthropic_messages(mock_port: int) -> None:
    body = {"model": "claude-x", "max_tokens": 8, "stream": True, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello there"}]}
    prepared = MESSAGES.prepare(body, model="claude-x", output_bound=None, stream=True)
    tap = MESSAGES.stream_tap(client_wants_usage=True, usage_extra=lambda u: {"cost": Decimal("0.000001")})
    out = b""
    anthropic = upstream("anthropic", "anthropic", f"http://127.0.0.1:{mock_port}")
    async with pool_for(anthropic) as pool, pool.stream("anthropic", "/v1/messages", prepared.body, {}) as reply:
        assert reply.status == 200
        async for chunk in reply.chunks:
            out += tap.feed(chunk)
    out += tap.finish()
    assert out.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    assert b'"cost":0.000001' in out
    assert tap.usage == Usage(count_input_tokens(body, "/v1/messages"), 0, 8, service_tier="standard")


async def test_an_error_answer_can_be_read_from_a_stream(mock_port: int) -> None:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "#mock status=429"}]}
    openai = upstream("openai", "openai", f"http://127.0.0.1:{mock_port}/v1")
    async with pool_for(openai) as pool, pool.stream("openai", "/v1/chat/completions", orjson.dumps(body),
                                                      {}) as reply:
        assert reply.status == 429
        error = json.loads(b"".join([chunk async for chunk in reply.chunks]))
    assert error["error"]["code"] == "rate_limit_exceeded"


async def test_auth_and_forwarded_headers(echo_app: tuple[EchoApp, int]) -> None:
    _, port = echo_app
    client = {"Authorization": "Bearer cw-client-key", "anthropic-beta": "tools-2024", "X-Other": "no",
              "OpenAI-Beta": "assistants=v2"}
    async with pool_for(upstream("o", "openai", f"http://127.0.0.1:{port}/v1"),
                        upstream("a", "anthropic", f"http://127.0.0.1:{port}"),
                        keys={"o": "sk-openai", "a": "sk-ant"}) as pool:
        openai = json.loads((await pool.post("o", "/v1/chat/completions", b'{"x":1}', client)).body)
        anthropic = json.loads((await pool.post("a", "/v1/messages", b"{}", client)).body)
        pinned = json.loads((await pool.post("a", "/v1/messages", b"{}", {"Anthropic-Version": "2024-01-01"})).body)
    assert openai["path"] == "/v1/chat/completions" and openai["body"] == '{"x":1}'
    assert openai["headers"]["authorization"] == "Bearer sk-openai"
    assert openai["headers"]["openai-beta"] == "assistants=v2"
    assert openai["headers"]["content-type"] == "application/json"
    assert "x-other" not in openai["headers"] and "anthropic-beta" not in openai["headers"]
    assert anthropic["path"] == "/v1/messages"
    assert anthropic["headers"]["x-api-key"] == "sk-ant"
    assert "authorization" not in anthropic["headers"]
    assert anthropic["headers"]["anthropic-version"] == "2023-06-01"
    assert anthropic["headers"]["anthropic-beta"] == "tools-2024"
    assert pinned["headers"]["anthropic-version"] == "2024-01-01"


async def test_connections_are_kept_alive(echo_app: tuple[EchoApp, int]) -> None:
    app, port = echo_app
    async with pool_for(upstream("o", "openai", f"http://127.0.0.1:{port}/v1")) as pool:
        for _ in range(10):
            assert (await pool.post("o", "/v1/embeddings", b"{}", {})).status == 200
        replies = await asyncio.gather(*(pool.post("o", "/v1/embeddings", b"{}", {}) for _ in range(64)))
    assert len(set(app.clients[:10])) == 1
    assert all(reply.status == 200 for reply in replies)
    assert len(set(app.clients)) <= 64


async def test_a_closed_port_is_a_502_after_one_retry() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    base = f"http://127.0.0.1:{port}/v1"
    async with pool_for(upstream("local", "openai", base)) as pool:
        with pytest.raises(UpstreamError) as caught:
            await pool.post("local", "/v1/chat/completions", b"{}", {})
    assert caught.value.status == 502
    assert "local" in caught.value.message and base in caught.value.message
    assert "tried twice" in caught.value.message


async def test_no_retry_once_the_request_was_sent() -> None:
    connections = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with pool_for(upstream("flaky", "openai", f"http://127.0.0.1:{port}/v1")) as pool:
            with pytest.raises(UpstreamError) as caught:
                await pool.post("flaky", "/v1/chat/completions", b"{}", {})
    finally:
        server.close()
        await server.wait_closed()
    assert caught.value.status == 502
    assert not isinstance(caught.value, UpstreamTimeout)
    assert connections == 1


async def test_a_slow_answer_is_a_504(echo_app: tuple[EchoApp, int]) -> None:
    _, port = echo_app
    async with pool_for(upstream("slow", "openai", f"http://127.0.0.1:{port}/v1", timeout_s="0.3")) as pool:
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.post("slow", "/v1/stall-head", b"{}", {})
    assert caught.value.status == 504
    assert "slow" in caught.value.message and "0.3 s" in caught.value.message


async def test_a_kept_alive_connection_times_out_its_next_call(echo_app: tuple[EchoApp, int]) -> None:
    # The read timer of a connection outlives an exchange: the next call on it must still be
    # timed, by its own upstream's timeout even when a longer one's timer is still pending.
    app, port = echo_app
    base = f"http://127.0.0.1:{port}/v1"
    patient, slow = upstream("patient", "openai", base, timeout_s="600"), upstream("slow", "openai", base,
                                                                                 timeout_s="0.3")
    async with pool_for(patient, slow) as pool:
        assert (await pool.post("patient", "/v1/embeddings", b"{}", {})).status == 200  # leaves a 600 s timer
        with pytest.raises(UpstreamTimeout):
            # well within the 600 s a timer left as it was would take
            await asyncio.wait_for(pool.post("slow", "/v1/stall-head", b"{}", {}), 30)
        assert (await pool.post("slow", "/v1/embeddings", b"{}", {})).status == 200
        with pytest.raises(UpstreamTimeout):  # and one of the same timeout, on a connection kept alive
            await asyncio.wait_for(pool.post("slow", "/v1/stall-head", b"{}", {}), 30)
    assert len(set(app.clients[:2])) == 1 and len(set(app.clients[2:])) == 1  # a timed-out call's is closed


async def test_a_stream_that_stalls_is_a_504(echo_app: tuple[EchoApp, int]) -> None:
    _, port = echo_app
    received = b""
    slow = upstream("slow", "openai", f"http://127.0.0.1:{port}/v1", timeout_s="0.3")
    async with pool_for(slow) as pool, pool.stream("slow", "/v1/stall-body", b"{}", {}) as reply:
        assert reply.status == 200
        with pytest.raises(UpstreamTimeout):
            async for chunk in reply.chunks:
                received += chunk
    assert received == b"data: first\n\n"


async def test_an_unknown_upstream_is_named() -> None:
    async with pool_for(upstream("one", "openai", "http://127.0.0.1:9/v1")) as pool:
        with pytest.raises(UpstreamError, match=r"'two'.*known: one"):
            await pool.post("two", "/v1/chat/completions", b"{}", {})


async def test_a_slow_consumer_is_not_an_upstream_timeout(mock_port: int) -> None:
    # ~900 KB of stream: reading pauses at the high-water mark while the consumer dawdles for
    # longer than the read timeout; the silence is the client's own, so the call must go on.
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "#mock output_tokens=5000"}]}
    slow_reader = upstream("openai", "openai", f"http://127.0.0.1:{mock_port}/v1", timeout_s="0.3")
    received = 0
    async with pool_for(slow_reader) as pool, pool.stream("openai", "/v1/chat/completions", orjson.dumps(body),
                                                          {}) as reply:
        async for chunk in reply.chunks:
            if not received:
                await asyncio.sleep(0.8)  # the scenario itself: a consumer slower than the timeout
            received += len(chunk)
    assert received > 5000 * 150
