"""Call ids: unique, and in the order they were made across milliseconds (the ledger's indexes)."""

from __future__ import annotations

import random
import re
import time

from costwarden.app.service import new_call_id


def test_a_call_id_begins_with_the_milliseconds_it_was_made_in() -> None:
    bits = random.Random(7)
    before = time.time_ns() // 1_000_000
    first = new_call_id(bits)
    later = first
    while later[4:16] == first[4:16]:  # until the clock's millisecond moves on
        later = new_call_id(bits)
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"req_[0-9a-f]{32}", first)
    assert before <= int(first[4:16], 16) < int(later[4:16], 16) <= after
    assert first < later


def test_call_ids_made_in_the_same_millisecond_differ() -> None:
    bits = random.Random(7)
    ids = [new_call_id(bits) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
