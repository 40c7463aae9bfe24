"""Running one piece of work on a ledger opened for it, from synchronous test code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from costwarden.ledger import Ledger

T = TypeVar("T")


def on_ledger(work: Callable[[Ledger], Awaitable[T]], db: str) -> T:
    """``work`` on the ledger at ``db``, opened for it and closed after."""
    async def main() -> T:
        ledger = await Ledger.open(db)
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    return asyncio.run(main())
