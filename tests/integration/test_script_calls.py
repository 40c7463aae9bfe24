"""The counter scripts' transport (``script_calls.py``) against a real Redis: a script the server
forgot is loaded again, a connection killed under it is replaced and the call tried again, an
error answer is raised and leaves the connection usable, concurrent calls share one connection
and each gets its own answer, a cancelled call's answer is never handed to the next call, a
server that stops answering fails every waiting call with a timeout, and a new connection takes
the URL's user, password and database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from answer_gate import AnswerGate
from costwarden.counters.script_calls import ScriptCalls

pytestmark = pytest.mark.service
ECHO = "return {KEYS[1], ARGV[1]}"
FAIL = "return redis.error_reply('COSTWARDEN_TEST refused')"
SET = "return redis.call('SET', KEYS[1], ARGV[1])"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    opened = Redis.from_url(redis_url, decode_responses=True)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def calls(client: Redis) -> AsyncIterator[ScriptCalls]:
    transport = ScriptCalls(client)
    try:
        yield transport
    finally:
        await transport.close()


@pytest.fixture
async def gated(redis_url: str) -> AsyncIterator[tuple[AnswerGate, Redis, ScriptCalls]]:
    """A transport whose connection passes through a relay that can hold answers back; its
    client's socket timeout is half a second."""
    gate = await AnswerGate(int(redis_url.rsplit(":", 1)[1].split("/")[0])).start()
    client = Redis.from_url(f"redis://127.0.0.1:{gate.port}/0", decode_responses=True, socket_timeout=0.5)
    calls = ScriptCalls(client)
    try:
        yield gate, client, calls
    finally:
        await calls.close()
        await client.aclose()
        await gate.close()


async def test_a_forgotten_script_is_loaded_again(client: Redis, calls: ScriptCalls) -> None:
    echo = client.register_script(ECHO)
    assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
    await client.script_flush()
    assert await calls.run(echo, ["k"], ["b"]) == ["k", "b"]


async def test_a_killed_connection_is_replaced(client: Redis, calls: ScriptCalls) -> None:
    echo = client.register_script(ECHO)
    assert await calls.run(echo, ["k"], ["a"]) == ["k", "a"]
    killed = await client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the transport's connection, at least
    assert await calls.run(echo, ["k"], ["b"]) == ["k", "b"]


async def test_an_error_answer_is_raised_and_the_connection_still_serves(client: Redis, calls: ScriptCalls) -> None:
    with pytest.raises(ResponseError, match="COSTWARDEN_TEST"):
        await calls.run(client.register_script(FAIL), ["k"], [])
    assert await calls.run(client.register_script(ECHO), ["k"], ["a"]) == ["k", "a"]


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_answer(
        client: Redis, calls: ScriptCalls) -> None:
    echo = client.register_script(ECHO)
    await calls.run(echo, ["k"], ["loaded"])
    before = await client.client_list()
    answers = await asyncio.gather(*(calls.run(echo, [f"k{i}"], [str(i)]) for i in range(300)))
    assert answers == [[f"k{i}", str(i)] for i in range(300)]
    assert len(await client.client_list()) == len(before)  # no connection opened for them


async def test_a_cancelled_call_does_not_hand_its_answer_to_the_next(
        gated: tuple[AnswerGate, Redis, ScriptCalls]) -> None:
    gate, client, calls = gated
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


async def test_a_server_that_stops_answering_fails_every_waiting_call_with_a_timeout(
        gated: tuple[AnswerGate, Redis, ScriptCalls]) -> None:
    gate, client, calls = gated
    echo = client.register_script(ECHO)
    await calls.run(echo, ["k"], ["loaded"])
    gate.hold_next()
    started = time.monotonic()
    outcomes = await asyncio.gather(*(calls.run(echo, ["k"], [str(i)]) for i in range(5)), return_exceptions=True)
    assert all(isinstance(outcome, RedisTimeoutError) for outcome in outcomes), outcomes
    assert time.monotonic() - started < 5  # the client's 0.5 s, not a wait per call or a retry
    gate.release()
    assert await calls.run(echo, ["k"], ["after"]) == ["k", "after"]  # on a new connection


async def test_a_new_connection_takes_the_urls_user_password_and_database(redis_url: str, client: Redis) -> None:
    user, password = f"cw-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    base = redis_url.split("//", 1)[1].rsplit("/", 1)[0]
    try:
        scoped = Redis.from_url(f"redis://{user}:{password}@{base}/3", decode_responses=True)
        calls = ScriptCalls(scoped)
        try:
            key = f"cw-test-{uuid.uuid4().hex}"
            assert await calls.run(scoped.register_script(SET), [key], ["v"]) == "OK"
            assert any(c["user"] == user and c["db"] == "3" for c in await client.client_list())
            on_three = Redis.from_url(f"redis://{base}/3", decode_responses=True)
            try:
                assert await on_three.get(key) == "v"
                await on_three.delete(key)
            finally:
                await on_three.aclose()
        finally:
            await calls.close()
            await scoped.aclose()
        refused = Redis.from_url(f"redis://{user}:wrong@{base}/0", decode_responses=True)
        wrong = ScriptCalls(refused)
        try:
            with pytest.raises(RedisConnectionError, match="refused the connection"):
                await wrong.run(refused.register_script(ECHO), ["k"], ["a"])
        finally:
            await wrong.close()
            await refused.aclose()
    finally:
        await client.execute_command("ACL", "DELUSER", user)
