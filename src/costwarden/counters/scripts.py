"""The Lua scripts of the Redis counter store, loaded from ``lua/`` and registered on a client.

Each script is ``common.lua`` (shared helpers) followed by its own body, so one EVALSHA runs one
whole operation atomically. redis-py loads a script again when the server has lost it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = ("snapshot", "buckets", "reserve", "settle", "expire", "set_flags", "claim", "load", "replace", "restore")


def source(name: str) -> str:
    """The full text of script ``name``: the shared helpers, then its body."""
    folder = files("costwarden.counters").joinpath("lua")
    return folder.joinpath("common.lua").read_text("utf-8") + "\n" + folder.joinpath(f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Scripts:
    """One registered script per counter operation."""

    snapshot: AsyncScript
    buckets: AsyncScript
    reserve: AsyncScript
    settle: AsyncScript
    expire: AsyncScript
    set_flags: AsyncScript
    claim: AsyncScript
    load: AsyncScript
    replace: AsyncScript
    restore: AsyncScript

    @classmethod
    def register(cls, client: Redis) -> Scripts:
        return cls(**{name: client.register_script(source(name)) for name in NAMES})
