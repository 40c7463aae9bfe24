"""Closing a call on Redis and a real ledger: the event is committed while the settlement is
still on its way to the counter store, and both end as they would one after the other."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
from redis.asyncio import Redis

from answer_gate import AnswerGate
from clock import FakeClock
from costwarden.app.auth import Attribution
from costwarden.app.generation import Generation
from costwarden.app.service import Answer, GatewayService
from costwarden.core.scopes import Caller, Planner, plan_for
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.admission import Admission
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from costwarden.providers import ENDPOINTS, Reply
from service_doubles import FakeObserver, FakeUpstream

pytestmark = pytest.mark.service

POLICY = parse_policy("""
version: 1
departments:
  HR:
    budgets: [{limit: 10, period: monthly, action: reject}]
""")
CHAT = ENDPOINTS["/v1/chat/completions"]
PAYLOAD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 50}
WAIT_S = 10.0  # a deadline, never a pause: each wait ends as soon as what it waits for happens


class HeldUpstream(FakeUpstream):
    """Answers once the test lets it, after saying the call reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.go = asyncio.Event()

    async def post(self, upstream_name: str, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        self.reached.set()
        await self.go.wait()
        return await super().post(upstream_name, path, body, headers)


async def test_the_event_is_committed_while_the_settlement_is_in_flight(redis_url: str, tmp_path: Path) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    gate = await AnswerGate(port).start()
    # answers wait as long as the test holds them, not the 2 s a live store allows
    client = Redis.from_url(f"redis://127.0.0.1:{gate.port}/0", decode_responses=True, socket_timeout=3 * WAIT_S)
    store = RedisCounterStore(client, key_prefix=f"close{uuid.uuid4().hex[:8]}:")
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    clock = FakeClock()
    upstream = HeldUpstream()
    service = GatewayService(Admission(store, clock), ledger, FakeObserver(), clock)
    generation = Generation(Planner(POLICY), upstream, version=1)
    try:
        await store.replace([], "m1")
        calling = asyncio.create_task(service.call(generation, CHAT, dict(PAYLOAD), Attribution(Caller("HR")), {}))
        await asyncio.wait_for(upstream.reached.wait(), WAIT_S)
        gate.hold_next()  # the next answer from Redis is the settlement's
        upstream.go.set()
        await asyncio.wait_for(gate.held.wait(), WAIT_S)
        [event] = await asyncio.wait_for(_first_event(ledger), WAIT_S)  # committed meanwhile
        assert not calling.done()  # the client is answered only once both are done
        gate.release()
        answer = await asyncio.wait_for(calling, WAIT_S)
        assert isinstance(answer, Answer) and answer.receipt.cost_nanos == event.cost_nanos > 0
        plan = plan_for(POLICY, Caller("HR"), clock())
        snapshot = await store.snapshot(plan.windows, (), clock().timestamp())
        assert snapshot.usage == [(event.cost_nanos, 0)]  # settled at the event's price, hold freed
    finally:
        gate.release()
        await ledger.close()
        await store.close()
        await gate.close()


async def _first_event(ledger: Ledger) -> list[object]:
    while not (events := await ledger.list_events()):
        await asyncio.sleep(0.01)  # polling the ledger, bounded by the caller's deadline
    return list(events)
