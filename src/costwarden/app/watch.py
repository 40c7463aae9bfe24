"""The watched alerts, evaluated off the request path on a tick (``serve``'s ``COSTWARDEN_WATCH_S``,
default 60 s): nothing here runs during a call.

- ``forecast``: every calendar budget of the organization, its departments and teams is
  projected by ``core.forecasting`` (the method of ``report forecast`` and budget status); one
  projected above its limit, and not spent past it yet (``exhausted`` tells that), is told of
  once per budget and period. The projection counts complete local days only, so it is read
  again only when the local day or the policy changes: one grouped ledger read a day.
- ``anomaly`` (see ``anomalies``): a key's or department's spend over the rule's window against
  its own average rate over the baseline before it.

Each alert is claimed in the counter store before it is sent, so it is sent once across replicas.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial

from costwarden.app.generation import Generation
from costwarden.app.tripwire import Sighting, Tripwire
from costwarden.core.forecasting import ForecastState
from costwarden.core.notifications import AlertKind, anomaly_notification, forecast_notification
from costwarden.core.policy import Policy
from costwarden.core.watch import AnomalyRule
from costwarden.engine.admission import Admission
from costwarden.engine.status import status_checks
from costwarden.errors import StorageError
from costwarden.ledger import Ledger, TotalsRow
from costwarden.reports.budget_forecast import project_checks

log = logging.getLogger(__name__)
WATCH_S = 60.0
BASELINE_REFRESH_S = 3600.0  # a 7-day average moves little in an hour: read it hourly, not per tick
Spend = Mapping[tuple[str, str | None], int]  # (department, key id or None for the whole department) -> nanos


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A scope whose recent spend is far above its baseline; amounts in nano-dollars."""

    department: str
    key_id: str | None
    spent: int  # over the rule's window
    usual: int  # the baseline's average spend over a window as long


def anomalies(rule: AnomalyRule, recent: Spend, baseline: Spend) -> Iterator[Anomaly]:
    """The scopes of ``recent`` that spent at least ``rule.min_nanos`` in the window and at least
    ``rule.factor`` times their usual spend in a window as long.

    The usual spend is the scope's mean rate over the whole baseline (default 7 days, a whole
    week, so that weekends and nights count), not its median hour: an office key's median hour
    is nothing (most hours of a week are nights and weekends), which would make every working
    hour an anomaly. A loop left running is far above the mean however it is timed. The floor
    keeps keys spending cents from firing on noise; a scope with no baseline spend (a new key)
    is judged by the floor alone, as a new key in a runaway loop should be.
    """
    for scope, spent in recent.items():
        if spent < rule.min_nanos or spent <= 0:
            continue
        usual = baseline.get(scope, 0) * rule.window_s // rule.baseline_s
        if spent >= rule.factor * usual:
            yield Anomaly(scope[0], scope[1], spent, usual)


class AlertWatch:
    """The tick of the watched alerts; ``run`` until cancelled."""

    def __init__(self, admission: Admission, ledger: Ledger, generation: Callable[[], Generation],
                 tripwire: Tripwire, every_s: float = WATCH_S) -> None:
        self.admission = admission
        self.ledger = ledger
        self.generation = generation
        self.tripwire = tripwire
        self.every_s = every_s
        self._forecast_for: tuple[Policy, date] | None = None  # when forecasts were last read
        self._baseline: tuple[AnomalyRule, datetime, Spend] | None = None
        self._failing = False

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # the outermost edge of a background task: the next tick tries again
                log.exception("watched alerts failed; trying again in %.0f s", self.every_s)
            await asyncio.sleep(self.every_s)

    async def tick(self) -> None:
        """Evaluate every watched alert once; a failing ledger or store waits for the next tick."""
        generation = self.generation()
        rules = generation.policy.alerts
        now = self.admission.clock()
        try:
            if rules.forecast:
                await self._forecasts(generation, now)
            if rules.anomaly is not None:
                await self._anomalies(generation, rules.anomaly, now)
        except StorageError as exc:
            if not self._failing:
                log.warning("watched alerts wait for the ledger: %s", exc)
            self._failing = True
            return
        self._failing = False

    async def _forecasts(self, generation: Generation, now: datetime) -> None:
        policy = generation.policy
        day = now.astimezone(policy.timezone).date()
        if self._forecast_for is not None and self._forecast_for[0] is policy and self._forecast_for[1] == day:
            return
        checks = [check for _, check in status_checks(policy, now) if check.budget.period.is_calendar]
        projections = await project_checks(self.ledger, checks, policy.timezone, now)
        for check in checks:
            projection = projections[check.scope.id, check.index]
            limit = check.budget.limit
            if projection.state != ForecastState.PROJECTED or projection.projected is None:
                continue
            if projection.projected > limit > projection.spent and \
                    await self.admission.first(f"alert|forecast|{check.window.key}", check.window.end):
                note = forecast_notification(check, projection, policy.timezone)
                self.tripwire.submit(note, generation)
        self._forecast_for = (policy, day)

    async def _anomalies(self, generation: Generation, rule: AnomalyRule, now: datetime) -> None:
        since = now - timedelta(seconds=rule.window_s)
        recent = _by_scope(await self.ledger.totals(since, now, ["department", "key_id"]))
        for found in anomalies(rule, recent, await self._baseline_of(rule, since)):
            sighting = Sighting(AlertKind.ANOMALY, found.department, found.key_id, rule.window_s, rule.breaker_s,
                                rule.trip_breaker)
            await self.tripwire.fire(sighting, generation, partial(
                anomaly_notification, spent=found.spent, usual=found.usual, baseline_s=rule.baseline_s,
                tz=generation.timezone))

    async def _baseline_of(self, rule: AnomalyRule, until: datetime) -> Spend:
        """Spend per scope over the baseline that ends where the window starts (read hourly)."""
        cached = self._baseline
        if cached is not None and cached[0] == rule and \
                timedelta(0) <= until - cached[1] < timedelta(seconds=BASELINE_REFRESH_S):
            return cached[2]
        rows = await self.ledger.totals(until - timedelta(seconds=rule.baseline_s), until, ["department", "key_id"])
        spend = _by_scope(rows)
        self._baseline = (rule, until, spend)
        return spend


def _by_scope(rows: list[TotalsRow]) -> dict[tuple[str, str | None], int]:
    """Spend per key (department, key id) and per department (department, None)."""
    spend: dict[tuple[str, str | None], int] = {}
    for row in rows:
        department, key = str(row.groups["department"]), row.groups["key_id"]
        spend[department, None] = spend.get((department, None), 0) + row.cost_nanos
        if key:
            spend[department, str(key)] = spend.get((department, str(key)), 0) + row.cost_nanos
    return spend
