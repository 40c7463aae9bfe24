"""GET /whoami: what a token may see, so that a client (the dashboard) shows only that.

The answer also names the current billing month in the policy's timezone, so that clients ask for
month-to-date figures over the same window as the monthly budgets, without a timezone library.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from costwarden.core.periods import Period
from costwarden.core.policy import Policy
from costwarden.http.admin.access import EVERYONE, KEY_KEEPERS, ORGANIZATION
from costwarden.http.admin.api import AdminCall, Operation
from costwarden.http.admin.customers import CUSTOMER
from costwarden.http.admin.schemas import NoBody, NoQuery

_MONTH = Period.parse("monthly")
MONTHS = 12  # billing months offered to a client (a year of statements)


class DepartmentOut(BaseModel):
    id: str
    name: str = Field(description="The display name (the id when the policy gives none).")
    cost_center: str
    gl_account: str
    teams: list[str]


class MonthOut(BaseModel):
    period: str = Field(description="YYYY-MM, as `costwarden report chargeback --period` takes it.")
    start: datetime
    end: datetime


class SessionOut(BaseModel):
    token_id: str = Field(description="The token's id ('bootstrap' for COSTWARDEN_ADMIN_TOKEN).")
    role: str = Field(description="admin, finance, manager or customer.")
    department: str | None = Field(description="The department a manager manages.")
    customer: str | None = Field(None, description="The business customer a customer token reads (SPEC §12).")
    sees_organization: bool = Field(description="The token reads every department.")
    manages_keys: bool = Field(description="The token creates and revokes keys (a manager: its department's).")
    departments: list[DepartmentOut] = Field(description="The departments the token may read.")
    timezone: str = Field(description="The policy's timezone, in which calendar periods are computed.")
    now: datetime
    month_start: datetime = Field(description="The current calendar month in the policy's timezone: start...")
    month_end: datetime = Field(description="...and end (exclusive).")
    months: list[MonthOut] = Field(description="The current billing month and the eleven before it, newest first.")
    policy_version: int


async def whoami(call: AdminCall[NoQuery, NoBody]) -> SessionOut:
    runtime, who = call.runtime, call.who
    policy = runtime.policy
    now = runtime.admission.clock()
    start, end = _MONTH.bounds(now, policy.timezone)
    visible = sorted(policy.departments) if who.role in ORGANIZATION else [d for d in [who.department] if d]
    return SessionOut(
        token_id=who.id, role=who.role, department=who.department, customer=who.customer,
        sees_organization=who.role in ORGANIZATION,
        manages_keys=who.role in KEY_KEEPERS, departments=[_department(policy, d) for d in visible],
        timezone=policy.timezone_name, now=now, month_start=start, month_end=end,
        months=_months(start, policy.timezone),
        policy_version=runtime.policy_version,
    )


def _months(start: datetime, tz: ZoneInfo) -> list[MonthOut]:
    months: list[MonthOut] = []
    for _ in range(MONTHS):
        begin, end = _MONTH.bounds(start, tz)
        months.append(MonthOut(period=begin.astimezone(tz).strftime("%Y-%m"), start=begin, end=end))
        start = begin - timedelta(microseconds=1)  # an instant in the month before
    return months


def _department(policy: Policy, department_id: str) -> DepartmentOut:
    dept = policy.departments.get(department_id)
    if dept is None:  # a manager's department that a reload removed: its past spend is still readable
        return DepartmentOut(id=department_id, name=department_id, cost_center="", gl_account="", teams=[])
    return DepartmentOut(id=dept.id, name=dept.name, cost_center=dept.cost_center, gl_account=dept.gl_account,
                         teams=sorted(dept.teams))


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/whoami", "Read the token's role and scope", (*EVERYONE, CUSTOMER), whoami, NoQuery, NoBody,
              SessionOut,
              description="The calling token's id, role and the departments it may read (with their display "
                          "names), and the current billing month in the policy's timezone."),
]
