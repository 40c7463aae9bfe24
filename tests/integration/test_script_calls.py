"""The counter scripts' transport (``script_calls.py``) against a real Redis: a script the server
forgot is loaded again, a connection killed under it is replaced and the call tried again, an
error answer is raised and leaves the connection usable, and a cancelled call drops its
connection instead of leaving its answer for the next call."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from costwarden.counters.script_calls import ScriptCalls

pytestmark = pytest.mark.service
ECHO = "return {KEYS[1], ARGV[1]}"
FAIL = "return redis.error_reply('COSTWARDEN_TEST refused')"
SLOW = "local t = redis.call('TIME'); while true do local n = redis.call('TIME'); " \
       "if (n[1] - t[1]) * 1000000 + n[2] - t[2] > 200000 then break end end; return 'slow'"


async def test_a_forgotten_script_is_loaded_again(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    calls = ScriptCalls(client)
    try:
        echo = client.register_script(ECHO)
        assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
        await client.script_flush()
        assert await calls.run(echo, ["k"], ["b"]) == ["k", "b"]
    finally:
        await calls.close()
        await client.aclose()


async def test_a_killed_connection_is_replaced(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    calls = ScriptCalls(client)
    try:
        echo = client.register_script(ECHO)
        assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
        killed = await client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1  # the kept connection, at least
        assert await calls.run(echo, ["k"], ["b"]) == ["k", "b"]
    finally:
        await calls.close()
        await client.aclose()


async def test_an_error_answer_is_raised_and_the_connection_still_serves(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    calls = ScriptCalls(client)
    try:
        with pytest.raises(ResponseError, match="COSTWARDEN_TEST"):
            await calls.run(client.register_script(FAIL), ["k"], [])
        assert await calls.run(client.register_script(ECHO), ["k"], ["a"]) == ["k", "a"]
    finally:
        await calls.close()
        await client.aclose()


async def test_a_cancelled_call_does_not_hand_its_answer_to_the_next(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    calls = ScriptCalls(client, kept=1)
    try:
        slow, echo = client.register_script(SLOW), client.register_script(ECHO)
        await calls.run(slow, ["k"], [])  # loaded, so the next call is one EVALSHA
        task = asyncio.create_task(calls.run(slow, ["k"], []))
        await asyncio.sleep(0.05)  # not a synchronization: the call is sent at once and runs 200 ms
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
    finally:
        await calls.close()
        await client.aclose()
