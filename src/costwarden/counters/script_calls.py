"""The counter scripts' calls to Redis, straight on connections this store keeps.

redis-py's client runs each command through a pool checkout (a condition, a timeout and a check
that the connection has nothing unread), a retry wrapper and observability hooks; per call of the
gateway (one reserve, one settle) that cost more of the event loop than sending the script and
parsing its answer. Here a call takes a connection this store already holds (one from the
client's pool when none is free, so the pool's limit still bounds them), sends EVALSHA and reads
the answer, then keeps the connection for the next call; beyond ``KEPT`` idle ones it goes back
to the pool. A script the server does not know (restarted, flushed) is loaded and sent again. A
connection that fails is dropped and the call is tried again, ``RETRIES`` times after a short
pause, as the client's retry does: the scripts are safe to run again. A server that does not answer
in time is not asked again. A call cancelled mid-command
drops its connection, whose next answer would belong to nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

KEPT = 16  # idle connections kept beside the pool's
PAUSES_S = (0.02, 0.04)  # before each retry of a call whose connection failed
RETRIES = len(PAUSES_S)


class ScriptCalls:
    """EVALSHA on kept connections of ``client``'s pool."""

    def __init__(self, client: Redis, kept: int = KEPT) -> None:
        self._client = client
        self._pool = client.connection_pool
        self._free: list[AbstractConnection] = []
        self._kept = kept

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str]) -> Any:
        """Run ``script`` on ``keys`` and ``args``; raises the client's RedisError subclasses."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        attempt = 0
        while True:
            conn = self._free.pop() if self._free else await self._pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.send_command(*command)
                response = await conn.read_response()
            except NoScriptError:
                await self._keep(conn)
                await self._client.script_load(script.script)
                continue
            except ResponseError:
                await self._keep(conn)  # the server answered with an error: the connection is fine
                raise
            except RedisTimeoutError:
                await self._drop(conn)  # no answer in time: a retry would only wait as long again
                raise
            except (RedisConnectionError, OSError):
                await self._drop(conn)
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(PAUSES_S[attempt])  # a back-off before trying again
                attempt += 1
                continue
            except BaseException:
                await self._drop(conn)  # cancelled mid-command, say: its answer would belong to nobody
                raise
            await self._keep(conn)
            return response

    async def _keep(self, conn: AbstractConnection) -> None:
        if len(self._free) < self._kept:
            self._free.append(conn)
        else:
            await self._pool.release(conn)

    async def _drop(self, conn: AbstractConnection) -> None:
        await conn.disconnect(nowait=True)
        await self._pool.release(conn)

    async def close(self) -> None:
        """Give every kept connection back to the pool."""
        free, self._free = self._free, []
        for conn in free:
            await self._pool.release(conn)

