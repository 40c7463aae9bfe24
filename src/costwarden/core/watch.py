"""The policy's ``alerts`` section as values: which watched alerts run, and their thresholds.

``forecast`` (a budget projected to exceed its limit) is on unless the policy turns it off.
``anomaly`` and ``loop`` run only when the policy names them, since they judge keys' behaviour
and may stop a key (``trip_breaker``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DURATION = re.compile(r"([1-9][0-9]*)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """Seconds of ``90s``, ``15m``, ``1h`` or ``7d``; raises ValueError."""
    match = DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"must be a duration like 60s, 15m, 1h or 7d (got {text!r})")
    return int(match[1]) * _UNIT_SECONDS[match[2]]


def describe_seconds(seconds: int) -> str:
    """'60 s', '15 min', '2 h', '7 d': the largest unit that divides ``seconds``."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    """A key's or department's spend over ``window_s`` is ``factor`` times what its own average
    rate over the ``baseline_s`` before would spend in that time, and at least ``min_nanos``."""

    factor: int = 10
    window_s: int = 900
    baseline_s: int = 7 * 86400
    min_nanos: int = 5_000_000_000
    trip_breaker: bool = False
    breaker_s: int = 3600


@dataclass(frozen=True, slots=True)
class LoopRule:
    """A key sent the same request body ``repeats`` times within ``window_s``."""

    repeats: int = 20
    window_s: int = 60
    trip_breaker: bool = False
    breaker_s: int = 900


@dataclass(frozen=True, slots=True)
class AlertRules:
    forecast: bool = True
    anomaly: AnomalyRule | None = None
    loop: LoopRule | None = None
    # Whether a rule may trip a key's breaker (so admission must look at breakers): read for every
    # call, so worked out once rather than by a property (a frame of its own each time).
    breaker: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "breaker", (self.anomaly is not None and self.anomaly.trip_breaker)
                           or (self.loop is not None and self.loop.trip_breaker))


def breaker_key(department: str, key_id: str) -> str:
    """The counter-store flag that stops a key while set (it expires when the breaker closes)."""
    return f"breaker|key:{department}/{key_id}"
