"""Large bodies both ways through the pooled upstream client, against the mock in its own process.

Answers of 1, 10 and 50 MiB, whole and streamed, a 15 MiB request, an embeddings answer of about
1 MB, then 100 ordinary calls on the same (single) pooled connection. Memory: each case runs in a
fresh process (body_probe.py) that reports its peak RSS growth over the call.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from body_probe import MIB, call, chat, request_for

from costwarden.core.kinds import UpstreamType
from costwarden.core.policy import Upstream
from costwarden.providers import UpstreamPool

PROBE = Path(__file__).with_name("body_probe.py")
FAILURE_DEADLINE_S = 120  # only turns a hang into a failure; no timing is asserted


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def mock_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "costwarden.mock_upstream", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the mock upstream exited during start-up"
            try:
                if httpx.get(url + "/mock/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the mock upstream did not start"
            time.sleep(0.02)  # polling interval; readiness is the 200 above
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
async def one_connection(mock_url: str) -> AsyncIterator[UpstreamPool]:
    """A pool of a single connection: every call reuses whatever the previous one left."""
    upstream = Upstream(name="mock", type=UpstreamType.OPENAI, base_url=mock_url + "/v1", timeout_s=Decimal(60))
    pool = UpstreamPool({"mock": upstream}, {"mock": "sk-test"}, pool_size=1)
    try:
        yield pool
    finally:
        await pool.aclose()


async def test_large_answers_and_requests_then_pooled_calls(one_connection: UpstreamPool, mock_url: str) -> None:
    pool = one_connection
    httpx.post(mock_url + "/mock/reset")

    async def scenario() -> None:
        for mib in (1, 10, 50):
            reply = await pool.post("mock", "/v1/chat/completions", request_for("unary", mib), {})
            answer = orjson.loads(reply.body)
            assert reply.status == 200
            assert len(answer["choices"][0]["message"]["content"]) == mib * MIB
            assert answer["usage"]["completion_tokens"] == mib * MIB // 4
            assert await call(pool, request_for("stream", mib), stream=True) >= mib * MIB
        # the example: 100 embeddings of 1,536 dimensions, about 3 MB of JSON
        embeddings = orjson.dumps({"model": "text-embedding-3-small", "input": ["hello world"] * 100})
        reply = await pool.post("mock", "/v1/embeddings", embeddings, {})
        assert len(reply.body) > MIB
        assert len(orjson.loads(reply.body)["data"]) == 100
        # an answer of ~300 KB, just above the buffer's high-water mark, then a call on its connection
        reply = await pool.post("mock", "/v1/chat/completions", chat("x", tokens=75_000, stream=False), {})
        assert len(reply.body) > 300_000
        reply = await pool.post("mock", "/v1/chat/completions", request_for("request", 15), {})
        assert json.loads(reply.body)["usage"]["prompt_tokens"] > 15 * MIB // 4
        for index in range(100):
            reply = await pool.post("mock", "/v1/chat/completions", chat(f"call {index}", tokens=3, stream=False),
                                    {})
            assert orjson.loads(reply.body)["choices"][0]["message"]["content"] == "tok " * 3

    await asyncio.wait_for(scenario(), FAILURE_DEADLINE_S)
    served = httpx.get(mock_url + "/mock/stats").json()
    assert served["requests"] == 3 * 2 + 1 + 1 + 1 + 100
    assert served["errors"] == 0


@pytest.mark.parametrize(("mode", "mib"), [("stream", 1), ("stream", 10), ("stream", 50),
                                           ("unary", 1), ("unary", 10), ("unary", 50), ("request", 15)])
def test_memory_is_proportional_to_one_body(mock_url: str, mode: str, mib: int,
                                            record_property: Callable[[str, object], None]) -> None:
    done = subprocess.run([sys.executable, str(PROBE), mock_url, mode, str(mib)], capture_output=True, text=True,
                          timeout=FAILURE_DEADLINE_S, check=False)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    record_property("peak_rss_growth_kb", figures["growth_kb"])
    print(f"{mode} {mib} MiB: {figures['bytes']} bytes, peak RSS growth {figures['growth_kb']} KiB")
    assert figures["bytes"] >= mib * MIB
    if mode == "stream":
        # consumed as it arrives: the buffer is bounded whatever the size of the stream
        assert figures["growth_kb"] < 16 * 1024
    else:
        # the body, one copy of it while joining, and slack for the allocator
        assert figures["growth_kb"] < 3 * figures["body_kb"] + 16 * 1024
