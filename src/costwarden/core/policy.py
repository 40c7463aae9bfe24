"""The policy model: who may spend what, on which models, at what rate.

These are plain immutable values built by ``costwarden.policy`` from the YAML file; the core
never parses text. Budget limits are integers: nano-dollars, or tokens when ``unit == "tokens"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from costwarden.core.catalog import Catalog
from costwarden.core.kinds import ActionKind, Priority, PromptCaching, StoreFailure, Unit, UpstreamType
from costwarden.core.periods import Period
from costwarden.core.pricing import Prices
from costwarden.core.watch import AlertRules

ALERT, REJECT, DOWNGRADE, RESTRICT = ActionKind.ALERT, ActionKind.REJECT, ActionKind.DOWNGRADE, ActionKind.RESTRICT_TIERS
UNATTRIBUTED = "UNATTRIBUTED"
TAG_TEXT = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")  # a tag's name or value, in X-Tags and in the policy


@dataclass(frozen=True, slots=True)
class Action:
    """What a budget does to a call that does not fit: alert, reject, downgrade or restrict_tiers."""

    kind: ActionKind
    tiers: frozenset[int] = frozenset()

    def describe(self) -> str:
        if self.kind == RESTRICT:
            return f"restrict to tier {', '.join(map(str, sorted(self.tiers)))}"
        return self.kind


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit per period on one scope, with alert thresholds and an action."""

    limit: int
    period: Period
    action: Action
    unit: Unit = Unit.USD  # nano-dollars, or tokens
    alert_at: tuple[Decimal, ...] = ()
    enforce: bool = True

    @property
    def is_hard(self) -> bool:
        """Whether the store must refuse a reservation that would overrun the limit."""
        return self.enforce and self.action.kind in (REJECT, DOWNGRADE)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Tokens and requests per sliding minute."""

    tpm: int | None = None
    rpm: int | None = None
    enforce: bool = True


@dataclass(frozen=True, slots=True)
class Rules:
    """The budgets and rate limits that apply to one scope."""

    budgets: tuple[Budget, ...] = ()
    limits: RateLimits | None = None

    def __bool__(self) -> bool:
        return bool(self.budgets) or self.limits is not None


@dataclass(frozen=True, slots=True)
class TagRules:
    """Budgets and limits on every call that carries one tag value (``project=atlas``), whatever
    its department: spend that belongs to a project across departments (SPEC §13)."""

    name: str
    value: str
    rules: Rules = Rules()

    @property
    def scope_id(self) -> str:
        """``tag:project=atlas``: names its counters, alerts and audit entries."""
        return f"tag:{self.name}={self.value}"


@dataclass(frozen=True, slots=True)
class Team:
    id: str
    name: str
    rules: Rules = Rules()
    notify: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Department:
    """A unit of accountability: its rights, budgets, limits, teams and per-key/per-user templates."""

    id: str
    name: str
    rules: Rules = Rules()
    tiers: frozenset[int] = frozenset({1, 2, 3})
    models: frozenset[str] | None = None
    notify: tuple[str, ...] = ()
    teams: Mapping[str, Team] = field(default_factory=dict)
    per_key: Rules = Rules()
    per_user: Rules = Rules()
    cost_center: str = ""
    gl_account: str = ""
    effective_from: date | None = None  # the UTC day its name and codes took effect, when back-dated

    @property
    def teams_with_rules(self) -> tuple[str, ...]:
        """Its teams that have budgets or limits of their own (a call naming no team skips them)."""
        return tuple(sorted(team_id for team_id, team in self.teams.items() if team.rules))

    def may_use(self, model_id: str, tier: int) -> bool:
        """Tier rights and the optional allow-list."""
        return tier in self.tiers and (self.models is None or model_id in self.models)


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a provider's calls go. The API key is read from ``api_key_env`` at start-up."""

    name: str
    type: UpstreamType
    base_url: str
    api_key_env: str | None = None
    timeout_s: Decimal = Decimal(600)
    tpm: int | None = None  # declared provider capacity, tokens per minute (SPEC §12); None: unbounded


class TeamAttribution(StrEnum):
    """Whether a call to a department whose teams have budgets or limits must name its team."""

    OPTIONAL = "optional"
    REQUIRED = "required"


@dataclass(frozen=True, slots=True)
class Attribution:
    header: str = "X-Department-ID"
    require: bool = True
    team: TeamAttribution = TeamAttribution.OPTIONAL


@dataclass(frozen=True, slots=True)
class ThinContext:
    """Drop the oldest turns of a request whose input exceeds ``max_input_tokens``."""

    max_input_tokens: int


@dataclass(frozen=True, slots=True)
class Efficiency:
    """The token-efficiency features a plan turns on (SPEC §12); the default turns on none."""

    prompt_caching: PromptCaching = PromptCaching.OFF
    thin_context: ThinContext | None = None


@dataclass(frozen=True, slots=True)
class RateCard:
    """What a customer is billed: per-model prices (USD per 1M tokens) for the models listed,
    and the provider cost plus ``markup_pct`` percent for every other model."""

    markup_pct: Decimal = Decimal(0)
    models: Mapping[str, Prices] = field(default_factory=dict)  # catalog entry id -> prices


DEFAULT_QUEUE_S = Decimal(10)


@dataclass(frozen=True, slots=True)
class Plan:
    """A product plan sold to business customers: priority, efficiency, rate card, budgets."""

    name: str
    priority: Priority = Priority.STANDARD
    efficiency: Efficiency = Efficiency()
    rate_card: RateCard = RateCard()
    included_nanos: int = 0  # spend at the rate card included in the plan each month
    rules: Rules = Rules()  # budgets and limits of each customer on the plan (its own counters)
    queue_s: Decimal = DEFAULT_QUEUE_S  # longest wait for upstream capacity before a 429


@dataclass(frozen=True, slots=True)
class Customer:
    """A business customer: billed at its plan's rate card, charged at cost to its department."""

    id: str
    name: str
    plan: Plan
    department: str


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy. ``source`` is the YAML text it was loaded from (stored for audit)."""

    catalog: Catalog
    departments: Mapping[str, Department]
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    upstreams: Mapping[str, Upstream] = field(default_factory=dict)
    attribution: Attribution = Attribution()
    organization: Rules = Rules()
    organization_notify: tuple[str, ...] = ()
    version: int = 1
    on_store_failure: StoreFailure = StoreFailure.OPEN  # soft-only calls while the counter store is down
    source: str = ""
    plans: Mapping[str, Plan] = field(default_factory=dict)
    customers: Mapping[str, Customer] = field(default_factory=dict)
    tags: Mapping[tuple[str, str], TagRules] = field(default_factory=dict)  # by (tag name, value)
    alerts: AlertRules = field(default_factory=AlertRules)  # the watched alerts: forecast, anomaly, loop

    @property
    def timezone_name(self) -> str:
        return self.timezone.key

    def plan_of(self, customer: str | None) -> Plan | None:
        """The plan of a call's customer (``Caller.customer``); None for a call of no customer."""
        found = self.customers.get(customer) if customer else None
        return found.plan if found is not None else None
