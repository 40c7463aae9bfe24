"""When a sliding rate window has room again, from the ages of its buckets.

A rate window counts the buckets ``current - span + 1 .. current``: bucket ``b`` (of ``width``
seconds) is counted until the instant ``(b + span) * width`` and forgotten from then on. So the
window changes only at whole bucket edges, and the instant it has room for a call is the edge at
which enough of its oldest buckets have left. These functions take a window's non-empty buckets,
oldest first, as ``(bucket, amount)``, and answer in epoch seconds, exactly (integers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NOW = 0  # the answer of ``room_at`` when the window has room already


def leaves_at(bucket: int, span: int, width: int) -> int:
    """The instant (epoch seconds) bucket ``bucket`` stops being counted."""
    return (bucket + span) * width


def room_at(buckets: Sequence[tuple[int, int]], limit: int, need: int, span: int, width: int) -> int | None:
    """The first instant the window holds ``need`` more without passing ``limit``, if nothing is
    added meanwhile: ``NOW`` when it does already, None when ``need`` alone passes ``limit``.

    In-flight reservations count at their held amounts (they settle at most at those), so the
    answer is never earlier than the truth.
    """
    if need > limit:
        return None
    excess = sum(amount for _, amount in buckets) + need - limit
    if excess <= 0:
        return NOW
    for bucket, amount in buckets:
        excess -= amount
        if excess <= 0:
            return leaves_at(bucket, span, width)
    raise AssertionError("unreachable: need <= limit, so the whole window leaving makes room")


def restored_at(buckets: Sequence[tuple[int, int]], current: int, span: int, width: int) -> int:
    """The instant the window is empty again (its newest bucket leaves); when it is empty
    already, the start of its ``current`` bucket."""
    return leaves_at(buckets[-1][0], span, width) if buckets else current * width


def seconds_until(instant: int, now: float) -> int:
    """Whole seconds from ``now`` to ``instant``, rounded up so that a client waiting that long
    never arrives before it; 0 for an instant passed (or ``NOW``)."""
    return max(0, math.ceil(instant - now))
