"""Admission on Redis in one round trip, settlement (with its alert claims) in one more, counted
on the server; and decisions made on remembered figures that other replicas have since moved are
the decisions those replicas' figures give, with the hard cap and the rate limit never passed."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from clock import FakeClock
from costwarden.core.decision import CallRequest, Decision, decide
from costwarden.core.scopes import Caller, Planner
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.admission import Admission, Admitted
from costwarden.policy import parse_policy
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, start_gateway

pytestmark = pytest.mark.service

# gpt-4o-mini at $0.15 / $0.60 per 1M tokens: a call of 1,000 input tokens and at most 1,000 output
# costs at most $0.00075, so the HR budget of $0.01 fits 13 worst cases.
LIMIT = 10_000_000
RPM = 40
POLICY = parse_policy(f"""
version: 1
departments:
  HR:
    budgets: [{{limit: 0.01, period: monthly, alert_at: [0.5, 0.9], action: reject}}]
    limits: {{rpm: {RPM}, tpm: 100000000}}
    per_key:
      budgets: [{{limit: 0.004, period: 1h, action: reject}}]
""")
SCRIPTS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")


def call(key: str = "k1", output: int = 1000) -> CallRequest:
    return CallRequest(Caller("HR", key_id=key), "gpt-4o-mini", 1000, output)


class ServerCounts:
    """Scripts run and requests read by the Redis server since ``reset`` (INFO, CONFIG RESETSTAT)."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    async def reset(self) -> None:
        await self.client.config_resetstat()

    async def read(self) -> tuple[int, int]:
        requests = int((await self.client.info("stats"))["total_reads_processed"]) - 1  # less this INFO
        stats = await self.client.info("commandstats")
        scripts = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in SCRIPTS)
        return scripts, requests


@pytest.fixture
async def server(redis_url: str) -> AsyncIterator[tuple[str, ServerCounts]]:
    client = Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield redis_url, ServerCounts(client)
    finally:
        await client.aclose()


async def test_an_admitted_call_takes_one_round_trip_and_its_settlement_one_more(
        server: tuple[str, ServerCounts]) -> None:
    url, counts = server
    store = RedisCounterStore.from_url(url, replica="a")
    try:
        await store.replace([], "build-1")
        admission, planner = Admission(store, FakeClock()), Planner(POLICY)
        warm = await admission.admit("warm", call("k0", 10), planner)  # loads the scripts, learns the figures
        assert isinstance(warm, Admitted)
        await admission.settle(warm, 1000, 10)
        await counts.reset()
        crossings = []
        for i in range(12):  # spread over keys whose figures were never seen: still one round trip
            admitted = await admission.admit(f"c{i}", call(f"k{i % 4}"), planner)
            assert isinstance(admitted, Admitted), admitted
            settled = await admission.settle(admitted, 1000, 1000)
            crossings += [c.fraction for c in settled.crossings]
        scripts, requests = await counts.read()
    finally:
        await store.close()
    # keys k1..k3 were never seen: their first call reads the figures once (3 reads), every other
    # admission and every settlement, alert claims included, is one script
    assert (scripts, requests) == (2 * 12 + 3, 2 * 12 + 3)
    assert [str(f) for f in crossings] == ["0.5", "0.9"]  # each threshold alerts once


async def admit_all(admission: Admission, planner: Planner, ids: list[str], key: str,
                    outputs: list[int]) -> list[Admitted | Decision]:
    return list(await asyncio.gather(*(admission.admit(i, call(key, o), planner) for i, o in zip(ids, outputs,
                                                                                                   strict=True))))


BATCH = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["k1", "k2"]), st.integers(1, 6),
                           st.sampled_from([1000, 300, 70]), st.booleans()), min_size=1, max_size=6)


@settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=BATCH)
async def test_stale_figures_on_three_replicas_never_pass_a_cap_and_decide_as_fresh_ones(
        server: tuple[str, ServerCounts], batches: list[tuple[int, str, int, int, bool]]) -> None:
    url, counts = server
    await counts.client.flushdb()
    stores = [RedisCounterStore.from_url(url, replica=name) for name in "abc"]
    observer = RedisCounterStore.from_url(url, replica="observer")
    try:
        await stores[0].replace([], "build-1")
        clock = FakeClock()
        admissions = [Admission(store, clock) for store in stores]
        planner = Planner(POLICY)
        plan = planner.plan(Caller("HR", key_id="k1"), clock(), clock().timestamp())
        for serial, (replica, key, many, output, settle) in enumerate(batches):
            # one call alone: decided on this replica's remembered figures, which the others moved
            # since; it must be what the figures just read decide
            solo_plan = planner.plan(Caller("HR", key_id=key), clock(), clock().timestamp())
            fresh = await observer.snapshot(solo_plan.windows, solo_plan.flag_keys, clock().timestamp())
            expected = decide(POLICY, call(key, output), solo_plan, fresh.usage, fresh.flags, clock())
            solo = await admissions[replica].admit(f"s{serial}", call(key, output), planner)
            got = solo.decision if isinstance(solo, Admitted) else solo
            assert got == expected
            # then many at once on every replica, holding until all are in
            held: list[tuple[Admission, Admitted]] = [] if not isinstance(solo, Admitted) else \
                [(admissions[replica], solo)]
            rounds = await asyncio.gather(*(admit_all(a, planner, [f"m{serial}-{n}-{i}" for i in range(many)], key,
                                                      [output] * many) for n, a in enumerate(admissions)))
            for admission, outcomes in zip(admissions, rounds, strict=True):
                held += [(admission, o) for o in outcomes if isinstance(o, Admitted)]
            usage = (await observer.snapshot(plan.windows, (), clock().timestamp())).usage
            assert sum(usage[1]) <= LIMIT  # the department budget, reservations included
            assert sum(usage[2]) <= RPM  # the rate limit, within its minute
            await asyncio.gather(*(a.settle(o, 1000, o.decision.output_tokens) if settle else a.release(o)
                                   for a, o in held))
        usage = (await observer.snapshot(plan.windows, (), clock().timestamp())).usage
        assert usage[1][0] <= LIMIT and usage[1][1] == 0
    finally:
        for store in [*stores, observer]:
            await store.close()


GATEWAY_POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.004, period: monthly, alert_at: [0.2, 0.9], action: reject}]
    limits: {rpm: 100000, tpm: 100000000}
""" + PLAIN_DEPARTMENTS


def test_a_gateway_call_on_redis_runs_two_scripts(tmp_path: Path, mock_url: str, redis_url: str) -> None:
    """Through the real gateway: one script admits a call, one settles it and claims its alerts;
    whatever else the server runs meanwhile is the gateway's background work (a few a second)."""
    client = SyncRedis.from_url(redis_url)
    client.flushdb()
    calls = 100
    body = {"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi #mock output_tokens=20"}]}
    try:
        with contextmanager(start_gateway)(tmp_path, mock_url, GATEWAY_POLICY, redis_url=redis_url) as gw, \
                httpx.Client(base_url=gw.url, timeout=30, headers={"Authorization": f"Bearer {gw.keys['HR']}"}) as http:
            assert http.post("/v1/chat/completions", json=body).status_code == 200  # scripts loaded, figures seen
            client.config_resetstat()
            started = time.monotonic()
            statuses = [http.post("/v1/chat/completions", json=body).status_code for _ in range(calls)]
            elapsed = time.monotonic() - started
            stats = client.info("commandstats")
            alerts = gw.ledger_query(lambda ledger: ledger.list_alerts())
    finally:
        client.close()
    assert statuses == [200] * calls
    scripts = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in SCRIPTS)
    background = 8 * (math.ceil(elapsed) + 1)  # an upkeep tick a second runs a few commands at most
    assert 2 * calls <= scripts <= 2 * calls + background, (scripts, elapsed)
    assert any(a.kind == "threshold" and a.threshold == "0.2" for a in alerts)  # claimed inside the settlement
