"""What the ledger records: one UsageEvent per admitted call, one Rejection per refused call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

# UsageEvent.status values
OK = "ok"  # the upstream answered 2xx and the response was delivered
UPSTREAM_ERROR = "upstream_error"  # the upstream answered with an error status
UPSTREAM_UNREACHABLE = "upstream_unreachable"  # connection failed or timed out
CLIENT_DISCONNECT = "client_disconnect"  # the client went away before the end
STREAM_CUT = "stream_cut"  # the upstream stream ended early
INTERRUPTED = "interrupted"  # in flight during a crash; settled at its estimate on restart
GATEWAY_ERROR = "gateway_error"  # the gateway itself failed on the call; not charged


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """One immutable ledger row per admitted call. Money in nano-dollars.

    ``input_tokens`` counts every input token, cached ones included; ``cached_input_tokens`` is
    the cached part (OpenAI's convention; Anthropic usage is normalized to it).
    """

    id: str
    admitted_at: datetime
    finished_at: datetime
    department: str
    model_requested: str
    model_served: str
    provider: str
    endpoint: str
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost_nanos: int = 0
    estimate_nanos: int = 0
    price_version: str = ""
    decision: str = "allow"  # allow | clamp | downgrade (comma-joined when several apply)
    status: str = OK
    http_status: int = 200
    latency_ms: int = 0
    overrun_tokens: int = 0
    interrupted: bool = False
    shadow: tuple[str, ...] = ()
    stream: bool = False


@dataclass(frozen=True, slots=True)
class Rejection:
    """A call refused at admission: a decision with zero cost."""

    id: str
    at: datetime
    department: str | None
    model_requested: str | None
    code: str
    message: str
    http_status: int
    endpoint: str = ""
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    shadow: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InflightCall:
    """Written ahead of forwarding, so that a crash leaves a trace to settle at the estimate."""

    id: str
    admitted_at: datetime
    department: str
    model_requested: str
    model_served: str
    provider: str
    endpoint: str
    estimate_input_tokens: int
    estimate_output_tokens: int
    estimate_nanos: int
    price_version: str
    team: str | None = None
    key_id: str | None = None
    user: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    decision: str = "allow"
    stream: bool = False
