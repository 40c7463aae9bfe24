"""Invariant 1 through the real gateway: concurrent calls never push a hard budget past its limit,
and the ledger's tokens equal what the upstream says it served."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from costwarden.core.money import usd_to_nanos
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, start_gateway

# gpt-4o-mini: a call of ~10 input tokens and 1,000 output costs about $0.0006, so the HR budget
# of $0.012 fits about 20 worst cases; 300 arrive at once.
CAP_POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.012, period: monthly, action: reject}]
""" + PLAIN_DEPARTMENTS
LIMIT = usd_to_nanos("0.012")


@pytest.fixture
def capped(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    httpx.post(f"{mock_url}/mock/reset")
    yield from start_gateway(tmp_path, mock_url, CAP_POLICY)


async def _burst(gw: Gateway, calls: int, stream_every: int) -> list[int]:
    limits = httpx.Limits(max_connections=calls)
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=limits) as client:
        async def one(i: int) -> int:
            body = {"model": "gpt-4o-mini", "max_tokens": 1000,
                    "messages": [{"role": "user", "content": f"call {i} #mock output_tokens=1000"}]}
            if i % stream_every == 0:
                body["stream"] = True
            reply = await client.post("/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {gw.keys['HR']}"})
            return reply.status_code

        return await asyncio.gather(*(one(i) for i in range(calls)))


def test_300_concurrent_calls_never_overrun_the_budget(capped: Gateway) -> None:
    statuses = asyncio.run(_burst(capped, 300, stream_every=5))
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    assert 15 <= admitted <= 40  # about 20 worst cases fit; clamped calls may squeeze in a few more
    events = capped.ledger_query(lambda ledger: ledger.list_events(limit=1000))
    assert len(events) == admitted
    settled = sum(e.cost_nanos for e in events)
    assert settled <= LIMIT
    assert all(e.overrun_tokens == 0 for e in events)
    served = capped.mock_stats()
    assert served["input_tokens"] == sum(e.input_tokens for e in events)
    assert served["output_tokens"] == sum(e.output_tokens for e in events)
    rejections = capped.ledger_query(lambda ledger: ledger.count_rejections())
    assert rejections == 300 - admitted
