"""Prometheus metrics: calls, tokens, cost and decisions by department, model and outcome."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from costwarden.admission import Settled
from costwarden.core.events import Rejection, UsageEvent
from costwarden.core.money import nanos_to_usd

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


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

    def on_event(self, event: UsageEvent, settled: Settled | None) -> None:
        dept, model = event.department, event.model_served
        self.calls.labels(dept, model, event.status).inc()
        self.decisions.labels(dept, event.decision).inc()
        for kind, count in (("input", event.input_tokens - event.cached_input_tokens),
                            ("cached_input", event.cached_input_tokens), ("output", event.output_tokens)):
            if count:
                self.tokens.labels(dept, model, kind).inc(count)
        if event.cost_nanos:
            self.cost.labels(dept, model).inc(float(nanos_to_usd(event.cost_nanos)))
        self.latency.labels(dept, model).observe(event.latency_ms / 1000)

    def on_rejection(self, rejection: Rejection) -> None:
        self.rejections.labels(rejection.department or "", rejection.code).inc()
        self.decisions.labels(rejection.department or "", "reject").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
