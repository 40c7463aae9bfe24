"""On shared counters (Redis), a call's forwarding is prepared while its reservation is answered;
the call uses that work only when admitted with the decision it was made for. A decision changed
by the store's answer (a lowered output bound) is prepared again, and a refusal forwards and
begins nothing. Real Redis behind a relay that holds answers, a real SQLite ledger."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from answer_gate import AnswerGate
from clock import FakeClock
from costwarden import errors
from costwarden.app.auth import Attribution
from costwarden.app.generation import Generation
from costwarden.app.service import Answer, GatewayService
from costwarden.core.scopes import Caller, Planner
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.admission import Admission
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from costwarden.providers import ENDPOINTS, Prepared, Reply
from service_doubles import ANSWER, FakeObserver, FakeUpstream

pytestmark = pytest.mark.service

# $0.001: 1,000,000 nano-dollars; gpt-4o-mini costs 150 per input token and 600 per output token
POLICY = parse_policy("""
version: 1
departments:
  HR:
    budgets: [{limit: 0.001, period: monthly, action: reject}]
""")
CHAT = ENDPOINTS["/v1/chat/completions"]
WHO = Attribution(Caller("HR"))
WAIT_S = 10.0  # a deadline, never a pause


def payload() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200}


class CountingChat:
    """The chat endpoint, counting the requests it prepares for the upstream."""

    def __init__(self) -> None:
        self.prepared = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(CHAT, name)

    def prepare(self, *args: Any, **kwargs: Any) -> Prepared:
        self.prepared += 1
        return CHAT.prepare(*args, **kwargs)


class RecordingUpstream(FakeUpstream):
    """Keeps the bodies it is sent."""

    def __init__(self, body: bytes = orjson.dumps(ANSWER)) -> None:
        super().__init__(body)
        self.bodies: list[dict[str, Any]] = []

    async def post(self, upstream_name: str, path: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        self.bodies.append(orjson.loads(body))
        return await super().post(upstream_name, path, body, headers)


@dataclass
class Replica:
    service: GatewayService
    generation: Generation
    upstream: RecordingUpstream
    store: RedisCounterStore

    async def call(self, endpoint: Any = CHAT) -> Answer:
        answer = await self.service.call(self.generation, endpoint, payload(), WHO, {})
        assert isinstance(answer, Answer)
        return answer


@pytest.fixture
async def world(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[AnswerGate, Replica, Replica, Ledger]]:
    """Two replicas on one Redis and one ledger; the first reaches Redis through an ``AnswerGate``.
    The second's upstream reports ``prompt_tokens`` as the test sets them, to spend the budget."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    gate = await AnswerGate(port).start()
    prefix = f"prep{uuid.uuid4().hex[:8]}:"
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    clock = FakeClock()
    replicas = []
    for where in (f"redis://127.0.0.1:{gate.port}/0", redis_url):
        store = RedisCounterStore(Redis.from_url(where, decode_responses=True, socket_timeout=3 * WAIT_S),
                                  key_prefix=prefix)
        upstream = RecordingUpstream()
        service = GatewayService(Admission(store, clock), ledger, FakeObserver(), clock, prepare_while_reserving=True)
        replicas.append(Replica(service, Generation(Planner(POLICY), upstream, version=1), upstream, store))
    await replicas[0].store.replace([], "m1")
    try:
        yield gate, replicas[0], replicas[1], ledger
    finally:
        gate.release()
        await ledger.close()
        for replica in replicas:
            await replica.store.close()
        await gate.close()


async def spend(replica: Replica, input_tokens: int) -> None:
    """Spend ``input_tokens`` x 150 nano-dollars of the budget through ``replica``."""
    usage = {"prompt_tokens": input_tokens, "completion_tokens": 0, "total_tokens": input_tokens}
    replica.upstream.body = orjson.dumps({**ANSWER, "usage": usage})
    await replica.call()


async def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)  # polling interval


async def test_the_request_is_prepared_while_the_reservation_is_answered(world: Any) -> None:
    gate, first, _, ledger = world
    await first.call()  # the store's figures are known from here: one round trip per call
    chat = CountingChat()
    gate.hold_next()  # the reservation's answer
    calling = asyncio.create_task(first.call(chat))
    await asyncio.wait_for(gate.held.wait(), WAIT_S)
    await until(lambda: chat.prepared == 1, "nothing was prepared while the reservation was answered")
    assert await ledger.count_inflight() == 0  # nothing is begun before the call is admitted
    assert len(first.upstream.bodies) == 1
    gate.release()
    answer = await asyncio.wait_for(calling, WAIT_S)
    assert answer.status == 200 and chat.prepared == 1  # the prepared request was the one sent
    assert first.upstream.bodies[-1]["max_tokens"] == 200
    assert len(await ledger.list_events()) == 2


async def test_a_bound_lowered_on_the_stores_answer_is_prepared_again(world: Any) -> None:
    _, first, second, _ = world
    await first.call()
    # The other replica leaves about 60,000 nano-dollars (room for about 100 output tokens): the
    # first decides on its older figures, the store refuses that reservation, and the call is
    # admitted with a lower output bound.
    await spend(second, 6_240)
    chat = CountingChat()
    answer = await first.call(chat)
    decision = answer.receipt.decision
    assert decision.clamped and decision.output_tokens < 200
    assert chat.prepared == 2
    assert first.upstream.bodies[-1]["max_tokens"] == decision.output_tokens


async def test_a_call_the_stores_answer_refuses_forwards_and_begins_nothing(world: Any) -> None:
    _, first, second, ledger = world
    await first.call()
    await spend(second, 10_000)  # the budget is spent, which the first replica has not seen
    chat = CountingChat()
    with pytest.raises(errors.CostwardenError) as refused:
        await first.call(chat)
    assert refused.value.code == "budget_exceeded"
    assert chat.prepared == 1  # prepared for the decision sent, then dropped
    assert len(first.upstream.bodies) == 1
    assert await ledger.count_inflight() == 0
    assert [r.code for r in await ledger.list_rejections()] == ["budget_exceeded"]
