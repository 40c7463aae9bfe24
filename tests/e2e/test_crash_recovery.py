"""Invariant 3: kill -9 the gateway under load, restart it; nothing a client saw complete is lost,
in-flight calls are settled at their estimates, and the rebuilt counters equal the ledger."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from costwarden.core.events import UsageEvent
from costwarden.core.periods import Period
from costwarden.ledger import Ledger
from gateway_fixtures import DEPARTMENTS, policy_text
from gateway_process import GatewayProcess
from servers import bound_socket

ADMIN = "admin-secret-for-tests"


@pytest.fixture
def crashable(tmp_path: Path, mock_url: str) -> Iterator[tuple[GatewayProcess, dict[str, str]]]:
    db_url = f"sqlite:///{tmp_path}/ledger.db"
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(mock_url))

    async def make_keys() -> dict[str, str]:
        ledger = await Ledger.open(db_url)
        try:
            return {d: (await ledger.create_key(d))[1] for d in DEPARTMENTS}
        finally:
            await ledger.close()

    keys = asyncio.run(make_keys())
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    gateway = GatewayProcess(policy, db_url, port, tmp_path / "gateway.log", env={"COSTWARDEN_ADMIN_TOKEN": ADMIN})
    gateway.start()
    try:
        yield gateway, keys
    finally:
        gateway.stop()


def _load(url: str, keys: dict[str, str], completed: list[str], stop: threading.Event, worker: int) -> None:
    dept = ("MARKETING", "ENGINEERING", "HR")[worker % 3]
    with httpx.Client(base_url=url, timeout=10, headers={"Authorization": f"Bearer {keys[dept]}"}) as client:
        i = 0
        while not stop.is_set():
            i += 1
            stream = i % 3 == 0
            body = {"model": "gpt-4o-mini", "max_tokens": 200, "stream": stream,
                    "messages": [{"role": "user", "content": f"w{worker} #{i} #mock output_tokens=50 delay_ms=20"}]}
            try:
                if stream:
                    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                        lines = list(reply.iter_lines())
                        if reply.status_code == 200 and "data: [DONE]" in lines:
                            completed.append(reply.headers["x-request-id"])
                else:
                    reply = client.post("/v1/chat/completions", json=body)
                    if reply.status_code == 200 and reply.json()["choices"]:
                        completed.append(reply.headers["x-request-id"])
            except httpx.TransportError:
                return  # the gateway died under us


def test_kill_9_under_load_loses_nothing(crashable: tuple[GatewayProcess, dict[str, str]]) -> None:
    gateway, keys = crashable
    completed: list[str] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_load, args=(gateway.url, keys, completed, stop, w)) for w in range(12)]
    for w in workers:
        w.start()
    deadline = time.monotonic() + 30
    while len(completed) < 150 and time.monotonic() < deadline:
        time.sleep(0.01)
    gateway.kill()
    stop.set()
    for w in workers:
        w.join(timeout=30)
    assert len(completed) >= 150

    gateway.start()  # restart on the same database: recover, rebuild counters

    async def ledger_view() -> tuple[list[UsageEvent], dict[str, int], int]:
        ledger = await Ledger.open(gateway.args[gateway.args.index("--db") + 1])
        try:
            events = [e async for e in ledger.iter_events()]
            month_start, _ = Period.parse("monthly").bounds(datetime.now(UTC), ZoneInfo("America/New_York"))
            rows = await ledger.totals(month_start, None, group_by=["department"])
            return events, {str(r["department"]): r.cost_nanos for r in rows}, await ledger.count_inflight()
        finally:
            await ledger.close()

    events, by_dept, inflight = asyncio.run(ledger_view())
    ids = {e.id for e in events}
    missing = [i for i in completed if i not in ids]
    assert not missing, f"{len(missing)} completed calls are not in the ledger"
    assert inflight == 0  # every write-ahead row was settled on restart
    budgets = httpx.get(f"{gateway.url}/admin/v1/budgets", headers={"Authorization": f"Bearer {ADMIN}"}).json()
    spent = {b["scope"]: b["spent_nanos"] for b in budgets["budgets"] if b["unit"] == "usd"}
    assert spent["org"] == sum(by_dept.values())
    for dept in ("MARKETING", "ENGINEERING", "HR"):
        assert spent[f"dept:{dept}"] == by_dept.get(dept, 0), dept
    # calls in flight at the kill were settled at their estimates, not dropped
    for event in events:
        if event.interrupted:
            assert event.status == "interrupted" and event.cost_nanos == event.estimate_nanos > 0
