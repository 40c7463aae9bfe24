"""GET /events, /rejections and /alerts: what the ledger recorded, newest first."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.money import format_usd
from costwarden.http.admin.access import EVERYONE, visible_department
from costwarden.http.admin.api import AdminCall, Operation
from costwarden.http.admin.paging import newest_first
from costwarden.http.admin.schemas import (
    AlertList,
    AlertOut,
    AlertQuery,
    EventOut,
    EventPage,
    EventQuery,
    NoBody,
    RejectionOut,
    RejectionPage,
    RejectionQuery,
)
from costwarden.ledger import AlertRecord
from costwarden.ledger.queries import WhereValue


async def list_events(call: AdminCall[EventQuery, NoBody]) -> EventPage:
    query, ledger = call.query, call.runtime.ledger
    where = _where(department=visible_department(call.who, query.department), key_id=query.key_id,
                   user=query.user, model_served=query.model, status=query.status)

    async def fetch(until: datetime | None, limit: int, offset: int) -> list[UsageEvent]:
        return await ledger.list_events(query.since, until, where, limit, offset)

    page = await newest_first(fetch, lambda e: e.admitted_at, query.until, query.limit, query.cursor)
    return EventPage(events=[_event(e) for e in page.items], next_cursor=page.next_cursor)


async def list_rejections(call: AdminCall[RejectionQuery, NoBody]) -> RejectionPage:
    query, ledger = call.query, call.runtime.ledger
    where = _where(department=visible_department(call.who, query.department), key_id=query.key_id,
                   code=query.code)

    async def fetch(until: datetime | None, limit: int, offset: int) -> list[Rejection]:
        return await ledger.list_rejections(query.since, until, where, limit, offset)

    page = await newest_first(fetch, lambda r: r.at, query.until, query.limit, query.cursor)
    return RejectionPage(rejections=[_rejection(r) for r in page.items], next_cursor=page.next_cursor)


async def list_alerts(call: AdminCall[AlertQuery, NoBody]) -> AlertList:
    query = call.query
    department = visible_department(call.who, query.department)
    alerts = await call.runtime.ledger.list_alerts(query.since, department, query.kind, query.limit)
    return AlertList(alerts=[_alert(a) for a in alerts])


def _where(**filters: str | None) -> dict[str, WhereValue]:
    return {name: value for name, value in filters.items() if value is not None}


def _event(e: UsageEvent) -> EventOut:
    return EventOut(
        id=e.id, admitted_at=e.admitted_at, finished_at=e.finished_at, department=e.department, team=e.team,
        key_id=e.key_id, user=e.user, model_requested=e.model_requested, model_served=e.model_served,
        provider=e.provider, endpoint=e.endpoint, tags=dict(e.tags), input_tokens=e.input_tokens,
        cached_input_tokens=e.cached_input_tokens, output_tokens=e.output_tokens, cost_usd=format_usd(e.cost_nanos),
        cost_nanos=e.cost_nanos, estimate_usd=format_usd(e.estimate_nanos), estimate_nanos=e.estimate_nanos,
        price_version=e.price_version, decision=e.decision, status=e.status, http_status=e.http_status,
        latency_ms=e.latency_ms, overrun_tokens=e.overrun_tokens, interrupted=e.interrupted,
        shadow=list(e.shadow), stream=e.stream,
    )


def _rejection(r: Rejection) -> RejectionOut:
    return RejectionOut(
        id=r.id, at=r.at, department=r.department, team=r.team, key_id=r.key_id, user=r.user,
        model_requested=r.model_requested, endpoint=r.endpoint, code=r.code, message=r.message,
        http_status=r.http_status, tags=dict(r.tags), shadow=list(r.shadow),
    )


def _alert(a: AlertRecord) -> AlertOut:
    return AlertOut(id=a.id, at=a.at, kind=a.kind, department=a.department, scope=a.scope,
                    budget_index=a.budget_index, period_start=a.period_start, threshold=a.threshold, text=a.text)


OPERATIONS: list[Operation[Any, Any]] = [
    Operation("GET", "/events", "List usage events", EVERYONE, list_events, EventQuery, NoBody, EventPage,
              description="One ledger row per admitted call, newest first, in pages: pass next_cursor back as "
                          "cursor for the next page (null on the last). A manager sees its department only."),
    Operation("GET", "/rejections", "List refused calls", EVERYONE, list_rejections, RejectionQuery, NoBody,
              RejectionPage, description="Calls refused at admission (zero cost), newest first, paged like "
                                         "/events. A manager sees its department only."),
    Operation("GET", "/alerts", "List alerts", EVERYONE, list_alerts, AlertQuery, NoBody, AlertList,
              description="Alerts raised (thresholds, breakers...), newest first. A manager sees its "
                          "department only."),
]
