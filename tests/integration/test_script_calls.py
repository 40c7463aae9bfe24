"""The counter scripts' transport (``script_calls.py``) against a real Redis: a script the server
forgot is loaded again, a connection killed under it is replaced and the call tried again, an
error answer is raised and leaves the connection usable, and a cancelled call drops its
connection instead of leaving its answer for the next call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from answer_gate import AnswerGate
from costwarden.counters.script_calls import ScriptCalls

pytestmark = pytest.mark.service
ECHO = "return {KEYS[1], ARGV[1]}"
FAIL = "return redis.error_reply('COSTWARDEN_TEST refused')"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    opened = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def calls(client: Redis) -> AsyncIterator[ScriptCalls]:
    """The transport keeping one idle connection, so that the next call reuses the last one's."""
    transport = ScriptCalls(client, kept=1)
    try:
        yield transport
    finally:
        await transport.close()


async def test_a_forgotten_script_is_loaded_again(client: Redis, calls: ScriptCalls) -> None:
    echo = client.register_script(ECHO)
    assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
    await client.script_flush()
    assert await calls.run(echo, ["k"], ["b"]) == ["k", "b"]


async def test_a_killed_connection_is_replaced(client: Redis, calls: ScriptCalls) -> None:
    echo = client.register_script(ECHO)
    assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
    killed = await client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the kept connection, at least
    assert await calls.run(echo, ["k"], ["b"]) == ["k", "b"]


async def test_an_error_answer_is_raised_and_the_connection_still_serves(client: Redis, calls: ScriptCalls) -> None:
    with pytest.raises(ResponseError, match="COSTWARDEN_TEST"):
        await calls.run(client.register_script(FAIL), ["k"], [])
    assert await calls.run(client.register_script(ECHO), ["k"], ["a"]) == ["k", "a"]


async def test_a_cancelled_call_does_not_hand_its_answer_to_the_next(redis_url: str) -> None:
    gate = await AnswerGate(int(redis_url.rsplit(":", 1)[1].split("/")[0])).start()
    client = Redis.from_url(f"redis://127.0.0.1:{gate.port}/0", decode_responses=True)
    calls = ScriptCalls(client, kept=1)
    try:
        echo = client.register_script(ECHO)
        assert await calls.run(echo, ["k"], ["loaded"]) == ["k", "loaded"]  # the next call is one EVALSHA
        gate.hold_next()
        task = asyncio.create_task(calls.run(echo, ["k"], ["first"]))
        await gate.held.wait()  # answered by the server, not yet read: cancelled mid-command
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.release()
        assert await calls.run(echo, ["k"], ["second"]) == ["k", "second"]
    finally:
        await calls.close()
        await client.aclose()
        await gate.close()
