"""The audit log (GET /admin/v1/audit), per-user budgets in budget status and the per-budget
Prometheus gauges, through real HTTP against a running gateway and its ledger."""

from __future__ import annotations

import getpass
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.ledger import Ledger
from gateway_fixtures import EXAMPLE, Gateway, start_gateway

ADMIN = "audit-admin-secret"
SALES = "  SALES:\n    tiers: [1, 2, 3]             # may use expert models\n"
# SALES gets per-user budgets: every user of SALES has $5 a day and $40 a month of its own.
BASE = EXAMPLE.read_text().replace(SALES, SALES + "    per_user:\n      budgets:\n"
                                   "        - {limit: 5, period: daily, action: reject}\n"
                                   "        - {limit: 40, period: monthly, action: alert}\n")


@pytest.fixture
def gw(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    assert EXAMPLE.read_text() != BASE
    yield from start_gateway(tmp_path, mock_url, BASE, admin_token=ADMIN)


def api(gw: Gateway, method: str, path: str, token: str = ADMIN, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin/v1{path}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kw)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def eventually(check: Callable[[], Any], within_s: float = 8.0) -> Any:
    deadline = time.monotonic() + within_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"not true within {within_s} s"
        time.sleep(0.05)
    return found


def token_for(gw: Gateway, role: str, department: str | None = None) -> tuple[str, str]:
    created = ok(api(gw, "POST", "/tokens", json={"role": role, "department": department, "name": role}), 201)
    eventually(lambda: api(gw, "GET", "/whoami", created["token"]).status_code == 200)
    return created["id"], created["token"]


def entries(gw: Gateway, token: str = ADMIN, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(api(gw, "GET", "/audit", token, params=params))["entries"]
    return found


def chat(gw: Gateway, key: str, user: str | None = None) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi #mock input_tokens=2000 output_tokens=50"}]}
    headers = {"Authorization": f"Bearer {key}", **({"X-User-ID": user} if user else {})}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_who_changed_which_key_and_token_with_a_manager_confined_to_its_department(gw: Gateway) -> None:
    manager_id, manager = token_for(gw, "manager", "MARKETING")
    finance_id, finance = token_for(gw, "finance")
    mine = ok(api(gw, "POST", "/keys", manager, json={"name": "campaign bot", "user": "ann"}), 201)
    hr = ok(api(gw, "POST", "/keys", json={"department": "HR", "name": "hr bot"}), 201)
    ok(api(gw, "DELETE", f"/keys/{hr['id']}"))

    listed = entries(gw)
    assert [(e["action"], e["actor_id"], e["actor_role"], e["target"], e["department"]) for e in listed] == [
        ("key.revoked", "bootstrap", "admin", hr["id"], "HR"),
        ("key.created", "bootstrap", "admin", hr["id"], "HR"),
        ("key.created", manager_id, "manager", mine["id"], "MARKETING"),
        ("token.created", "bootstrap", "admin", finance_id, None),
        ("token.created", "bootstrap", "admin", manager_id, "MARKETING"),
    ]
    assert listed[2]["detail"] == {"name": "campaign bot", "prefix": mine["prefix"], "team": None, "user": "ann"}
    assert listed[3]["detail"]["role"] == "finance" and "token" not in str(listed[3]["detail"])
    assert entries(gw, finance) == listed  # finance reads everything
    # a manager reads the entries about its department only, and may not ask for another one
    assert [e["target"] for e in entries(gw, manager)] == [mine["id"], manager_id]
    assert api(gw, "GET", "/audit", manager, params={"department": "HR"}).status_code == 403
    assert [e["target"] for e in entries(gw, action="key.created")] == [hr["id"], mine["id"]]
    assert api(gw, "GET", "/audit", params={"action": "key.stolen"}).status_code == 400

    # paged newest first like /events: every entry once, in order
    seen, cursor = [], None
    while True:
        page = ok(api(gw, "GET", "/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})}))
        seen += [e["id"] for e in page["entries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in listed]


def test_a_reload_records_its_versions_and_the_budgets_it_changed(gw: Gateway) -> None:
    shown = ok(api(gw, "GET", "/policy"))
    text = shown["yaml"].replace("{limit: 200, period: monthly, alert_at: [0.8], action: reject}",
                                 "{limit: 250, period: monthly, alert_at: [0.8], action: reject}")
    reloaded = ok(api(gw, "POST", "/policy/reload", content=text))
    ok(api(gw, "POST", "/policy/reload", content=text))  # unchanged: nothing recorded
    swap, budgets = entries(gw)[1], entries(gw)[0]
    assert (swap["action"], swap["actor_id"], swap["version_before"], swap["version_after"]) == (
        "policy.reloaded", "bootstrap", shown["version"], reloaded["version"])
    assert swap["detail"]["budgets_changed"] == 1 and len(entries(gw)) == 2
    assert (budgets["action"], budgets["department"], budgets["version_after"]) == (
        "budgets.changed", "HR", reloaded["version"])
    assert budgets["detail"]["budgets"] == [{"scope": "dept:HR", "index": 0,
                                             "before": "$200.00 monthly, reject, alerts at 0.8",
                                             "after": "$250.00 monthly, reject, alerts at 0.8"}]


def test_a_policy_stored_by_another_process_is_adopted_and_recorded_once(gw: Gateway) -> None:
    current = ok(api(gw, "GET", "/policy"))
    text = current["yaml"].replace("{limit: 300, period: weekly, action: reject}",
                                   "{limit: 360, period: weekly, action: reject}")

    async def store(ledger: Ledger) -> int:  # as a server started with a new policy file does
        return await ledger.store_policy(text)

    version = gw.ledger_query(store)
    adopted = eventually(lambda: [e for e in entries(gw) if e["action"] == "policy.adopted"])
    assert [(e["actor_role"], e["version_before"], e["version_after"]) for e in adopted] == [
        ("server", current["version"], version)]
    changed = next(e for e in entries(gw) if e["action"] == "budgets.changed")
    assert changed["department"] == "SUPPORT" and changed["detail"]["budgets"][0]["scope"] == "team:SUPPORT/TIER1-DESK"


def test_the_cli_records_its_changes_as_the_os_user(gw: Gateway) -> None:
    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "costwarden", *args, "--db", gw.db_url], capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    created = cli("keys", "create", "--department", "HR", "--name", "from the shell")
    key_id = re.search(r"Created key (\S+) ", created)
    assert key_id is not None
    cli("keys", "revoke", key_id[1])
    cli("close", "--period", "2026-01")
    listed = entries(gw)
    assert [(e["action"], e["target"], e["department"]) for e in listed] == [
        ("period.closed", "2026-01", None), ("key.revoked", key_id[1], "HR"), ("key.created", key_id[1], "HR")]
    assert {(e["actor_id"], e["actor_role"]) for e in listed} == {(getpass.getuser(), "cli")}


def test_each_user_with_spend_this_period_shows_its_own_budgets(gw: Gateway) -> None:
    for user in ("ann", "ann", "bob"):
        reply = chat(gw, gw.keys["SALES"], user)
        assert reply.status_code == 200, reply.text
    assert chat(gw, gw.keys["HR"], "carol").status_code == 200  # HR has no per-user budgets
    budgets = ok(api(gw, "GET", "/budgets"))["budgets"]
    users = {(b["user"], b["period"]): b for b in budgets if b["scope_kind"] == "user"}
    assert set(users) == {("ann", "daily"), ("ann", "monthly"), ("bob", "daily"), ("bob", "monthly")}
    ann, bob = users[("ann", "daily")], users[("bob", "daily")]
    assert (ann["scope"], ann["department"], ann["limit_usd"]) == ("user:SALES/ann", "SALES", "5")
    assert ann["spent_nanos"] == 2 * bob["spent_nanos"] > 0
    assert users[("ann", "monthly")]["spent_nanos"] == ann["spent_nanos"]
    manager = token_for(gw, "manager", "HR")[1]
    assert not [b for b in ok(api(gw, "GET", "/budgets", manager))["budgets"] if b["scope_kind"] == "user"]


def test_metrics_show_every_budget_as_gauges_read_at_scrape_time(gw: Gateway) -> None:
    assert chat(gw, gw.keys["HR"]).status_code == 200
    hr = next(b for b in ok(api(gw, "GET", "/budgets", params={"department": "HR"}))["budgets"]
              if b["scope"] == "dept:HR")
    text = httpx.get(f"{gw.url}/metrics").text
    labels = '{index="0",period="monthly",scope="dept:HR"}'
    spent = Decimal(metric(text, "costwarden_budget_spent_usd" + labels))
    assert spent == Decimal(hr["spent_usd"]) > 0
    assert Decimal(metric(text, "costwarden_budget_limit_usd" + labels)) == 200
    utilization = Decimal(metric(text, "costwarden_budget_utilization" + labels))
    assert abs(utilization - Decimal(hr["spent_usd"]) / 200) < Decimal("1e-12")
    assert metric(text, 'costwarden_budget_limit_usd{index="0",period="weekly",scope="team:SUPPORT/TIER1-DESK"}')
    assert 'scope="org"' in text and "user:" not in text  # no series per user or key

    assert chat(gw, gw.keys["HR"]).status_code == 200  # the next scrape reads the counters again
    later = Decimal(metric(httpx.get(f"{gw.url}/metrics").text, "costwarden_budget_spent_usd" + labels))
    assert later > spent


def metric(text: str, series: str) -> str:
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return value
    raise AssertionError(f"no series {series} in /metrics")
