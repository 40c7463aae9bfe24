"""Prometheus metrics: calls, tokens, cost and decisions by department, model and outcome."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.money import nanos_to_usd
from costwarden.engine.admission import Settled
from costwarden.engine.status import BudgetStatus

FLUSH_EVERY = 1000  # events whose metrics are held at most before they are applied
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass(slots=True)
class _Series:
    """The label children every event of one kind (department, model, status, decision) moves,
    and what its events added since the last flush. Token and cost series are looked up as they
    are needed (a series exists once it has moved) and kept in ``moved`` by token type ("cost":
    the cost's)."""

    place: tuple[str, str]  # department and model
    calls: Any
    decisions: Any
    latency: Any
    moved: dict[str, Any] = field(default_factory=dict)
    events: int = 0  # held since the last flush
    input: int = 0
    cached_input: int = 0
    output: int = 0
    cost: float = 0.0
    latencies: list[float] = field(default_factory=list)


class Metrics:
    """One registry per process (not the global one, so that several apps can live in one test)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = Counter("costwarden_calls", "Admitted calls", ["department", "model", "status"],
                             registry=self.registry)
        self.rejections = Counter("costwarden_rejections", "Refused calls", ["department", "code"],
                                  registry=self.registry)
        self.tokens = Counter("costwarden_tokens", "Tokens served", ["department", "model", "type"],
                              registry=self.registry)
        self.cost = Counter("costwarden_cost_usd", "Settled cost in USD (the ledger is exact; this is for graphs)",
                            ["department", "model"], registry=self.registry)
        self.decisions = Counter("costwarden_decisions", "Admission decisions", ["department", "decision"],
                                 registry=self.registry)
        self.latency = Histogram("costwarden_call_duration_seconds", "Call duration through the gateway",
                                 ["department", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.counter_drift = Gauge("costwarden_counter_drift_nanodollars",
                                   "Settled spend on a budget counter minus the ledger's, confirmed by the "
                                   "reconciler (tokens for a token budget); 0 when healthy", ["budget"],
                                   registry=self.registry)
        budget_labels = ["scope", "index", "period"]  # the budget's scope id, its place in the scope's list
        self.budget_spent = Gauge("costwarden_budget_spent_usd", "Settled spend of a USD budget in its current "
                                  "period, read from the counters at scrape time", budget_labels,
                                  registry=self.registry)
        self.budget_limit = Gauge("costwarden_budget_limit_usd", "Limit of a USD budget", budget_labels,
                                  registry=self.registry)
        self.budget_utilization = Gauge("costwarden_budget_utilization", "Settled spend over the limit of a "
                                        "budget (1 = exhausted), USD and token budgets", budget_labels,
                                        registry=self.registry)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        # Increments are held on their series and applied in bulk (prometheus_client takes a lock
        # per increment): at every render, and every FLUSH_EVERY events so that nothing grows
        # without a scrape. ``_moving``: the series holding some.
        self._moving: list[_Series] = []
        self._held = 0

    def on_event(self, event: UsageEvent, settled: Settled | None) -> None:
        dept, model = event.department, event.model_served
        key = (dept, model, event.status, event.decision)
        series = self._series.get(key)
        if series is None:  # the label children of this kind of event, looked up once
            series = self._series[key] = _Series(
                (dept, model), self._child(self.calls, dept, model, event.status),
                self._child(self.decisions, dept, event.decision), self._child(self.latency, dept, model))
        if not series.events:
            self._moving.append(series)
        series.events += 1
        series.input += event.input_tokens - event.cached_input_tokens
        series.cached_input += event.cached_input_tokens
        series.output += event.output_tokens
        nanos = event.cost_nanos
        if nanos:
            series.cost += nanos / 1e9 if nanos < 2**53 else float(nanos_to_usd(nanos))  # float(Decimal)'s double
        series.latencies.append(event.latency_ms / 1000)
        self._held += 1
        if self._held >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Apply the increments held since the last flush (``render`` does it first)."""
        moving, self._moving = self._moving, []
        self._held = 0
        for series in moving:
            series.calls.inc(series.events)
            series.decisions.inc(series.events)
            for kind in ("input", "cached_input", "output"):
                count = getattr(series, kind)
                if count:
                    self._moved(series, kind, self.tokens, kind).inc(count)
            if series.cost:
                self._moved(series, "cost", self.cost).inc(series.cost)
            for value in series.latencies:
                series.latency.observe(value)
            series.events = series.input = series.cached_input = series.output = 0
            series.cost = 0.0
            series.latencies = []

    def _moved(self, series: _Series, name: str, metric: Counter, *label: str) -> Any:
        """The child of ``metric`` that ``series`` moves by ``name`` (``label``: past department and model)."""
        child = series.moved.get(name)
        if child is None:
            child = series.moved[name] = self._child(metric, *series.place, *label)
        return child

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: prometheus_client validates and locks on each look-up."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def on_rejection(self, rejection: Rejection) -> None:
        self.rejections.labels(rejection.department or "", rejection.code).inc()
        self.decisions.labels(rejection.department or "", "reject").inc()

    def set_drift(self, drift: Mapping[str, int]) -> None:
        """Publish the reconciler's last figures, one series per budget counter it checked."""
        self.counter_drift.clear()  # counters of past periods leave with their period
        for budget, amount in drift.items():
            self.counter_drift.labels(budget).set(amount)

    def set_budgets(self, statuses: Iterable[BudgetStatus]) -> None:
        """Publish one series per budget of the organization, its departments and teams (per-key and
        per-user budgets are left out: one series per key or user would grow without bound)."""
        self.clear_budgets()  # budgets a reload removed leave with it
        for status in statuses:
            budget = status.budget
            labels = (status.scope.id, str(status.check.index), budget.period.text)
            if budget.unit == "usd":
                self.budget_spent.labels(*labels).set(float(nanos_to_usd(status.spent)))
                self.budget_limit.labels(*labels).set(float(nanos_to_usd(budget.limit)))
            share = Fraction(status.spent, budget.limit) if budget.limit > 0 else Fraction(0)
            self.budget_utilization.labels(*labels).set(float(share))

    def clear_budgets(self) -> None:
        """Drop the budget series (the counters could not be read: no stale figures)."""
        for gauge in (self.budget_spent, self.budget_limit, self.budget_utilization):
            gauge.clear()

    def render(self) -> bytes:
        self.flush()
        return generate_latest(self.registry)
