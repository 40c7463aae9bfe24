"""The admin API's request and response shapes (pydantic models; the OpenAPI document is built
from them). Money is exact: ``*_usd`` fields are decimal strings, ``*_nanos`` integers of
nano-dollars. Times are ISO 8601 in UTC; a time given without a zone is read as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from costwarden.core.audit import AuditAction


def _utc(value: datetime) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 has no UTC time; pydantic reports ValueError as a 400
        raise ValueError("the time is out of range in UTC") from None


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


UtcTime = Annotated[datetime, AfterValidator(_utc)]
# Upper-cased first, as the gateway reads X-Department-ID.
DepartmentId = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,63}$"), BeforeValidator(_upper)]
Label = Annotated[str, Field(min_length=1, max_length=128)]
Limit = Annotated[int, Field(ge=1, le=1000, description="Most items to return (1-1000).")]
Role = Literal["admin", "finance", "manager", "customer"]


class Query(BaseModel):
    """Base of query-string models: unknown parameters are ignored, as by most HTTP APIs."""

    model_config = ConfigDict(extra="ignore")


class Body(BaseModel):
    """Base of JSON request bodies: unknown fields are errors, so that a typo is not ignored."""

    model_config = ConfigDict(extra="forbid")


class NoQuery(Query):
    pass


class NoBody(Body):
    pass


class TimeRange(Query):
    since: UtcTime | None = Field(None, description="From this instant (inclusive).")
    until: UtcTime | None = Field(None, description="Up to this instant (exclusive).")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    problems: list[str] | None = Field(None, description="Every problem of an invalid policy, with path and line.")


class ErrorBody(BaseModel):
    """OpenAI's error shape."""

    error: ErrorDetail


# -- budgets and spend ---------------------------------------------------------------------


class BudgetQuery(Query):
    department: DepartmentId | None = Field(None, description="Only this department's budgets.")


class BudgetOut(BaseModel):
    scope: str = Field(description="org, dept:<D>, team:<D>/<T>, key:<D>/<key id>, user:<D>/<user>, "
                                   "customer:<C> or tag:<name>=<value>.")
    scope_kind: str = Field(description="organization, department, team, key, user, customer or tag.")
    label: str
    department: str | None
    team: str | None
    key_id: str | None
    user: str | None = Field(description="The user of a per-user budget.")
    index: int = Field(description="Position of the budget in its scope's list in the policy.")
    period: str
    unit: str = Field(description="usd or tokens.")
    action: str = Field(description="alert, reject, downgrade or restrict_tiers.")
    action_tiers: list[int] | None = Field(description="The tiers a restrict_tiers budget keeps.")
    enforce: bool
    alert_at: list[str] = Field(description="Alert thresholds, as exact fractions of the limit.")
    limit_usd: str | None
    spent_usd: str | None
    reserved_usd: str | None
    remaining_usd: str | None
    limit_nanos: int | None
    spent_nanos: int | None
    reserved_nanos: int | None
    remaining_nanos: int | None
    limit_tokens: int | None
    spent_tokens: int | None
    reserved_tokens: int | None
    remaining_tokens: int | None
    utilization_pct: str = Field(description="Settled spend over the limit, in percent with 2 decimals.")
    period_start: datetime
    period_end: datetime
    restricted: bool = Field(description="A restrict_tiers budget that has tripped for this period.")
    forecast_usd: str | None = Field(description="Spend projected to the period end by the method of report "
                                                 "forecast (weekday/weekend aware), in cents; null for rolling "
                                                 "periods, token budgets and until 3 complete days are observed.")
    forecast_tokens: int | None


class BudgetList(BaseModel):
    as_of: datetime
    timezone: str
    budgets: list[BudgetOut]


class SpendQuery(TimeRange):
    group_by: str = Field("department", description="Comma-separated: department, team, model, key, "
                                                    "user, day (UTC) or tag:<name>.")
    department: DepartmentId | None = Field(None, description="Only this department's spend.")


class SpendTotals(BaseModel):
    requests: int
    input_tokens: int = Field(description="All input tokens, cached ones included.")
    cached_input_tokens: int
    output_tokens: int
    cost_usd: str
    cost_nanos: int


class SpendRow(SpendTotals):
    group: dict[str, str | None]


class SpendReport(BaseModel):
    since: datetime | None
    until: datetime | None
    group_by: list[str]
    rows: list[SpendRow]
    totals: SpendTotals


# -- ledger records ------------------------------------------------------------------------


class EventQuery(TimeRange):
    department: DepartmentId | None = None
    key_id: str | None = None
    user: str | None = None
    model: str | None = Field(None, description="The model served.")
    status: str | None = None
    limit: Limit = 100
    cursor: str | None = Field(None, description="next_cursor of the previous page.")


class RejectionQuery(TimeRange):
    department: DepartmentId | None = None
    key_id: str | None = None
    code: str | None = None
    limit: Limit = 100
    cursor: str | None = Field(None, description="next_cursor of the previous page.")


class EventOut(BaseModel):
    id: str
    admitted_at: datetime
    finished_at: datetime
    department: str
    team: str | None
    key_id: str | None
    user: str | None
    model_requested: str
    model_served: str
    provider: str
    endpoint: str
    tags: dict[str, str]
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    cost_usd: str
    cost_nanos: int
    estimate_usd: str
    estimate_nanos: int
    price_version: str
    decision: str
    status: str
    http_status: int
    latency_ms: int
    overrun_tokens: int
    interrupted: bool
    shadow: list[str]
    stream: bool


class EventPage(BaseModel):
    events: list[EventOut]
    next_cursor: str | None


class RejectionOut(BaseModel):
    id: str
    at: datetime
    department: str | None
    team: str | None
    key_id: str | None
    user: str | None
    model_requested: str | None
    endpoint: str
    code: str
    message: str
    http_status: int
    tags: dict[str, str]
    shadow: list[str]


class RejectionPage(BaseModel):
    rejections: list[RejectionOut]
    next_cursor: str | None


class AlertQuery(Query):
    since: UtcTime | None = None
    department: DepartmentId | None = None
    kind: str | None = Field(None, description="threshold, exhausted, action, forecast, breaker, anomaly or loop.")
    limit: Limit = 100


class AlertOut(BaseModel):
    id: int | None
    at: datetime
    kind: str
    department: str | None
    scope: str
    budget_index: int | None
    period_start: datetime | None
    threshold: str | None
    text: str


class AlertList(BaseModel):
    alerts: list[AlertOut]


# -- keys and tokens -----------------------------------------------------------------------


class KeyQuery(Query):
    department: DepartmentId | None = None
    include_revoked: bool = True


class KeyCreate(Body):
    department: DepartmentId | None = Field(None, description="Bind the key to it (a manager's own by default).")
    team: Label | None = None
    user: Label | None = None
    name: Label | None = None
    customer: DepartmentId | None = Field(None, description="Bind the key to a business customer (and so to "
                                                            "the customer's department).")


class KeyOut(BaseModel):
    id: str
    prefix: str
    department: str | None
    team: str | None
    user: str | None
    name: str | None
    customer: str | None = None
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class KeyCreated(KeyOut):
    key: str = Field(description="The secret, shown this once; only its hash is stored.")


class KeyList(BaseModel):
    keys: list[KeyOut]


class TokenQuery(Query):
    include_revoked: bool = True


class TokenCreate(Body):
    role: Role
    department: DepartmentId | None = Field(None, description="The department a manager manages.")
    name: Label | None = None
    customer: DepartmentId | None = Field(None, description="The customer a customer token reads.")


class TokenOut(BaseModel):
    id: str
    prefix: str
    role: str
    department: str | None
    name: str | None
    customer: str | None = None
    created_at: datetime
    revoked_at: datetime | None
    active: bool


class TokenCreated(TokenOut):
    token: str = Field(description="The secret, shown this once; only its hash is stored.")


class TokenList(BaseModel):
    tokens: list[TokenOut]


# -- policy --------------------------------------------------------------------------------


class PolicyOut(BaseModel):
    version: int = Field(description="The ledger's id of the policy in force.")
    sha256: str
    source_path: str | None = Field(description="The file POST /policy/reload re-reads, if any.")
    timezone: str
    departments: list[str]
    upstreams: list[str]
    models: int
    summary: str
    yaml: str


class PolicyReloaded(BaseModel):
    version: int
    previous_version: int
    changed: bool
    upstreams_rebuilt: bool
    counters_loaded: int = Field(description="Counter cells of added budgets loaded from the ledger.")
    summary: str


# -- audit log -----------------------------------------------------------------------------


class AuditQuery(TimeRange):
    department: DepartmentId | None = Field(None, description="Only entries about this department.")
    action: AuditAction | None = Field(None, description="Only this kind of change.")
    limit: Limit = 100
    cursor: str | None = Field(None, description="next_cursor of the previous page.")


class AuditOut(BaseModel):
    id: int | None
    at: datetime
    actor_id: str = Field(description="The admin token's id; the OS user for the CLI; 'server' for a server.")
    actor_role: str = Field(description="admin, finance, manager, cli or server.")
    action: AuditAction
    target: str | None = Field(description="The key or token id, the period, or the policy version.")
    department: str | None = Field(description="The department the change concerns; null: the organization.")
    version_before: int | None = Field(description="Policy version before a policy or budget change.")
    version_after: int | None = Field(description="Policy version after it.")
    detail: dict[str, Any] = Field(description="What changed: a key's binding, the budgets changed (before "
                                               "and after)...")


class AuditPage(BaseModel):
    entries: list[AuditOut]
    next_cursor: str | None
