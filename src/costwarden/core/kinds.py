"""The closed sets of names the policy, the ledger and the admin API speak in.

Each is a ``StrEnum``: members compare equal to their text (YAML, JSON, database columns carry
the text), and mypy checks every ``match`` over one for exhaustiveness, so a new action, unit,
scope, upstream type, call status or role shows every place that must handle it.
"""

from __future__ import annotations

from enum import StrEnum


class ActionKind(StrEnum):
    """What a budget does to a call whose worst case does not fit in its room."""

    ALERT = "alert"
    REJECT = "reject"
    DOWNGRADE = "downgrade"
    RESTRICT_TIERS = "restrict_tiers"


class Unit(StrEnum):
    """What a counter counts: nano-dollars, tokens, or requests (rate limits)."""

    USD = "usd"
    TOKENS = "tokens"
    REQUESTS = "requests"


class ScopeKind(StrEnum):
    """Where a budget or limit applies; key and user scopes come from per_key / per_user templates."""

    ORGANIZATION = "organization"
    DEPARTMENT = "department"
    TEAM = "team"
    KEY = "key"
    USER = "user"
    CUSTOMER = "customer"  # a business customer billed by plan (SPEC §12)
    TAG = "tag"  # the calls carrying one tag value (project=atlas), across departments (SPEC §13)


class UpstreamType(StrEnum):
    """The wire format an upstream speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class CallStatus(StrEnum):
    """How an admitted call ended, as recorded on its usage event."""

    OK = "ok"  # the upstream answered 2xx and the response was delivered
    UPSTREAM_ERROR = "upstream_error"  # the upstream answered with an error status
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # connection failed or timed out
    CLIENT_DISCONNECT = "client_disconnect"  # the client went away before the end
    STREAM_CUT = "stream_cut"  # the upstream stream ended early
    INTERRUPTED = "interrupted"  # in flight during a crash; settled at its estimate on restart
    GATEWAY_ERROR = "gateway_error"  # the gateway itself failed on the call; not charged


class Role(StrEnum):
    """What an admin API token may do (SPEC §5)."""

    ADMIN = "admin"
    FINANCE = "finance"
    MANAGER = "manager"
    CUSTOMER = "customer"


class Priority(StrEnum):
    """A plan's place in an upstream's capacity queue: ``high`` is served before ``standard``."""

    STANDARD = "standard"
    HIGH = "high"


class PromptCaching(StrEnum):
    """Whether the gateway marks a plan's requests for provider prompt caching."""

    OFF = "off"
    AUTO = "auto"


class StoreFailure(StrEnum):
    """What a call checked only by soft budgets does while the counter store is unreachable."""

    OPEN = "open"  # served without a reservation; its spend is counted once the store is back
    CLOSED = "closed"  # refused like a hard-checked call
