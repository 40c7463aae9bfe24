"""Tag budgets through the real gateway: a hard cap shared by two departments' concurrent calls,
its counter rebuilt from the ledger after a restart, a soft threshold alert, a shadow budget, and a
tag budget added by a policy reload that starts from the period's spend."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from costwarden.core.money import usd_to_nanos
from gateway_fixtures import PLAIN_DEPARTMENTS, UPSTREAMS, Gateway, policy_text, start_gateway
from gateway_process import poll

ADMIN = "tag-budget-admin-secret"
ATLAS = {"X-Tags": "feature=search,project=atlas"}
# gpt-4o-mini: a call of ~10 input tokens and 1,000 output costs about $0.0006, so the atlas cap of
# $0.012 fits about 20 worst cases; 200 arrive at once from HR and MARKETING, which have no cap.
TAGS = """
tags:
  project:
    atlas:
      budgets: [{limit: 0.012, period: monthly, action: reject}]
    hermes:
      budgets: [{limit: 0.001, period: monthly, alert_at: [0.5], action: alert}]
    apollo:
      budgets: [{limit: 0.000001, period: monthly, action: reject, enforce: false}]
"""
POLICY = UPSTREAMS + "departments:\n  HR: {}\n" + PLAIN_DEPARTMENTS + TAGS
CAP = usd_to_nanos("0.012")
gateway = contextmanager(start_gateway)


def chat(gw: Gateway, department: str, tags: str | None, output_tokens: int = 50) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "max_tokens": output_tokens,
            "messages": [{"role": "user", "content": f"hi #mock output_tokens={output_tokens}"}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {gw.keys[department]}", **({"X-Tags": tags} if tags else {})})


async def _burst(gw: Gateway, calls: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=60, limits=httpx.Limits(max_connections=calls)) as client:
        async def one(i: int) -> httpx.Response:
            body = {"model": "gpt-4o-mini", "max_tokens": 1000, "stream": i % 5 == 0,
                    "messages": [{"role": "user", "content": f"call {i} #mock output_tokens=1000"}]}
            key = gw.keys["HR" if i % 2 else "MARKETING"]
            return await client.post("/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {key}", **ATLAS})

        return await asyncio.gather(*(one(i) for i in range(calls)))


def tag_budget(gw: Gateway, scope: str) -> dict[str, Any] | None:
    reply = httpx.get(f"{gw.url}/admin/v1/budgets", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    if reply.status_code != 200:
        return None  # the counters are still being built from the ledger
    return next((b for b in reply.json()["budgets"] if b["scope"] == scope), None)


def test_a_hard_tag_budget_holds_across_departments_and_is_rebuilt_after_a_restart(
        tmp_path: Path, mock_url: str) -> None:
    httpx.post(f"{mock_url}/mock/reset")
    with gateway(tmp_path, mock_url, POLICY, admin_token=ADMIN) as gw:
        replies = asyncio.run(_burst(gw, 200))
        statuses = [r.status_code for r in replies]
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 429} and 15 <= admitted <= 40
        refused = next(r for r in replies if r.status_code == 429)
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert refused.json()["error"]["message"].startswith(
            "Project atlas (calls tagged project=atlas) has spent $0.01 of its $0.01 monthly budget")
        assert refused.headers["x-costwarden-budget-scope"] == "tag:project=atlas"
        events = gw.ledger_query(lambda ledger: ledger.list_events(limit=1000))
        assert len(events) == admitted and {e.department for e in events} == {"HR", "MARKETING"}
        spent = sum(e.cost_nanos for e in events)
        assert spent <= CAP and all(e.overrun_tokens == 0 for e in events)
        assert chat(gw, "HR", None).status_code == 200  # an untagged call is not held by the project's cap
        live = tag_budget(gw, "tag:project=atlas")
        assert live is not None and (live["spent_nanos"], live["label"], live["department"]) == (
            spent, "Project atlas", None)
        db_url = gw.db_url
    # a new gateway on the same ledger starts with empty counters and rebuilds them from the ledger
    with gateway(tmp_path / "again", mock_url, POLICY, admin_token=ADMIN, db_url=db_url) as again:
        poll(lambda: (tag_budget(again, "tag:project=atlas") or {}).get("spent_nanos") == spent, 15,
             "the atlas counter rebuilt from the ledger")
        refused = chat(again, "MARKETING", "project=atlas", output_tokens=1000)
        assert refused.status_code == 429 and refused.headers["x-costwarden-budget-scope"] == "tag:project=atlas"


def test_soft_and_shadow_tag_budgets_serve_every_call(tmp_path: Path, mock_url: str) -> None:
    with gateway(tmp_path, mock_url, POLICY, admin_token=ADMIN) as gw:
        # each call of ~10 input and 1,000 output tokens costs about $0.0006: the second passes 50%
        replies = [chat(gw, department, "project=hermes", output_tokens=1000) for department in ("HR", "SALES", "HR")]
        assert [r.status_code for r in replies] == [200, 200, 200]
        alerts = poll_alerts(gw)
        assert [(a.kind, a.scope, a.department, a.threshold) for a in alerts] == [
            ("threshold", "tag:project=hermes", None, "0.5")]
        assert alerts[0].text.startswith("Project hermes has reached 50% of its $0.00 monthly budget")
        shadowed = chat(gw, "SALES", "project=apollo")
        assert shadowed.status_code == 200
        assert shadowed.headers["x-costwarden-shadow"] == "would reject: tag:project=apollo budget 0"
        event = next(e for e in gw.ledger_query(lambda ledger: ledger.list_events(limit=100))
                     if e.id == shadowed.headers["x-request-id"])
        assert event.shadow == ("would reject: tag:project=apollo budget 0",) and event.cost_nanos > 0


def poll_alerts(gw: Gateway) -> list[Any]:
    found: list[Any] = []

    def recorded() -> bool:
        found[:] = gw.ledger_query(lambda ledger: ledger.list_alerts())
        return bool(found)

    poll(recorded, 10, "the threshold alert to be recorded")
    return found


def test_a_tag_budget_added_by_a_reload_starts_from_the_period_spend(tmp_path: Path, mock_url: str) -> None:
    before = UPSTREAMS + "departments:\n  HR: {}\n" + PLAIN_DEPARTMENTS
    with gateway(tmp_path, mock_url, before, admin_token=ADMIN) as gw:
        assert [chat(gw, department, "project=atlas").status_code for department in ("HR", "SALES")] == [200, 200]
        spent = sum(e.cost_nanos for e in gw.ledger_query(lambda ledger: ledger.list_events(limit=10)))
        assert tag_budget(gw, "tag:project=atlas") is None
        reloaded = httpx.post(f"{gw.url}/admin/v1/policy/reload", content=policy_text(mock_url, POLICY),
                              headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["counters_loaded"] >= 1
        live = tag_budget(gw, "tag:project=atlas")
        assert live is not None and live["spent_nanos"] == spent > 0
        audit = httpx.get(f"{gw.url}/admin/v1/audit", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert "tag:project=atlas" in audit.text
