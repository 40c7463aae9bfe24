"""Response ids and timestamps: unique per process, cheap to mint."""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stamp:
    """Identity of one answer: its id (with the provider's prefix), a secondary id, and time."""

    id: str
    item_id: str
    request_id: str
    created: int


class IdMint:
    """Mints ids from a random per-app base and a counter (cheaper than a uuid per request)."""

    def __init__(self) -> None:
        self._base = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def stamp(self, prefix: str, item_prefix: str = "msg_") -> Stamp:
        """A fresh Stamp; ``prefix`` is ``chatcmpl-``, ``resp_``, ``msg_01`` and so on."""
        suffix = f"{self._base}{next(self._counter):010x}"
        return Stamp(
            id=prefix + suffix,
            item_id=item_prefix + suffix,
            request_id="req_" + suffix,
            created=int(time.time()),
        )
