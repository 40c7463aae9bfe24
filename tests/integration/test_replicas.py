"""Invariant 1 with scale-out: two gateway replicas sharing Redis counters and a PostgreSQL ledger
never let a hard budget overrun, and alerts fire once across both."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis

from costwarden.core.money import usd_to_nanos
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, start_gateway

POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.012, period: monthly, alert_at: [0.5], action: reject}]
""" + PLAIN_DEPARTMENTS
replica = contextmanager(start_gateway)


async def _burst(urls: list[str], key: str, calls: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=calls)) as client:
        async def one(i: int) -> int:
            reply = await client.post(f"{urls[i % len(urls)]}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                      json={"model": "gpt-4o-mini", "max_tokens": 1000,
                                            "messages": [{"role": "user", "content": f"{i} #mock output_tokens=1000"}]})
            return reply.status_code

        return await asyncio.gather(*(one(i) for i in range(calls)))


def test_two_replicas_share_the_hard_cap(tmp_path: Path, mock_url: str, redis_url: str,
                                         postgres_database: str) -> None:
    redis.Redis.from_url(redis_url).flushdb()
    with ExitStack() as stack:
        first: Gateway = stack.enter_context(replica(tmp_path / "a", mock_url, POLICY, redis_url=redis_url,
                                                     db_url=postgres_database))
        second: Gateway = stack.enter_context(replica(tmp_path / "b", mock_url, POLICY, redis_url=redis_url,
                                                      db_url=postgres_database))
        statuses = asyncio.run(_burst([first.url, second.url], first.keys["HR"], 200))
        events = first.ledger_query(lambda ledger: ledger.list_events(limit=1000))
        alerts = first.ledger_query(lambda ledger: ledger.list_alerts())
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429} and 15 <= admitted <= 40
    assert len(events) == admitted
    assert sum(e.cost_nanos for e in events) <= usd_to_nanos("0.012")
    # once across both replicas: the 50% threshold, and the budget refusing its first call
    assert sorted((a.kind, a.threshold or "") for a in alerts if a.department == "HR") == [
        ("exhausted", ""), ("threshold", "0.5")]
