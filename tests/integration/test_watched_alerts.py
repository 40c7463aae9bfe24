"""The watched alerts (SPEC §13 ``forecast``, ``anomaly``, ``loop``) through a real gateway in
front of the mock upstream, delivered to a real webhook receiver, each once per scope and period
(also with two replicas sharing Redis and PostgreSQL), and the breaker they trip.

Amounts seeded in the ledger are hand-computed so each expectation can be checked on paper."""

from __future__ import annotations

import asyncio
import calendar
import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clock import FakeClock
from costwarden.app.generation import Generation
from costwarden.app.tripwire import Tripwire
from costwarden.app.watch import AlertWatch
from costwarden.core.catalog import Catalog
from costwarden.core.events import UsageEvent
from costwarden.core.forecasting import ForecastState
from costwarden.core.money import format_dollars, usd_to_nanos
from costwarden.core.notifications import Notification
from costwarden.core.periods import month_bounds
from costwarden.core.scopes import Planner
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission
from costwarden.engine.status import budget_status
from costwarden.ledger import AlertRecord, Ledger
from costwarden.policy import parse_policy
from costwarden.reports.budget_forecast import budget_forecasts, project_checks
from gateway_fixtures import UPSTREAMS, Gateway, start_gateway
from gateway_process import poll
from servers import serving

WAIT_S = 20.0
gateway_at = contextmanager(start_gateway)


def policy_of(template: str, **values: object) -> str:
    return UPSTREAMS + template.format(**values)


class Hooks:
    """A webhook receiver on loopback: every JSON body it was sent."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    async def receive(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
        return Response("ok")

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [body for body in self.bodies if body["kind"] == kind]


@pytest.fixture
def hooks() -> Iterator[tuple[Hooks, str]]:
    receiver = Hooks()
    with serving(Starlette(routes=[Route("/hook", receiver.receive, methods=["POST"])])) as url:
        yield receiver, f"{url}/hook"


def chat(url: str, key: str, text: str = "the same question", model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": text}]})


def alerts_of(gateway: Gateway, kind: str) -> list[AlertRecord]:
    records: list[AlertRecord] = gateway.ledger_query(lambda ledger: ledger.list_alerts(kind=kind))
    return records


def stays(check: Any, what: str, for_s: float = 1.0) -> None:
    """``check()`` holds for ``for_s`` seconds: no second alert arrives late (a bounded watch,
    since an alert that is never sent cannot be waited for)."""
    try:
        poll(lambda: not check(), for_s, what)
    except AssertionError:
        return
    raise AssertionError(f"no longer true: {what}")


def seed(db_url: str, events: Sequence[UsageEvent]) -> None:
    async def work() -> None:
        ledger = await Ledger.open(db_url)
        try:
            await ledger.record_many(events)
        finally:
            await ledger.close()

    asyncio.run(work())


def spend(ident: str, department: str, at: datetime, usd: str, catalog: Catalog, key_id: str | None = None) -> UsageEvent:
    """A recorded call of ``usd`` exactly (its cost is what reports and alerts add up)."""
    spec = catalog["gpt-4o-mini"]
    cost = usd_to_nanos(usd)
    return UsageEvent(id=ident, admitted_at=at, finished_at=at + timedelta(seconds=1), department=department,
                      model_requested=spec.id, model_served=spec.id, provider=spec.provider,
                      endpoint="/v1/chat/completions", input_tokens=1000, cached_input_tokens=0, output_tokens=100,
                      cost_nanos=cost, estimate_nanos=cost, price_version=spec.price_version, decision="allow",
                      key_id=key_id)


# -- loop -----------------------------------------------------------------------------------

LOOP = """
alerts:
  forecast: false
  loop: {{repeats: {repeats}, window: 60s, trip_breaker: true, breaker_for: 15m}}
departments:
  ENGINEERING:
    notify: ["{hook}"]
  SALES: {{}}
  MARKETING: {{}}
  HR: {{}}
  SUPPORT: {{teams: {{TIER1-DESK: {{}}}}}}
"""


def test_a_loop_alerts_once_and_trips_the_keys_breaker(tmp_path: Path, mock_url: str,
                                                       hooks: tuple[Hooks, str]) -> None:
    receiver, hook = hooks
    with gateway_at(tmp_path, mock_url, policy_of(LOOP, hook=hook, repeats=5)) as gw:
        key, other = gw.keys["ENGINEERING"], gw.keys["ENGINEERING-AGENT"]
        assert [chat(gw.url, key).status_code for _ in range(4)] == [200] * 4
        assert chat(gw.url, key, "a different question").status_code == 200  # not a repeat
        assert chat(gw.url, key).status_code == 200  # the 5th repeat: served, and the loop is caught
        poll(lambda: chat(gw.url, key).status_code == 429, WAIT_S, "the breaker to open")
        refused = chat(gw.url, key)
        error = refused.json()["error"]
        assert (refused.status_code, error["code"], error["type"]) == (429, "budget_exceeded", "insufficient_quota")
        assert refused.headers["x-should-retry"] == "false"
        assert "is stopped by its breaker: it sent the same request again and again" in error["message"]
        assert chat(gw.url, other).status_code == 200  # another key of the department is served
        poll(lambda: len(receiver.of("loop")) >= 1, WAIT_S, "the loop webhook")
        for _ in range(10):  # the loop goes on against the open breaker: still one alert this period
            chat(gw.url, key)
        stays(lambda: len(receiver.of("loop")) == 1, "one loop alert")
        [body] = receiver.of("loop")
        [record] = alerts_of(gw, "loop")
    assert body["department"] == "ENGINEERING" and body["scope"].startswith("key:ENGINEERING/")
    key_id = body["scope"].split("/", 1)[1]
    assert body["text"].startswith(f"Key {key_id} of ENGINEERING sent the same request 5 times in 1 min; its "
                                   "breaker is open (its calls are refused) until ")
    assert record.scope == body["scope"] and record.text == body["text"]
    assert body["budget"] == {"index": None, "period": "900s"}


def test_two_replicas_count_a_loop_together_raise_it_once_and_both_refuse_the_key(
        tmp_path: Path, mock_url: str, redis_url: str, postgres_database: str, hooks: tuple[Hooks, str]) -> None:
    receiver, hook = hooks
    redis.Redis.from_url(redis_url).flushdb()
    policy = policy_of(LOOP, hook=hook, repeats=6)
    with ExitStack() as stack:
        first = stack.enter_context(gateway_at(tmp_path / "a", mock_url, policy, redis_url=redis_url,
                                               db_url=postgres_database))
        second = stack.enter_context(gateway_at(tmp_path / "b", mock_url, policy, redis_url=redis_url,
                                                db_url=postgres_database))
        key = first.keys["ENGINEERING"]
        # alternating replicas: each sees 5 of the 10 repeats, fewer than 6; together they see 10
        statuses = [chat(gw.url, key).status_code for _ in range(5) for gw in (first, second)]
        assert statuses[:6] == [200] * 6
        poll(lambda: len(receiver.of("loop")) >= 1, WAIT_S, "the loop webhook")
        # the breaker is open before the alert is sent, on both replicas
        assert [chat(gw.url, key).status_code for gw in (first, second)] == [429, 429]
        stays(lambda: len(receiver.of("loop")) == 1, "one loop alert across replicas")
        assert len(alerts_of(first, "loop")) == 1
    assert receiver.of("loop")[0]["text"].startswith(
        f"Key {receiver.of('loop')[0]['scope'].split('/', 1)[1]} of ENGINEERING sent the same request 6 times in 1 min")


# -- anomaly --------------------------------------------------------------------------------

ANOMALY = """
alerts:
  forecast: false
  anomaly: {{factor: 10, window: 15m, baseline: 7d, min_usd: 1, trip_breaker: true, breaker_for: 1h}}
departments:
  ENGINEERING:
    notify: ["{hook}"]
  MARKETING:
    notify: ["{hook}"]
  SALES: {{}}
  HR: {{}}
  SUPPORT: {{teams: {{TIER1-DESK: {{}}}}}}
"""


def test_anomalies_against_each_scopes_own_baseline(tmp_path: Path, mock_url: str,
                                                    hooks: tuple[Hooks, str]) -> None:
    receiver, hook = hooks
    policy = policy_of(ANOMALY, hook=hook)
    catalog = parse_policy(policy).catalog
    now = datetime.now(UTC)
    # MARKETING's k-steady: $4.17 an hour for the week before the window ($695.83: $1.0355 per
    # 15 min on average), then $5 in the last 15 minutes: 4.8 times its usual, no anomaly.
    # k-spike: $0.07 over the week, then $3: above the $1 floor and far above its usual.
    # The department: $8 against $1.0356, under 10 times: no anomaly.
    week = [spend(f"s-{h}", "MARKETING", now - timedelta(minutes=20, hours=h), "4.166666667", catalog, "k-steady")
            for h in range(167)]
    week += [spend(f"p-{d}", "MARKETING", now - timedelta(days=d, hours=1), "0.01", catalog, "k-spike")
             for d in range(7)]
    recent = [spend("s-now", "MARKETING", now - timedelta(minutes=5), "5", catalog, "k-steady"),
              spend("p-now", "MARKETING", now - timedelta(minutes=5), "3", catalog, "k-spike")]
    tmp_path.mkdir(exist_ok=True)
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    seed(db_url, week + recent)
    with gateway_at(tmp_path, mock_url, policy, db_url=db_url, watch_s=0.2) as gw:
        key = gw.keys["ENGINEERING"]
        # ENGINEERING had spent nothing: one call of 10M input tokens ($1.50) is an anomaly
        costly = chat(gw.url, key, "summarise #mock input_tokens=10000000 output_tokens=5")
        assert costly.status_code == 200 and float(costly.headers["x-costwarden-cost-usd"]) > 1
        poll(lambda: len(receiver.of("anomaly")) >= 3, WAIT_S, "three anomaly webhooks")
        poll(lambda: chat(gw.url, key).status_code == 429, WAIT_S, "the key's breaker to open")
        stays(lambda: len(receiver.of("anomaly")) == 3, "each anomaly once", for_s=1.5)  # 7 ticks
        assert len(alerts_of(gw, "anomaly")) == 3
        bodies = {body["scope"]: body for body in receiver.of("anomaly")}
        key_id = next(scope for scope in bodies if scope.startswith("key:ENGINEERING/")).split("/", 1)[1]
    assert set(bodies) == {"key:MARKETING/k-spike", f"key:ENGINEERING/{key_id}", "dept:ENGINEERING"}
    spike = bodies["key:MARKETING/k-spike"]["text"]
    # its usual: $0.07 x 900 s / 7 d = 104,166 nano-dollars; $3 is 28,800 times that
    assert spike.startswith("Key k-spike of MARKETING spent $3.00 in the last 15 min, 28,800 times its average of "
                            "less than $0.01 per 15 min over the previous 7 d; its breaker is open")
    assert bodies["dept:ENGINEERING"]["text"].startswith("ENGINEERING spent $1.50 in the last 15 min, and nothing "
                                                         "in the previous 7 d. Check for a job")


# -- forecast -------------------------------------------------------------------------------

FORECAST = """
departments:
  HR:
    notify: ["{hook}"]
    budgets: [{{limit: {limit}, period: monthly, action: reject}}]
  ENGINEERING:
    budgets: [{{limit: 100000, period: monthly, action: alert}}]
  SALES: {{}}
  MARKETING: {{}}
  SUPPORT: {{teams: {{TIER1-DESK: {{}}}}}}
"""


def forecast_month(now: datetime, catalog: Catalog) -> tuple[list[UsageEvent], str]:
    """HR spends $10 on each of the 28 days before today (UTC, the policy's zone). Projected: $10 a
    day for every day of this month; spent: $10 per day before today. A limit of $10 x (days in
    the month - 0.5) lies between the two on any day of the month."""
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    events = [spend(f"hr-{d}", "HR", today - timedelta(days=d) + timedelta(hours=12), "10", catalog)
              for d in range(1, 29)]
    days = calendar.monthrange(now.year, now.month)[1]
    return events, f"{days * 10 - 5}"


def test_a_projected_overrun_alerts_once_per_budget_and_period_across_replicas(
        tmp_path: Path, mock_url: str, redis_url: str, postgres_database: str, hooks: tuple[Hooks, str]) -> None:
    receiver, hook = hooks
    redis.Redis.from_url(redis_url).flushdb()
    now = datetime.now(UTC)
    events, limit = forecast_month(now, parse_policy(policy_of(FORECAST, hook=hook, limit=1)).catalog)
    policy = policy_of(FORECAST, hook=hook, limit=limit)
    seed(postgres_database, events)
    days = calendar.monthrange(now.year, now.month)[1]
    with ExitStack() as stack:
        first = stack.enter_context(gateway_at(tmp_path / "a", mock_url, policy, redis_url=redis_url,
                                               db_url=postgres_database, watch_s=0.2))
        stack.enter_context(gateway_at(tmp_path / "b", mock_url, policy, redis_url=redis_url,
                                       db_url=postgres_database, watch_s=0.2))
        poll(lambda: len(receiver.of("forecast")) >= 1, WAIT_S, "the forecast webhook")
        stays(lambda: len(receiver.of("forecast")) == 1, "one forecast alert across replicas")
        assert len(alerts_of(first, "forecast")) == 1
    [body] = receiver.of("forecast")
    assert (body["department"], body["scope"], body["budget"]) == ("HR", "dept:HR", {"index": 0, "period": "monthly"})
    spent = 10 * (now.day - 1)
    assert body["spent_usd"] == str(spent) and body["limit_usd"] == limit
    assert body["text"].startswith(f"HR is projected to spend ${days * 10:,}.00 of its ${int(limit):,}.00 monthly "
                                   f"budget by ")
    assert "mean per weekday and per weekend day" in body["text"]


# -- one method for the report, budget status and the alert -------------------------------------

NEW_YORK = ZoneInfo("America/New_York")
OFFICE = """
version: 1
timezone: America/New_York
departments:
  ENGINEERING:
    budgets: [{{limit: {limit}, period: monthly, action: reject}}]
"""


def office_month(catalog: Catalog) -> list[UsageEvent]:
    """November 2026 in New York, office hours only: 9-17 on weekdays, $0.25 to $0.75 a call
    (a fixed pseudo-random draw), 30 calls an hour; nothing at weekends."""
    rng = random.Random(10)
    events = []
    for day in range(1, 31):
        local = datetime(2026, 11, day, tzinfo=NEW_YORK)
        if local.weekday() >= 5:
            continue
        for hour in range(9, 17):
            for n in range(30):
                at = (local + timedelta(hours=hour, minutes=2 * n)).astimezone(UTC)
                events.append(spend(f"o-{day}-{hour}-{n}", "ENGINEERING", at,
                                    f"0.{rng.randint(25, 75):02d}", catalog))
    return events


async def test_an_office_month_forecast_is_within_5_percent_by_day_10_in_the_report_status_and_alert(
        tmp_path: Path) -> None:
    catalog = parse_policy(OFFICE.format(limit=1)).catalog
    events = office_month(catalog)
    truth = sum(event.cost_nanos for event in events)
    # a limit 3% under the true month end: the month overruns it, day 10 has spent a third of it
    limit = truth * 97 // 100
    policy = parse_policy(OFFICE.format(limit=f"{Decimal(limit) / 10**9}"))
    clock = FakeClock(datetime(2026, 11, 10, 13, tzinfo=NEW_YORK).astimezone(UTC))
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    try:
        await ledger.record_many([event for event in events if event.admitted_at < clock.now])
        store = MemoryCounterStore()
        sent: list[Notification] = []
        generation = Generation(Planner(policy), cast(Any, None), 1)
        replicas = [AlertWatch(Admission(store, clock), ledger, lambda: generation,
                               Tripwire(Admission(store, clock), lambda note, _: sent.append(note)))
                    for _ in range(2)]
        for watch in replicas * 2:  # two replicas sharing the store, two ticks each
            await watch.tick()
        start, end = month_bounds("2026-11", NEW_YORK)
        [line] = [line for line in await budget_forecasts(ledger, policy, start, end, clock.now)
                  if line.check.scope.id == "dept:ENGINEERING"]
        statuses = await budget_status(policy, store.snapshot, clock.now, project=lambda checks: project_checks(
            ledger, checks, policy.timezone, clock.now))
    finally:
        await ledger.close()
    projected = line.projection.projected
    assert line.projection.state == ForecastState.PROJECTED and projected is not None
    assert abs(projected - truth) / truth < 0.05, f"projected {projected}, true {truth}"
    # observed from the first usage, Monday Nov 2, to Nov 9: 6 weekdays and 2 weekend days (of $0);
    # to go, Nov 10 (today) to 30: 15 weekdays at the weekday mean and 6 weekend days at $0
    assert line.projection.weekend_mean == 0 and "6 weekdays, 2 weekend days" in line.projection.method
    before_today = sum(e.cost_nanos for e in events if e.admitted_at < datetime(2026, 11, 10, tzinfo=NEW_YORK))
    assert projected == round(Fraction(before_today) + 15 * Fraction(before_today, 6))
    [status] = [s for s in statuses if s.scope.id == "dept:ENGINEERING"]
    assert status.forecast == (Decimal(projected) / 10**9).quantize(Decimal("0.01"))
    [alert] = sent  # once, whatever the ticks and replicas
    assert alert.kind == "forecast" and alert.scope == "dept:ENGINEERING"
    assert f"is projected to spend {format_dollars(projected)} of its {format_dollars(limit)} monthly" in alert.text
