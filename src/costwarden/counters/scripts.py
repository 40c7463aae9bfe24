"""The Lua of the Redis counter store, loaded from ``lua/``: one library of functions, or scripts.

Each operation's file defines one Lua function of ``(KEYS, ARGV)``, written against the shared
helpers of ``common.lua``. On Redis 7 they are loaded once as a library (``FUNCTION LOAD``) and
called with FCALL: the helpers are made when the library loads, where a script makes each of them
anew at every run. A server without functions (Redis 6.2) runs each operation as a script instead:
``common.lua``, the operation, and a line calling it. The library's name carries a digest of its
text, so replicas of two versions (a rolling upgrade) each call their own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from costwarden.counters.script_calls import FunctionsUnavailable, bulk

NAMES = ("snapshot", "buckets", "reserve", "settle", "expire", "set_flags", "claim", "load", "replace", "restore")


def _text(name: str) -> str:
    return files("costwarden.counters").joinpath("lua").joinpath(f"{name}.lua").read_text("utf-8")


def source(name: str) -> str:
    """The full text of operation ``name`` as a script: the shared helpers, then its body."""
    return f"{_text('common')}\n{_text(name)}\nreturn {name}(KEYS, ARGV)\n"


def _library_body() -> str:
    """The library's text after its first line: the helpers once, then each operation, which
    registers itself under ``{library}_{name}`` (filled in with the library's name)."""
    parts = [_text("common")]
    for name in NAMES:
        parts.append(f"do\n{_text(name)}\nredis.register_function('{{library}}_{name}', {name})\nend\n")
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class Script:
    """One counter operation: the name of its function in the library and its text as a script,
    and the head of its command either way, packed (``script_calls.bulk`` strings): ``FCALL``
    and the function's name, ``EVALSHA`` and the script's digest."""

    function: str
    text: str
    function_head: str
    script_head: str

    @classmethod
    def of(cls, function: str, text: str) -> Script:
        sha = hashlib.sha1(text.encode()).hexdigest()
        return cls(function, text, f"$5\r\nFCALL\r\n{bulk(function)}", f"$7\r\nEVALSHA\r\n{bulk(sha)}")

    async def load(self, client: Redis) -> None:
        """Load it as a script (SCRIPT LOAD)."""
        await client.script_load(self.text)


class Library:
    """A library of counter operations: its text and name (from a digest of ``body``, the text
    after its first line), loaded when the server lacks it."""

    def __init__(self, body: str) -> None:
        self.name = "costwarden_" + hashlib.sha1(body.encode()).hexdigest()[:16]
        self.text = f"#!lua name={self.name}\n" + body.replace("{library}", self.name)

    @classmethod
    def current(cls) -> Library:
        """The library of this version's operations."""
        return cls(_library_body())

    async def load(self, client: Redis) -> None:
        """Load the library unless the server has it (another replica may have just loaded it)."""
        try:
            await client.function_load(self.text)
        except NoPermissionError as exc:  # a user allowed to call functions, not to load them
            raise FunctionsUnavailable(str(exc)) from exc
        except ResponseError as exc:
            if "already exists" not in str(exc):
                raise


@dataclass(frozen=True, slots=True)
class Scripts:
    """One ``Script`` per counter operation, and their library."""

    library: Library
    snapshot: Script
    buckets: Script
    reserve: Script
    settle: Script
    expire: Script
    set_flags: Script
    claim: Script
    load: Script
    replace: Script
    restore: Script

    @classmethod
    def make(cls) -> Scripts:
        library = Library.current()
        return cls(library, **{name: Script.of(f"{library.name}_{name}", source(name)) for name in NAMES})
