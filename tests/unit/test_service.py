"""GatewayService driven through its ports with fakes: every failure inside a call still frees its
reservation and records its event, and a failing counter store never fails a served call."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest

from clock import FakeClock
from costwarden import errors
from costwarden.app.auth import Attribution
from costwarden.app.generation import Generation
from costwarden.app.service import Answer, GatewayService, Streaming
from costwarden.core.events import InflightCall, Rejection, UsageEvent
from costwarden.core.kinds import CallStatus
from costwarden.core.scopes import Caller, Planner, plan_for
from costwarden.counters import MemoryCounterStore
from costwarden.engine.admission import Admission
from costwarden.policy import parse_policy
from costwarden.providers import ENDPOINTS
from service_doubles import FakeObserver, FakeUpstream

POLICY = parse_policy("""
version: 1
departments:
  HR:
    budgets: [{limit: 0.0001, period: monthly, action: reject}]
""")
CHAT = ENDPOINTS["/v1/chat/completions"]
WHO = Attribution(Caller("HR"))


class FakeLedger:
    """Keeps what the service writes; ``fail_begin`` makes the write-ahead step raise."""

    def __init__(self, fail_begin: bool = False) -> None:
        self.fail_begin = fail_begin
        self.accepting = True
        self.begun: list[InflightCall] = []
        self.events: list[UsageEvent] = []
        self.rejections: list[Rejection] = []

    def check_accepting(self) -> None:
        if not self.accepting:
            raise errors.StorageError("ledger down")

    def begin(self, call: InflightCall) -> None:
        if self.fail_begin:
            raise RuntimeError("write-ahead queue broke")
        self.begun.append(call)

    def queue(self, event: UsageEvent) -> Awaitable[None]:
        self.events.append(event)
        return _durable()

    async def record_rejection(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)


async def _durable() -> None:
    """Kept in memory: durable at once."""


class BrokenPrepare:
    """The chat endpoint, but rewriting the request for the upstream fails."""

    def __getattr__(self, name: str) -> Any:
        return getattr(CHAT, name)

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("cannot rewrite this request")


class SettleFails(MemoryCounterStore):
    """A store that goes away between admission and settlement."""

    async def settle(self, reservation: Any, amounts: Any) -> list[tuple[int, int]]:
        raise errors.StorageError("counter store unreachable")


def service_over(ledger: FakeLedger, store: MemoryCounterStore | None = None,
                 upstream: FakeUpstream | None = None) -> tuple[GatewayService, Generation, MemoryCounterStore]:
    store = store or MemoryCounterStore()
    clock = FakeClock()
    generation = Generation(Planner(POLICY), upstream or FakeUpstream(), version=1)
    return GatewayService(Admission(store, clock), ledger, FakeObserver(), clock), generation, store


async def held(store: MemoryCounterStore) -> tuple[int, int]:
    """(spent, reserved) on HR's monthly budget."""
    plan = plan_for(POLICY, Caller("HR"), FakeClock()())
    snapshot = await store.snapshot(plan.windows, (), FakeClock()().timestamp())
    [hr] = [u for check, u in zip(plan.budgets, snapshot.usage, strict=False) if check.scope.kind == "department"]
    return hr


def payload(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50, **extra}


async def test_a_served_call_is_settled_and_recorded_once() -> None:
    ledger = FakeLedger()
    service, generation, store = service_over(ledger)
    result = await service.call(generation, CHAT, payload(), WHO, {})
    assert isinstance(result, Answer) and result.status == 200
    [event] = ledger.events
    assert (event.input_tokens, event.output_tokens, event.status) == (12, 3, CallStatus.OK)
    assert result.receipt.cost_nanos == event.cost_nanos > 0
    assert await held(store) == (event.cost_nanos, 0)


async def test_a_call_the_ledger_could_not_record_is_refused_before_anything_happens() -> None:
    ledger = FakeLedger()
    ledger.accepting = False
    upstream = FakeUpstream()
    service, generation, store = service_over(ledger, upstream=upstream)
    with pytest.raises(errors.StorageError):
        await service.call(generation, CHAT, payload(), WHO, {})
    assert upstream.calls == 0 and ledger.begun == [] and ledger.events == []
    assert await held(store) == (0, 0)


async def test_a_failing_write_ahead_step_frees_the_reservation_and_records_the_call() -> None:
    ledger = FakeLedger(fail_begin=True)
    upstream = FakeUpstream()
    service, generation, store = service_over(ledger, upstream=upstream)
    with pytest.raises(errors.CostwardenError) as failed:
        await service.call(generation, CHAT, payload(), WHO, {})
    assert failed.value.status == 500 and "not charged" in failed.value.message
    assert upstream.calls == 0
    [event] = ledger.events
    assert (event.status, event.cost_nanos) == (CallStatus.GATEWAY_ERROR, 0)
    assert await held(store) == (0, 0)


async def test_a_failing_prepare_frees_the_reservation_and_records_the_call() -> None:
    ledger = FakeLedger()
    service, generation, store = service_over(ledger)
    with pytest.raises(errors.CostwardenError):
        await service.call(generation, BrokenPrepare(), payload(), WHO, {})  # type: ignore[arg-type]
    assert [e.status for e in ledger.events] == [CallStatus.GATEWAY_ERROR]
    assert await held(store) == (0, 0)


async def test_a_store_that_fails_at_settlement_never_fails_a_served_call() -> None:
    ledger = FakeLedger()
    service, generation, _ = service_over(ledger, store=SettleFails())
    result = await service.call(generation, CHAT, payload(), WHO, {})
    assert isinstance(result, Answer) and result.status == 200
    [event] = ledger.events
    expected = POLICY.catalog["gpt-4o-mini"].cost(12, 3, 0)
    assert (event.status, event.cost_nanos, result.receipt.cost_nanos) == (CallStatus.OK, expected, expected)


async def test_a_disconnected_stream_is_charged_for_what_it_produced() -> None:
    chunks = tuple(b'data: {"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
                   b'{"content":"word "}}]}\n\n' for _ in range(5))
    ledger = FakeLedger()
    service, generation, store = service_over(ledger, upstream=FakeUpstream(chunks=chunks))
    result = await service.call(generation, CHAT, payload(stream=True), WHO, {})
    assert isinstance(result, Streaming)
    async for chunk in result.reply.chunks:
        result.tap.feed(chunk)
    await result.finish(CallStatus.CLIENT_DISCONNECT)
    await result.resources.aclose()
    [event] = ledger.events
    assert event.status == CallStatus.CLIENT_DISCONNECT
    assert event.output_tokens >= 5 and event.cost_nanos > 0
    assert await held(store) == (event.cost_nanos, 0)


async def test_a_refused_call_is_recorded_and_named() -> None:
    ledger = FakeLedger()
    service, generation, store = service_over(ledger)
    with pytest.raises(errors.BudgetExceeded) as refused:
        await service.call(generation, CHAT, payload(max_tokens=None, model="gpt-4o"), WHO, {})
    assert refused.value.request_id is not None and refused.value.department == "HR"
    assert [r.code for r in ledger.rejections] == ["budget_exceeded"] and not ledger.events
    assert await held(store) == (0, 0)


async def test_an_exhausted_hard_budget_alerts_once_with_an_actionable_sentence() -> None:
    ledger = FakeLedger()
    service, generation, _ = service_over(ledger)
    observer = service.observer
    assert isinstance(observer, FakeObserver)
    for _ in range(3):
        with pytest.raises(errors.BudgetExceeded):
            await service.call(generation, CHAT, payload(max_tokens=None, model="gpt-4o"), WHO, {})
    [alert] = observer.alerts
    assert alert.kind == "exhausted" and alert.department == "HR"  # type: ignore[attr-defined]
    assert alert.text.startswith("HR has used up its $0.00 monthly budget")  # type: ignore[attr-defined]
    assert "calls that do not fit are refused until it resets 2026-12-01" in alert.text  # type: ignore[attr-defined]


async def test_a_tier_restriction_alerts_once_when_it_starts() -> None:
    policy = parse_policy("""
version: 1
departments:
  ENGINEERING:
    budgets: [{limit: 0.0001, period: monthly, action: {restrict_tiers: [1]}}]
""")
    store, clock, observer = MemoryCounterStore(), FakeClock(), FakeObserver()
    service = GatewayService(Admission(store, clock), FakeLedger(), observer, clock)
    generation = Generation(Planner(policy), FakeUpstream(), version=1)
    who = Attribution(Caller("ENGINEERING"))
    for _ in range(3):
        result = await service.call(generation, CHAT, payload(model="gpt-4o", max_tokens=None), who, {})
        assert isinstance(result, Answer) and result.receipt.decision.downgraded_from == "gpt-4o"
    [alert] = observer.alerts
    assert alert.kind == "action"  # type: ignore[attr-defined]
    assert "from now until 2026-12-01 only tier 1 models are served" in alert.text  # type: ignore[attr-defined]
