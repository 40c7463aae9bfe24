"""The admin API under /admin/v1, through real HTTP against a running gateway and its ledger."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from costwarden.core.events import UsageEvent
from costwarden.core.money import format_usd, usd_to_nanos
from costwarden.core.periods import Period
from costwarden.ledger import Ledger
from costwarden.policy import parse_policy
from gateway_fixtures import EXAMPLE, Gateway, policy_text, start_gateway

ADMIN = "bootstrap-admin-secret"
T = TypeVar("T")
ENGINEERING_FIRST = "{limit: 5000, period: monthly, alert_at: [0.5, 0.8], action: {restrict_tiers: [1]}}"
# ENGINEERING's restricting budget made small enough to pass with a few calls ($0.0001)
BASE = EXAMPLE.read_text().replace(ENGINEERING_FIRST, "{limit: 0.0001, period: monthly, action: {restrict_tiers: [1]}}")


@pytest.fixture
def gw(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text(mock_url, BASE))
    yield from start_gateway(tmp_path, mock_url, BASE, admin_token=ADMIN, policy_path=str(path))


def api(gw: Gateway, method: str, path: str, token: str | None = ADMIN, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, f"{gw.url}/admin/v1{path}", headers=headers, timeout=30, **kw)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def chat(gw: Gateway, key: str, model: str = "gpt-4o-mini", text: str = "hi #mock output_tokens=50",
         **headers: str) -> httpx.Response:
    body = {"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def eventually(check: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll ``check`` until it holds (credentials reach servers within seconds, not at once)."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not true within {within_s} s"
        time.sleep(0.05)


def query(gw: Gateway, fn: Callable[[Ledger], Awaitable[T]]) -> T:
    """``await fn(ledger)`` on the gateway's database."""
    return gw.ledger_query(fn)  # type: ignore[no-untyped-call, no-any-return]


def ledger_cost(gw: Gateway, department: str | None = None) -> int:
    where = None if department is None else {"department": department}
    [row] = query(gw, lambda ledger: ledger.totals(None, None, (), where))
    return int(row.cost_nanos)


def budget(data: dict[str, Any], scope: str, index: int = 0) -> dict[str, Any]:
    found: dict[str, Any] = next(b for b in data["budgets"] if b["scope"] == scope and b["index"] == index)
    return found


def token_for(gw: Gateway, role: str, department: str | None = None) -> tuple[str, str]:
    created = ok(api(gw, "POST", "/tokens", json={"role": role, "department": department, "name": role}), 201)
    eventually(lambda: api(gw, "GET", "/alerts", created["token"]).status_code == 200)
    return created["id"], created["token"]


def test_openapi_document_lists_every_path(gw: Gateway) -> None:
    doc = ok(api(gw, "GET", "/openapi.json", token=None))
    assert doc["openapi"].startswith("3.1") and doc["servers"] == [{"url": "/admin/v1"}]
    assert {"/budgets", "/spend", "/events", "/rejections", "/alerts", "/keys", "/keys/{key_id}", "/tokens",
            "/tokens/{token_id}", "/policy", "/policy/reload"} <= set(doc["paths"])
    assert set(doc["paths"]["/keys"]) == {"get", "post"} and "delete" in doc["paths"]["/keys/{key_id}"]
    budgets = doc["paths"]["/budgets"]["get"]
    assert budgets["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BudgetList"}
    assert {"spent_usd", "reserved_nanos", "forecast_usd", "restricted"} <= set(
        doc["components"]["schemas"]["BudgetOut"]["properties"])
    assert [p["name"] for p in doc["paths"]["/events"]["get"]["parameters"]][-2:] == ["limit", "cursor"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_missing_or_invalid_tokens_are_401(gw: Gateway) -> None:
    for token in (None, "nope", gw.keys["HR"]):  # a gateway key is not an admin token
        refused = api(gw, "GET", "/budgets", token=token)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
    assert api(gw, "GET", "/nowhere").status_code == 404
    wrong = api(gw, "PUT", "/keys")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    bad = api(gw, "GET", "/events", params={"limit": "0"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_finance_reads_everything_and_changes_nothing(gw: Gateway) -> None:
    token_id, finance = token_for(gw, "finance")
    assert {b["scope"] for b in ok(api(gw, "GET", "/budgets", finance))["budgets"]} >= {"org", "dept:HR", "dept:ENGINEERING"}
    ok(api(gw, "GET", "/policy", finance))
    ok(api(gw, "GET", "/keys", finance))
    listed = ok(api(gw, "GET", "/tokens", finance))["tokens"]
    assert token_id in {t["id"] for t in listed} and all("token" not in t for t in listed)
    for method, path, body in (("POST", "/keys", {"department": "HR"}), ("POST", "/tokens", {"role": "admin"}),
                               ("POST", "/policy/reload", None), ("DELETE", f"/tokens/{token_id}", None)):
        refused = api(gw, method, path, finance, json=body)
        assert refused.status_code == 403, (method, path)
        assert refused.json()["error"]["type"] == "permission_error"
    ok(api(gw, "DELETE", f"/tokens/{token_id}"))
    eventually(lambda: api(gw, "GET", "/budgets", finance).status_code == 401)


def test_a_manager_sees_and_manages_its_department_only(gw: Gateway) -> None:
    assert chat(gw, gw.keys["HR"]).status_code == 200
    assert chat(gw, gw.keys["SALES"]).status_code == 200
    _, manager = token_for(gw, "manager", "hr")  # department ids are case-insensitive in the API
    scopes = {b["scope"] for b in ok(api(gw, "GET", "/budgets", manager))["budgets"]}
    assert scopes == {"dept:HR"}
    spend = ok(api(gw, "GET", "/spend", manager))
    assert [row["group"] for row in spend["rows"]] == [{"department": "HR"}]
    assert {e["department"] for e in ok(api(gw, "GET", "/events", manager))["events"]} == {"HR"}
    for path in ("/budgets", "/spend", "/events", "/keys", "/alerts", "/rejections"):
        assert api(gw, "GET", path, manager, params={"department": "SALES"}).status_code == 403, path
    for method, path in (("GET", "/policy"), ("GET", "/tokens"), ("POST", "/policy/reload")):
        assert api(gw, method, path, manager).status_code == 403, path

    created = ok(api(gw, "POST", "/keys", manager, json={"name": "hr bot"}), 201)
    assert created["department"] == "HR" and created["key"].startswith("cw-")
    assert api(gw, "POST", "/keys", manager, json={"department": "SALES"}).status_code == 403
    listed = ok(api(gw, "GET", "/keys", manager))["keys"]
    assert {k["department"] for k in listed} == {"HR"} and created["id"] in {k["id"] for k in listed}
    assert all("key" not in k for k in listed)  # secrets are shown once, at creation
    sales_key = next(k for k in ok(api(gw, "GET", "/keys"))["keys"] if k["department"] == "SALES")
    assert api(gw, "DELETE", f"/keys/{sales_key['id']}", manager).status_code == 403
    ok(api(gw, "DELETE", f"/keys/{created['id']}", manager))


def test_role_and_department_checks_on_token_creation(gw: Gateway) -> None:
    for body in ({"role": "manager"}, {"role": "finance", "department": "HR"}, {"role": "root"},
                 {"role": "manager", "department": "LEGAL"}, {"role": "admin", "extra": 1}):
        refused = api(gw, "POST", "/tokens", json=body)
        assert refused.status_code == 400, body
        assert refused.json()["error"]["type"] == "invalid_request_error"
    assert [t["role"] for t in ok(api(gw, "GET", "/tokens"))["tokens"]] == []


def test_budgets_read_live_counters_to_the_nano_dollar(gw: Gateway) -> None:
    before = ok(api(gw, "GET", "/budgets"))
    engineering = budget(before, "dept:ENGINEERING")
    assert engineering["restricted"] is False and engineering["spent_nanos"] == 0
    limit = engineering["limit_nanos"]
    assert limit == usd_to_nanos("0.0001") and engineering["limit_usd"] == "0.0001"
    for _ in range(10):  # until ENGINEERING has spent past its first budget
        assert chat(gw, gw.keys["ENGINEERING"]).status_code == 200
        if budget(ok(api(gw, "GET", "/budgets")), "dept:ENGINEERING")["spent_nanos"] > limit:
            break
    for dept in ("HR", "SUPPORT-DESK"):
        assert chat(gw, gw.keys[dept]).status_code == 200
    # the upstream reports 100M input tokens: $15 of HR spend
    assert chat(gw, gw.keys["HR"], text="hi #mock input_tokens=100000000 output_tokens=5").status_code == 200

    after = ok(api(gw, "GET", "/budgets"))
    engineering = budget(after, "dept:ENGINEERING")
    assert engineering["spent_nanos"] == ledger_cost(gw, "ENGINEERING") > limit
    assert engineering["restricted"] is True and engineering["action"] == "restrict_tiers"
    assert engineering["action_tiers"] == [1] and engineering["remaining_nanos"] == 0
    hr = budget(after, "dept:HR")
    spent = ledger_cost(gw, "HR")
    assert (hr["spent_nanos"], hr["spent_usd"], hr["reserved_nanos"]) == (spent, format_usd(spent), 0)
    assert hr["remaining_nanos"] == hr["limit_nanos"] - spent and hr["restricted"] is False
    assert Decimal(hr["utilization_pct"]) == (Decimal(spent * 100) / hr["limit_nanos"]).quantize(Decimal("0.01"))
    assert budget(after, "org")["spent_nanos"] == ledger_cost(gw)
    desk = budget(after, "team:SUPPORT/TIER1-DESK")
    assert (desk["team"], desk["period"], desk["spent_nanos"]) == ("TIER1-DESK", "weekly", ledger_cost(gw, "SUPPORT"))

    start, end = Period.parse("monthly").bounds(datetime.fromisoformat(after["as_of"]), parse_policy(
        policy_text(gw.mock_url, BASE)).timezone)
    assert datetime.fromisoformat(hr["period_start"]) == start and datetime.fromisoformat(hr["period_end"]) == end
    assert hr["period_start"].endswith("Z")
    # every call is from today: too little history to project (the method of report forecast)
    assert hr["forecast_usd"] is None and Decimal(hr["spent_usd"]) > 15
    keys = [b for b in after["budgets"] if b["scope_kind"] == "key"]
    assert {b["department"] for b in keys} == {"ENGINEERING"} and len(keys) == 2  # per_key budgets, 2 keys
    breaker = next(b for b in keys if b["spent_nanos"] > 0)
    assert breaker["scope"] == f"key:ENGINEERING/{breaker['key_id']}" and breaker["period"] == "1h"
    assert breaker["forecast_usd"] is None and breaker["spent_nanos"] == engineering["spent_nanos"]
    only_hr = ok(api(gw, "GET", "/budgets", params={"department": "HR"}))["budgets"]
    assert [b["scope"] for b in only_hr] == ["dept:HR"]
    assert api(gw, "GET", "/budgets", params={"department": "LEGAL"}).json()["error"]["code"] == "unknown_department"


def test_spend_groups_add_up_to_the_total_exactly(gw: Gateway) -> None:
    for dept, tags in (("HR", "project=atlas"), ("SALES", "project=atlas"), ("SALES", "project=zeus"),
                       ("SUPPORT-DESK", ""), ("ENGINEERING", "")):
        assert chat(gw, gw.keys[dept], **({"X-Tags": tags} if tags else {})).status_code == 200
    total = ledger_cost(gw)
    for group_by in ("department", "team", "model", "key", "user", "day", "tag:project", "department,model"):
        report = ok(api(gw, "GET", "/spend", params={"group_by": group_by}))
        rows = report["rows"]
        assert sum(row["cost_nanos"] for row in rows) == report["totals"]["cost_nanos"] == total, group_by
        assert report["totals"]["cost_usd"] == format_usd(total) and report["totals"]["requests"] == 5
        assert all(Decimal(row["cost_usd"]) == Decimal(row["cost_nanos"]).scaleb(-9) for row in rows)
    by_tag = ok(api(gw, "GET", "/spend", params={"group_by": "tag:project"}))["rows"]
    assert sorted(row["group"]["tag:project"] or "" for row in by_tag) == ["", "atlas", "zeus"]
    teams = ok(api(gw, "GET", "/spend", params={"group_by": "team"}))
    assert teams["group_by"] == ["department", "team"]
    assert {"department": "SUPPORT", "team": "TIER1-DESK"} in [row["group"] for row in teams["rows"]]
    sales = ok(api(gw, "GET", "/spend", params={"department": "sales"}))
    assert sales["totals"]["cost_nanos"] == ledger_cost(gw, "SALES") and sales["totals"]["requests"] == 2
    assert ok(api(gw, "GET", "/spend", params={"since": "2999-01-01"}))["totals"]["requests"] == 0
    assert api(gw, "GET", "/spend", params={"group_by": "planet"}).status_code == 400


def test_events_and_rejections_page_newest_first(gw: Gateway) -> None:
    ids = [chat(gw, gw.keys["SALES"]).headers["x-request-id"] for _ in range(7)]
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(3):
        page = ok(api(gw, "GET", "/events", params={"limit": 3, **({"cursor": cursor} if cursor else {})}))
        seen += page["events"]
        cursor = page["next_cursor"]
    assert cursor is None and [len(seen)] == [7]
    assert {e["id"] for e in seen} == set(ids)
    times = [(e["admitted_at"], e["id"]) for e in seen]
    assert times == sorted(times, reverse=True)
    recorded = {e.id: e for e in query(gw, lambda ledger: ledger.list_events(limit=100))}
    assert all(e["cost_nanos"] == recorded[e["id"]].cost_nanos and e["cost_usd"] == format_usd(e["cost_nanos"])
               for e in seen)
    assert api(gw, "GET", "/events", params={"cursor": "garbage"}).json()["error"]["param"] == "cursor"

    # imported events sharing one instant are paged without loss or repetition
    at = datetime(2020, 5, 1, 12, 0, tzinfo=UTC)
    batch = [UsageEvent(id=f"imp_{i}", admitted_at=at, finished_at=at, department="MARKETING", model_requested="m",
                        model_served="m", provider="openai", endpoint="/v1/chat/completions", cost_nanos=i)
             for i in range(5)]
    query(gw, lambda ledger: ledger.record_many(batch))
    pages = [ok(api(gw, "GET", "/events", params={"department": "MARKETING", "limit": 2}))]
    while pages[-1]["next_cursor"]:
        pages.append(ok(api(gw, "GET", "/events", params={"department": "MARKETING", "limit": 2,
                                                         "cursor": pages[-1]["next_cursor"]})))
    assert [e["id"] for page in pages for e in page["events"]] == [f"imp_{i}" for i in reversed(range(5))]
    assert ok(api(gw, "GET", "/events", params={"department": "HR"}))["events"] == []

    for _ in range(3):
        assert chat(gw, gw.keys["HR"], model="gpt-17").status_code == 404
    first = ok(api(gw, "GET", "/rejections", params={"limit": 2}))
    rest = ok(api(gw, "GET", "/rejections", params={"limit": 2, "cursor": first["next_cursor"]}))
    refused = first["rejections"] + rest["rejections"]
    assert len({r["id"] for r in refused}) == 3 and rest["next_cursor"] is None
    assert {(r["department"], r["code"], r["model_requested"]) for r in refused} == {("HR", "model_not_found", "gpt-17")}


def test_keys_created_and_revoked_through_the_api(gw: Gateway) -> None:
    created = ok(api(gw, "POST", "/keys", json={"department": "sales", "user": "ana", "name": "atlas"}), 201)
    assert (created["department"], created["user"], created["active"]) == ("SALES", "ana", True)
    eventually(lambda: chat(gw, created["key"]).status_code == 200)
    [listed] = [k for k in ok(api(gw, "GET", "/keys"))["keys"] if k["id"] == created["id"]]
    assert listed["prefix"] == created["key"][:len(listed["prefix"])] and "key" not in listed
    assert api(gw, "POST", "/keys", json={"department": "LEGAL"}).status_code == 400
    unbound = ok(api(gw, "POST", "/keys", json={}), 201)
    assert unbound["department"] is None

    revoked = ok(api(gw, "DELETE", f"/keys/{created['id']}"))
    assert revoked["active"] is False and revoked["revoked_at"] is not None
    eventually(lambda: chat(gw, created["key"]).status_code == 401)
    active = ok(api(gw, "GET", "/keys", params={"include_revoked": "false"}))["keys"]
    assert created["id"] not in {k["id"] for k in active}
    missing = api(gw, "DELETE", "/keys/key_nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_policy_reload_keeps_the_old_policy_when_the_new_one_is_invalid(gw: Gateway) -> None:
    shown = ok(api(gw, "GET", "/policy"))
    assert "HR" in shown["departments"] and shown["yaml"] == policy_text(gw.mock_url, BASE)
    invalid = "version: 1\ndepartments:\n  HR:\n    budgets: [{limit: -5, period: fortnightly}]\n  bad id: {}\n"
    refused = api(gw, "POST", "/policy/reload", content=invalid)
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "invalid_policy" and len(error["problems"]) >= 2
    assert any("line" in problem for problem in error["problems"])
    assert ok(api(gw, "GET", "/policy"))["version"] == shown["version"]
    assert chat(gw, gw.keys["SALES"]).status_code == 200  # SALES is not in the invalid policy

    # the same text again changes nothing
    same = ok(api(gw, "POST", "/policy/reload", content=shown["yaml"]))
    assert (same["changed"], same["version"]) == (False, shown["version"])


def test_a_valid_reload_takes_effect_with_the_spend_of_the_period(gw: Gateway) -> None:
    assert chat(gw, gw.keys["HR"]).status_code == 200
    spent = ledger_cost(gw, "HR")
    old_hr = "      - {limit: 200, period: monthly, alert_at: [0.8], action: reject}\n"
    # HR gets a second, daily budget: its counter must start from today's spend, not from zero
    text = shown_yaml = ok(api(gw, "GET", "/policy"))["yaml"]
    text = text.replace(old_hr, old_hr + "      - {limit: 0.5, period: daily, action: reject}\n")
    assert text != shown_yaml
    reloaded = ok(api(gw, "POST", "/policy/reload", content=text))
    assert reloaded["changed"] is True and reloaded["version"] > reloaded["previous_version"]
    assert reloaded["counters_loaded"] >= 1 and reloaded["upstreams_rebuilt"] is False
    stored = query(gw, lambda ledger: ledger.latest_policy_version())
    assert stored is not None
    assert (stored.id, stored.yaml) == (reloaded["version"], text)
    hr = ok(api(gw, "GET", "/budgets", params={"department": "HR"}))
    daily, monthly = budget(hr, "dept:HR", 1), budget(hr, "dept:HR", 0)
    assert (daily["period"], daily["spent_nanos"], daily["limit_usd"]) == ("daily", spent, "0.5")
    assert monthly["spent_nanos"] == spent  # a budget it had keeps its counter as it was

    # an upstream moved: the pool is rebuilt and calls go to the new place (nothing listens there)
    moved = text.replace(gw.mock_url, "http://127.0.0.1:9")
    assert ok(api(gw, "POST", "/policy/reload", content=moved))["upstreams_rebuilt"] is True
    assert chat(gw, gw.keys["SALES"]).status_code == 502

    # with no body, the file given to --policy is read again
    back = ok(api(gw, "POST", "/policy/reload"))
    assert back["changed"] is True and back["upstreams_rebuilt"] is True
    assert ok(api(gw, "GET", "/policy"))["yaml"] == policy_text(gw.mock_url, BASE)
    assert chat(gw, gw.keys["SALES"]).status_code == 200
