"""How the Redis counter store's operations reach the server: as the functions of one library
(FCALL), loaded once and again when the server lost it; as scripts (EVALSHA) for a client that
may not call functions; and with a library name of its own per version of the Lua, so that
replicas of two versions (a rolling upgrade) do not replace each other's."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from costwarden.core.decision import Hold
from costwarden.core.kinds import Unit
from costwarden.core.periods import Window
from costwarden.counters import Reservation
from costwarden.counters.redis import RedisCounterStore
from costwarden.counters.scripts import Library

pytestmark = pytest.mark.service
DAY = 86_400


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    opened = Redis.from_url(redis_url, decode_responses=True)
    await opened.flushdb()
    await opened.function_flush()
    try:
        yield opened
    finally:
        await opened.aclose()


def month() -> Window:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return Window("org@2026-01-01", 0, 1, start, start + timedelta(days=31))


async def calls(client: Redis) -> dict[str, int]:
    """FCALL and EVALSHA calls since the last look."""
    stats = await client.info("commandstats")
    await client.config_resetstat()
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("fcall", "evalsha")}


async def libraries(client: Redis) -> list[str]:
    """The names of the libraries the server holds, sorted."""
    return sorted(dict(zip(entry[::2], entry[1::2], strict=True))["library_name"]
                  for entry in await client.function_list())


async def a_call(store: RedisCounterStore) -> None:
    """A reservation and its settlement: two operations."""
    held = await store.reserve(uuid.uuid4().hex, [Hold(month(), 5, 100, Unit.USD)], time.time() + DAY)
    assert isinstance(held, Reservation)
    [(before, after)] = await store.settle(held, [3])
    assert after == before + 3


async def test_the_operations_are_the_functions_of_one_library_loaded_again_when_lost(
        redis_url: str, client: Redis) -> None:
    store = RedisCounterStore.from_url(redis_url)
    try:
        await store.replace([], "build-1")
        await a_call(store)  # the library loaded by the first call
        assert await libraries(client) == [Library.current().name]
        await calls(client)
        await a_call(store)
        assert await calls(client) == {"fcall": 2, "evalsha": 0}
        await client.function_flush()  # a server restarted without its functions
        await a_call(store)
        assert await calls(client) == {"fcall": 3, "evalsha": 0}  # one refused, loaded, sent again
        assert await libraries(client) == [Library.current().name]
    finally:
        await store.close()


async def test_a_client_that_may_not_call_functions_runs_the_scripts(redis_url: str, client: Redis) -> None:
    await client.execute_command("ACL", "SETUSER", "cw-no-functions", "on", ">secret", "~*", "&*", "+@all",
                                 "-fcall", "-fcall_ro", "-function")
    store = RedisCounterStore.from_url(redis_url.replace("redis://", "redis://cw-no-functions:secret@", 1))
    try:
        await store.replace([], "build-1")
        await a_call(store)
        await calls(client)
        await a_call(store)
        assert await calls(client) == {"fcall": 0, "evalsha": 2}
        assert await libraries(client) == []
    finally:
        await store.close()


async def test_a_library_of_another_version_is_left_alone(redis_url: str, client: Redis) -> None:
    """Replicas of two versions run side by side during a rolling upgrade: each loads and calls
    its own library, named by its text, and neither replaces the other's."""
    ours = Library.current()
    other = Library(ours.text.split("\n", 1)[1].replace(ours.name, "{library}") + "\n-- another version\n")
    await other.load(client)
    store = RedisCounterStore.from_url(redis_url)
    try:
        await store.replace([], "build-1")
        await a_call(store)
        assert await libraries(client) == sorted([other.name, ours.name])
    finally:
        await store.close()
