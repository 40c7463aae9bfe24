"""What the ledger records: one UsageEvent per admitted call, one Rejection per refused call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from costwarden.core.kinds import CallStatus
from costwarden.core.pricing import ServiceTier, TokenType, service_tier_of, token_breakdown

# UsageEvent.status values, by their short names
OK = CallStatus.OK
UPSTREAM_ERROR = CallStatus.UPSTREAM_ERROR
UPSTREAM_UNREACHABLE = CallStatus.UPSTREAM_UNREACHABLE
CLIENT_DISCONNECT = CallStatus.CLIENT_DISCONNECT
STREAM_CUT = CallStatus.STREAM_CUT
INTERRUPTED = CallStatus.INTERRUPTED
GATEWAY_ERROR = CallStatus.GATEWAY_ERROR


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made the
# UsageEvent every call builds (37 fields) three times as dear, and the InflightCall twice.
# Neither is changed once made; nothing hashes them (their tags are dicts).
@dataclass(slots=True)
class UsageEvent:
    """One ledger row per admitted call, never changed once made. Money in nano-dollars.

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
    status: CallStatus = OK
    http_status: int = 200
    latency_ms: int = 0
    overrun_tokens: int = 0
    interrupted: bool = False
    shadow: tuple[str, ...] = ()
    stream: bool = False
    # SPEC §9: the id as the client sent it (model_requested is the catalog entry it resolved to),
    # and the parts of the token totals a provider bills at other rates.
    model_sent: str = ""
    cache_write_5m_tokens: int = 0  # part of input_tokens
    cache_write_1h_tokens: int = 0  # part of input_tokens
    reasoning_tokens: int = 0  # part of output_tokens
    audio_input_tokens: int = 0  # part of input_tokens
    service_tier: str = ""  # as the upstream reported it; "" when it reported none
    tool_calls: Mapping[str, int] = field(default_factory=dict)  # server-side tool -> calls billed
    usage_malformed: bool = False  # the upstream's usage was unusable: charged the estimate

    def by_type(self) -> dict[TokenType, int]:
        """The event's tokens per billed token type (SPEC §9)."""
        return token_breakdown(self.input_tokens, self.cached_input_tokens, self.output_tokens,
                               cache_write_5m=self.cache_write_5m_tokens, cache_write_1h=self.cache_write_1h_tokens,
                               reasoning=self.reasoning_tokens, audio_input=self.audio_input_tokens)

    @property
    def billed_beyond_totals(self) -> bool:
        """Whether the provider billed parts of it at other rates than input, cached and output."""
        return bool(self.cache_write_5m_tokens or self.cache_write_1h_tokens or self.reasoning_tokens
                    or self.audio_input_tokens or self.tool_calls
                    or service_tier_of(self.service_tier) != ServiceTier.STANDARD)
    # SPEC §12: the business customer the call is billed to ("" for none), and the input tokens
    # its plan's thin_context removed before forwarding
    customer: str = ""
    trimmed_tokens: int = 0


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


@dataclass(slots=True)  # not frozen: see UsageEvent
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
    replica: str = ""  # the gateway process that forwarded it (its lease names it; SPEC §10)
    model_sent: str = ""
    customer: str = ""  # SPEC §12: the business customer billed, kept on the event settled from it
