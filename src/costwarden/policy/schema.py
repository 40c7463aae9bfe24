"""The policy file's schema (SPEC section 2) as pydantic models.

Every model forbids unknown keys. The top level keeps its sections untyped so that each model
entry, upstream and department is validated on its own: one broken department does not hide the
mistakes of the others, and cross-checks still run on everything that did validate.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, PlainValidator, model_validator

from costwarden.core.catalog import TIERS
from costwarden.core.money import usd_to_nanos
from costwarden.core.watch import AlertRules, AnomalyRule, LoopRule, parse_duration
from costwarden.policy.fields import (
    ActionField,
    BaseUrl,
    Code,
    EmptyIfNull,
    EnvName,
    Flag,
    Fraction,
    HeaderName,
    IsoDate,
    Name,
    NonEmptyText,
    NonNegativeAmount,
    NonNegativeWhole,
    NotifyTarget,
    PeriodField,
    PositiveAmount,
    PositiveWhole,
    PriceValue,
    ScopeId,
    Text,
    Tier,
    TimezoneField,
    whole,
)
from costwarden.policy.problems import FieldProblem

SUPPORTED_VERSION = 1


def _version(value: object) -> int:
    if whole(value) != SUPPORTED_VERSION:
        raise ValueError(f"unsupported version {value}: this costwarden reads version {SUPPORTED_VERSION}")
    return SUPPORTED_VERSION


Version = Annotated[int, PlainValidator(_version)]


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BudgetSpec(Spec):
    """``{limit, period, action, alert_at, unit, enforce}``; limit is USD unless unit is tokens."""

    limit: PositiveAmount
    period: PeriodField
    action: ActionField
    alert_at: list[Fraction] = []
    unit: Literal["usd", "tokens"] = "usd"
    enforce: Flag = True

    @model_validator(mode="after")
    def _exact_limit(self) -> BudgetSpec:
        self.amount()
        return self

    def amount(self) -> int:
        """The limit in its unit's integers: nano-dollars, or tokens."""
        if self.unit == "tokens":
            if self.limit != self.limit.to_integral_value():
                raise FieldProblem("limit", f"a token limit must be a whole number of tokens (got {self.limit})")
            return int(self.limit)
        try:
            return usd_to_nanos(self.limit)
        except ValueError:
            raise FieldProblem("limit", f"{self.limit} USD is finer than a nano-dollar (1e-9 USD)") from None


class LimitsSpec(Spec):
    """Tokens and requests per minute."""

    tpm: PositiveWhole | None = None
    rpm: PositiveWhole | None = None
    enforce: Flag = True

    @model_validator(mode="after")
    def _some_limit(self) -> LimitsSpec:
        if self.tpm is None and self.rpm is None:
            raise ValueError("set tpm, rpm or both")
        return self


class RulesSpec(Spec):
    """Budgets and limits of one scope (also the per_key / per_user templates)."""

    budgets: list[BudgetSpec] = []
    limits: LimitsSpec | None = None


class OrganizationSpec(RulesSpec):
    notify: list[NotifyTarget] = []


class TeamSpec(RulesSpec):
    name: NonEmptyText | None = None
    notify: list[NotifyTarget] = []


class DepartmentSpec(RulesSpec):
    name: NonEmptyText | None = None
    tiers: list[Tier] = list(TIERS)
    models: list[Text] | None = None
    notify: list[NotifyTarget] = []
    teams: Annotated[dict[ScopeId, Annotated[TeamSpec, EmptyIfNull]], EmptyIfNull] = {}
    per_key: RulesSpec | None = None
    per_user: RulesSpec | None = None
    cost_center: Code = ""
    gl_account: Code = ""
    effective_from: IsoDate | None = None  # the UTC day name and codes took effect (back-dated changes)


class ModelEntrySpec(Spec):
    """A catalog entry. In a policy every field is optional: known models are overridden field by
    field; a new model needs provider, tier, input and output (checked when merging)."""

    provider: Name | None = None
    kind: Literal["chat", "embedding"] | None = None
    tier: Tier | None = None
    input: PriceValue | None = None
    cached_input: PriceValue | None = None
    output: PriceValue | None = None
    context_window: PositiveWhole | None = None
    max_output: NonNegativeWhole | None = None
    downgrade_to: Text | None = None
    source: Text | None = None
    as_of: IsoDate | None = None


class UpstreamSpec(Spec):
    """Where one provider's calls go; the key is read from the environment variable named."""

    type: Literal["openai", "anthropic"]
    base_url: BaseUrl
    api_key_env: EnvName | None = None
    timeout_s: PositiveAmount | None = None
    tpm: PositiveWhole | None = None  # the provider's capacity that plans queue for (SPEC §12)


class ThinContextSpec(Spec):
    max_input_tokens: PositiveWhole


class EfficiencySpec(Spec):
    prompt_caching: Literal["auto", "off"] = "off"
    thin_context: ThinContextSpec | None = None


class ModelRateSpec(Spec):
    """A customer's price of one model, USD per 1M tokens; cache prices default to ``input``."""

    input: PriceValue
    output: PriceValue
    cached_input: PriceValue | None = None
    cache_write_5m: PriceValue | None = None
    cache_write_1h: PriceValue | None = None


class RateCardSpec(Spec):
    """``{markup_pct: 20}`` on provider cost, or per-model prices (other models at the markup)."""

    markup_pct: NonNegativeAmount = Decimal(0)
    models: Annotated[dict[Text, ModelRateSpec], EmptyIfNull] = {}


class PlanSpec(RulesSpec):
    """A plan sold to business customers (SPEC §12): its customers' budgets, limits and bill."""

    priority: Literal["standard", "high"] = "standard"
    efficiency: Annotated[EfficiencySpec, EmptyIfNull] = EfficiencySpec()
    rate_card: Annotated[RateCardSpec, EmptyIfNull] = RateCardSpec()
    included_usd: NonNegativeAmount = Decimal(0)
    queue_s: PositiveAmount = Decimal(10)

    @model_validator(mode="after")
    def _exact_included(self) -> PlanSpec:
        self.included_nanos()
        return self

    def included_nanos(self) -> int:
        """The included amount in nano-dollars."""
        try:
            return usd_to_nanos(self.included_usd)
        except ValueError:
            raise FieldProblem("included_usd",
                               f"{self.included_usd:f} USD is finer than a nano-dollar (1e-9 USD)") from None


class CustomerSpec(Spec):
    """``ACME: {name: Acme Corp, plan: gold, department: PRODUCT}``."""

    name: NonEmptyText | None = None
    plan: Text
    department: ScopeId


class AttributionSpec(Spec):
    header: HeaderName = "X-Department-ID"
    require: Flag = True
    team: Literal["required", "optional"] = "optional"


def _duration(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError(f"must be a duration like 60s, 15m, 1h or 7d (got {value!r})")
    return parse_duration(value)


def _factor(value: object) -> int:
    result = whole(value)
    if result < 2:
        raise ValueError(f"must be a whole number >= 2: how many times the baseline rate (got {value})")
    return result


Duration = Annotated[int, PlainValidator(_duration)]
_ANOMALY, _LOOP = AnomalyRule(), LoopRule()  # the defaults
Factor = Annotated[int, PlainValidator(_factor)]


class AnomalySpec(Spec):
    """``{factor: 10, window: 15m, baseline: 7d, min_usd: 5, trip_breaker: false, breaker_for: 1h}``."""

    factor: Factor = _ANOMALY.factor
    window: Duration = _ANOMALY.window_s
    baseline: Duration = _ANOMALY.baseline_s
    min_usd: NonNegativeAmount = Decimal(5)
    trip_breaker: Flag = False
    breaker_for: Duration = _ANOMALY.breaker_s

    @model_validator(mode="after")
    def _sensible(self) -> AnomalySpec:
        if not 60 <= self.window <= 86400:
            raise FieldProblem("window", "must be between 1m and 1d")
        if self.baseline < 2 * self.window:
            raise FieldProblem("baseline", "must be at least twice the window, so that there is a baseline to "
                                           "compare with")
        if self.baseline > 31 * 86400:
            raise FieldProblem("baseline", "must be at most 31d")
        _breaker_for(self.breaker_for)
        self.min_nanos()
        return self

    def min_nanos(self) -> int:
        try:
            return usd_to_nanos(self.min_usd)
        except ValueError:
            raise FieldProblem("min_usd", f"{self.min_usd:f} USD is finer than a nano-dollar (1e-9 USD)") from None

    def rule(self) -> AnomalyRule:
        return AnomalyRule(self.factor, self.window, self.baseline, self.min_nanos(), self.trip_breaker,
                           self.breaker_for)


class LoopSpec(Spec):
    """``{repeats: 20, window: 60s, trip_breaker: true, breaker_for: 15m}``."""

    repeats: PositiveWhole = _LOOP.repeats
    window: Duration = _LOOP.window_s
    trip_breaker: Flag = False
    breaker_for: Duration = _LOOP.breaker_s

    @model_validator(mode="after")
    def _sensible(self) -> LoopSpec:
        if not 2 <= self.repeats <= 10_000:
            raise FieldProblem("repeats", "must be between 2 and 10000")
        if not 1 <= self.window <= 3600:
            raise FieldProblem("window", "must be between 1s and 1h")
        _breaker_for(self.breaker_for)
        return self

    def rule(self) -> LoopRule:
        return LoopRule(self.repeats, self.window, self.trip_breaker, self.breaker_for)


def _breaker_for(seconds: int) -> None:
    if not 60 <= seconds <= 7 * 86400:
        raise FieldProblem("breaker_for", "must be between 1m and 7d")


class AlertsSpec(Spec):
    """The watched alerts (SPEC §13): ``forecast`` (on unless false), ``anomaly`` and ``loop``
    (off unless given; ``loop:`` alone takes every default)."""

    forecast: Flag = True
    anomaly: Annotated[AnomalySpec | None, EmptyIfNull] = None
    loop: Annotated[LoopSpec | None, EmptyIfNull] = None

    def rules(self) -> AlertRules:
        return AlertRules(self.forecast, self.anomaly.rule() if self.anomaly else None,
                          self.loop.rule() if self.loop else None)


class DocumentSpec(Spec):
    """The top level. Sections stay untyped here and are validated entry by entry."""

    version: Version = SUPPORTED_VERSION
    timezone: TimezoneField = ZoneInfo("UTC")
    on_store_failure: Literal["open", "closed"] = "open"
    models: Annotated[dict[str, Any], EmptyIfNull] = {}
    upstreams: Annotated[dict[str, Any], EmptyIfNull] | None = None
    attribution: Any = None
    organization: Any = None
    departments: Annotated[dict[str, Any], EmptyIfNull] = {}
    plans: Annotated[dict[str, Any], EmptyIfNull] = {}
    customers: Annotated[dict[str, Any], EmptyIfNull] = {}
    tags: Annotated[dict[Any, Any], EmptyIfNull] = {}
    alerts: Any = None


__all__ = [
    "AlertsSpec",
    "AttributionSpec",
    "BudgetSpec",
    "CustomerSpec",
    "DepartmentSpec",
    "DocumentSpec",
    "LimitsSpec",
    "ModelEntrySpec",
    "OrganizationSpec",
    "PlanSpec",
    "RulesSpec",
    "TeamSpec",
    "UpstreamSpec",
]
