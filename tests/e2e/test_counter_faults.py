"""SPEC section 10, counter store lines, with real processes: Redis restarted empty or killed -9
under load, and one of three gateway replicas killed -9. After recovery the ledger's tokens equal
what the upstream mock served, the counters equal the ledger, and no hard budget passed its limit."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis

from costwarden.core.events import UsageEvent
from costwarden.core.money import usd_to_nanos
from costwarden.core.policy import Policy
from costwarden.counters.redis import RedisCounterStore
from costwarden.engine.rebuild import ledger_spend, ledger_totals
from costwarden.errors import StorageError
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from gateway_fixtures import DEPARTMENTS, PLAIN_DEPARTMENTS, UPSTREAMS, policy_text
from gateway_process import GatewayProcess, poll
from service_fixtures import RedisServer, free_port

pytestmark = pytest.mark.service

# gpt-4o-mini, ~15 input tokens and 1,000 output: about $0.0006 a call, so $0.05 fits ~80.
POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.05, period: monthly, action: reject}]
""" + PLAIN_DEPARTMENTS
LIMIT = usd_to_nanos("0.05")
REPLICAS_POLICY = UPSTREAMS + """
departments:
  HR:
    budgets: [{limit: 0.05, period: monthly, action: reject}]
  MARKETING:
    budgets: [{limit: 1, period: monthly, action: reject}]
  SALES: {}
  ENGINEERING: {}
  SUPPORT: {teams: {TIER1-DESK: {}}}
"""
LEASE_TTL_S = 3.0
TIMINGS = {"COSTWARDEN_RECONCILE_S": "1", "COSTWARDEN_LEASE_TTL_S": str(LEASE_TTL_S)}


def redis_replica(policy: Path, db_url: str, redis_url: str, log: Path) -> GatewayProcess:
    """A gateway sharing ``redis_url``, reconciling every second, with short leases."""
    return GatewayProcess(policy, db_url, free_port(), log, args=("--redis", redis_url), env=TIMINGS)


@dataclass
class Load:
    """Client threads calling gateways until stopped; every answer's status is kept."""

    urls: list[str]
    key: str
    directive: str = "output_tokens=1000"
    model: str = "gpt-4o-mini"
    statuses: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, workers: int) -> None:
        self.threads = [threading.Thread(target=self._work, args=(w,)) for w in range(workers)]
        for thread in self.threads:
            thread.start()

    def _work(self, worker: int) -> None:
        url = self.urls[worker % len(self.urls)]
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {self.key}"}) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {"model": self.model, "max_tokens": 1000, "stream": i % 3 == 0,
                        "messages": [{"role": "user", "content": f"w{worker} #{i} #mock {self.directive}"}]}
                try:
                    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                        reply.read()
                        self.statuses.append(reply.status_code)
                except httpx.TransportError:
                    return  # this worker's gateway died under it
                if self.statuses[-1] >= 500:
                    self.stop.wait(0.02)  # pacing while the store is down, not synchronization

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@dataclass
class Books:
    events: list[UsageEvent]
    inflight: int
    counters: dict[str, int]  # settled spend per budget counter
    ledger: dict[str, int]  # the ledger's, for the same counters
    reserved: int  # still held on the counters


def books(redis_url: str, db_url: str, policy: Policy) -> Books:
    async def read() -> Books:
        store = RedisCounterStore.from_url(redis_url, replica="observer")
        ledger = await Ledger.open(db_url)
        try:
            now = datetime.now(UTC)
            totals = ledger_totals(await ledger_spend(policy, ledger, now))
            keys = list(totals)
            usage = (await store.snapshot([totals[k][0].window for k in keys], [], now.timestamp())).usage
            return Books([e async for e in ledger.iter_events() if isinstance(e, UsageEvent)], await ledger.count_inflight(),
                         {k: spent for k, (spent, _) in zip(keys, usage, strict=True)},
                         {k: amount for k, (_, amount) in totals.items()}, sum(r for _, r in usage))
        finally:
            await ledger.close()
            await store.close()

    return asyncio.run(read())


def settled_books(redis_url: str, db_url: str, policy: Policy, timeout_s: float = 30) -> Books:
    """The books once counters equal the ledger with nothing reserved or in flight."""
    found: list[Books] = []

    def agree() -> bool:
        try:
            current = books(redis_url, db_url, policy)
        except StorageError:
            return False  # still being rebuilt
        found[:] = [current]
        return current.counters == current.ledger and current.reserved == 0 and current.inflight == 0

    try:
        poll(agree, timeout_s, "counters to equal the ledger")
    except AssertionError:
        last = found[0] if found else None
        state = last and f"counters {last.counters}, ledger {last.ledger}, reserved {last.reserved}, in flight {last.inflight}"
        raise AssertionError(f"the books never settled: {state}") from None
    return found[0]


def summary(statuses: list[int]) -> str:
    return ", ".join(f"{statuses.count(code)} x {code}" for code in sorted(set(statuses)))


def make_keys(db_url: str) -> dict[str, str]:
    async def create() -> dict[str, str]:
        ledger = await Ledger.open(db_url)
        try:
            return {d: (await ledger.create_key(d))[1] for d in DEPARTMENTS}
        finally:
            await ledger.close()

    return asyncio.run(create())


def assert_served_equals_ledger(mock_url: str, events: list[UsageEvent]) -> None:
    served = httpx.get(f"{mock_url}/mock/stats").json()
    assert served["input_tokens"] == sum(e.input_tokens for e in events)
    assert served["output_tokens"] == sum(e.output_tokens for e in events)


@pytest.fixture
def one_gateway(tmp_path: Path, mock_url: str, redis_server: RedisServer) -> Iterator[tuple[GatewayProcess, str]]:
    httpx.post(f"{mock_url}/mock/reset")
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    keys = make_keys(db_url)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(mock_url, POLICY))
    gateway = redis_replica(policy, db_url, redis_server.url, tmp_path / "gateway.log")
    gateway.start()
    try:
        yield gateway, keys["HR"]
    finally:
        gateway.stop()


def test_redis_restarted_empty_mid_run_keeps_the_cap_and_rebuilds_by_replacement(
        one_gateway: tuple[GatewayProcess, str], redis_server: RedisServer, mock_url: str) -> None:
    gateway, key = one_gateway
    load = Load([gateway.url], key)
    load.start(8)
    try:
        poll(lambda: load.statuses.count(200) >= 25, 30, "25 calls served")
        redis_server.restart()  # no persistence: every counter and reservation is gone
        poll(lambda: load.statuses.count(429) >= 40, 60, "the budget to be spent")
    finally:
        load.finish()
    assert set(load.statuses) <= {200, 429, 503}
    policy = parse_policy(policy_text(mock_url, POLICY))
    final = settled_books(redis_server.url, gateway.args[gateway.args.index("--db") + 1], policy)
    hr = sum(e.cost_nanos for e in final.events if e.department == "HR")
    print(f"Redis restarted empty: {summary(load.statuses)}; HR settled {hr * 100 / LIMIT:.1f}% of its hard budget")
    assert hr <= LIMIT, f"the hard budget let ${hr / 1e9} through, over its $0.05"
    assert hr > LIMIT * 9 // 10  # and it was spent, across the restart
    assert len(final.events) == load.statuses.count(200)
    assert_served_equals_ledger(mock_url, final.events)


def test_redis_killed_under_load_settles_every_served_call(
        one_gateway: tuple[GatewayProcess, str], redis_server: RedisServer, mock_url: str) -> None:
    gateway, key = one_gateway
    load = Load([gateway.url], key, directive="output_tokens=200 delay_ms=50")
    load.start(8)
    try:
        poll(lambda: load.statuses.count(200) >= 20, 30, "20 calls served")
        redis_server.kill()
        poll(lambda: load.statuses.count(503) >= 10, 30, "calls refused while Redis is down")
        redis_server.start()  # back, empty
        served = load.statuses.count(200)
        poll(lambda: load.statuses.count(200) >= served + 20, 30, "calls served again")
    finally:
        load.finish()
    assert set(load.statuses) <= {200, 429, 503}
    policy = parse_policy(policy_text(mock_url, POLICY))
    final = settled_books(redis_server.url, gateway.args[gateway.args.index("--db") + 1], policy)
    print(f"Redis killed -9: {summary(load.statuses)}")
    assert final.inflight == 0  # no served call kept its write-ahead row
    assert len(final.events) == load.statuses.count(200)
    assert sum(e.cost_nanos for e in final.events if e.department == "HR") <= LIMIT
    assert_served_equals_ledger(mock_url, final.events)


def owners(client: redis.Redis) -> list[str]:
    """The replica owning each open reservation."""
    return [json.loads(record)["o"] for record in client.hvals("cw:reservations")]


def test_a_killed_replica_has_its_calls_settled_by_the_others(
        tmp_path: Path, mock_url: str, redis_server: RedisServer, postgres_database: str) -> None:
    httpx.post(f"{mock_url}/mock/reset")
    keys = make_keys(postgres_database)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_text(mock_url, REPLICAS_POLICY))
    replicas = [redis_replica(policy_file, postgres_database, redis_server.url, tmp_path / f"gateway-{i}.log")
                for i in range(3)]
    client = redis.Redis.from_url(redis_server.url)
    try:
        for replica in replicas:
            replica.launch()
        for replica in replicas:
            replica.wait_ready()
        # The doomed replica's calls (gpt-4o, MARKETING) take 10 s upstream: they are certainly in
        # flight at the kill. The others serve gpt-4o-mini to HR, which the mock counts apart.
        doomed = Load([replicas[0].url], keys["MARKETING"], model="gpt-4o",
                      directive="output_tokens=100 delay_ms=10000")
        doomed.start(6)
        poll(lambda: len(owners(client)) == 6, 30, "the doomed replica's calls in flight")
        (dead,) = set(owners(client))
        others = Load([r.url for r in replicas[1:]], keys["HR"], directive="output_tokens=100 delay_ms=20")
        others.start(4)
        poll(lambda: others.statuses.count(200) >= 10, 30, "the others serving")
        replicas[0].kill()
        doomed.finish()
        served = others.statuses.count(200)
        took = poll(lambda: dead not in owners(client), 30, "the dead replica's reservations to be released")
        poll(lambda: others.statuses.count(200) >= served + 20, 30, "the others serving on")
        others.finish()
        policy = parse_policy(policy_text(mock_url, REPLICAS_POLICY))
        final = settled_books(redis_server.url, postgres_database, policy)
    finally:
        client.close()
        for replica in replicas:
            replica.stop()
    print(f"a killed replica's reservations were released {took:.1f}s after the kill (lease TTL {LEASE_TTL_S}s)")
    assert took < 4 * LEASE_TTL_S, f"released {took:.1f}s after the kill"
    interrupted = [e for e in final.events if e.interrupted]
    assert len(interrupted) == 6 and all(e.department == "MARKETING" for e in interrupted)
    assert all(e.status == "interrupted" and e.cost_nanos == e.estimate_nanos > 0 for e in interrupted)
    assert set(others.statuses) == {200}  # the others kept serving
    assert sum(e.cost_nanos for e in final.events if e.department == "HR") <= LIMIT
    completed = [e for e in final.events if not e.interrupted]
    assert len(completed) == others.statuses.count(200)
    served_mini = httpx.get(f"{mock_url}/mock/stats").json()["models"]["gpt-4o-mini"]
    assert served_mini["input_tokens"] == sum(e.input_tokens for e in completed)
    assert served_mini["output_tokens"] == sum(e.output_tokens for e in completed)
