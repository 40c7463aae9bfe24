"""Finance's reports over the admin API: chargeback (JSON, CSV, FOCUS), forecast, efficiency and
simulate, with the roles that may read them, against a running gateway."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from costwarden.policy import parse_policy
from gateway_fixtures import EXAMPLE, Gateway, policy_text, start_gateway

ADMIN = "bootstrap-admin-secret"


@pytest.fixture
def gw(tmp_path: Path, mock_url: str) -> Iterator[Gateway]:
    yield from start_gateway(tmp_path, mock_url, admin_token=ADMIN)


def api(gw: Gateway, method: str, path: str, token: str = ADMIN, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin/v1{path}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30, **kw)


def token_for(gw: Gateway, role: str, department: str | None = None) -> str:
    created = api(gw, "POST", "/tokens", json={"role": role, "department": department, "name": role})
    assert created.status_code == 201, created.text
    secret: str = created.json()["token"]
    return secret


def chat(gw: Gateway, department: str) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi #mock output_tokens=20"}]}
    answer = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                        headers={"Authorization": f"Bearer {gw.keys[department]}"})
    assert answer.status_code == 200, answer.text


def eventually_ok(gw: Gateway, token: str) -> None:
    """New tokens reach the server within seconds; poll with a deadline."""
    deadline = time.monotonic() + 10
    while api(gw, "GET", "/alerts", token).status_code != 200:
        assert time.monotonic() < deadline, "token not accepted within 10 s"
        time.sleep(0.05)


def test_reports_over_the_admin_api(gw: Gateway) -> None:
    for department in ("ENGINEERING", "MARKETING", "MARKETING"):
        chat(gw, department)
    statement = api(gw, "GET", "/chargeback", params={"period": _period()})
    assert statement.status_code == 200, statement.text
    document = statement.json()
    lines = {line["department_id"]: line for line in document["lines"]}
    assert lines["MARKETING"]["requests"] == 2 and lines["ENGINEERING"]["requests"] == 1

    as_csv = api(gw, "GET", "/chargeback", params={"period": _period(), "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["department_id"]: r["requests"] for r in rows}["MARKETING"] == "2"
    focus = api(gw, "GET", "/chargeback", params={"period": _period(), "format": "focus"})
    assert focus.status_code == 200 and "BilledCost" in focus.text.splitlines()[0]

    forecast = api(gw, "GET", "/reports/forecast").json()
    assert any(row["scope"] == "dept:MARKETING" for row in forecast["rows"])
    efficiency = api(gw, "GET", "/reports/efficiency", params={"format": "csv"})
    assert efficiency.status_code == 200 and efficiency.text.startswith("level,department,model,tier,calls")

    proposed = policy_text(gw.mock_url, EXAMPLE.read_text())
    simulated = api(gw, "POST", "/simulate", content=proposed.encode())
    assert simulated.status_code == 200, simulated.text
    by_department = {row["department"]: row for row in simulated.json()["rows"]}
    assert by_department["MARKETING"]["calls"] == 2 and by_department["MARKETING"]["allowed"] == 2

    # Roles: finance reads everything; a manager its own department only.
    finance = token_for(gw, "finance")
    manager = token_for(gw, "manager", "MARKETING")
    eventually_ok(gw, finance)
    eventually_ok(gw, manager)
    assert api(gw, "GET", "/chargeback", finance, params={"period": _period()}).status_code == 200
    own = api(gw, "GET", "/chargeback", manager, params={"period": _period()}).json()
    assert [line["department_id"] for line in own["lines"]] == ["MARKETING"]
    refused = api(gw, "GET", "/chargeback", manager, params={"period": _period(), "department": "ENGINEERING"})
    assert refused.status_code == 403
    assert api(gw, "GET", "/reports/efficiency", manager, params={"department": "HR"}).status_code == 403
    mine = api(gw, "GET", "/reports/forecast", manager).json()
    assert {row["scope"].split("/")[0] for row in mine["rows"]} <= {"dept:MARKETING", "team:MARKETING"}
    sim = api(gw, "POST", "/simulate", manager, content=proposed.encode())
    assert [row["department"] for row in sim.json()["rows"]] == ["MARKETING"]

    doc = httpx.get(f"{gw.url}/admin/v1/openapi.json", timeout=30).json()
    assert {"/chargeback", "/reports/forecast", "/reports/efficiency", "/simulate"} <= set(doc["paths"])
    assert "text/csv" in doc["paths"]["/chargeback"]["get"]["responses"]["200"]["content"]


def _period() -> str:
    """The current billing period in the example policy's timezone."""
    zone = parse_policy(EXAMPLE.read_text()).timezone
    return f"{datetime.now(UTC).astimezone(zone):%Y-%m}"


def test_the_caller_names_the_allocation_of_shared_costs(gw: Gateway) -> None:
    chat(gw, "ENGINEERING")
    chat(gw, "MARKETING")

    def statement(token: str = ADMIN, **params: str) -> httpx.Response:
        return api(gw, "GET", "/chargeback", token, params={"period": _period(), **params})

    def shared(**params: str) -> dict[str, str]:
        answer = statement(format="csv", **params)
        assert answer.status_code == 200, answer.text
        return {row["department_id"]: row["shared_cost_usd"] for row in csv.DictReader(io.StringIO(answer.text))}

    even = shared(shared_costs="method: even\nitems: [{name: Platform fee, amount_usd: 1.00}]\n")
    assert set(even.values()) == {"0.20"} and len(even) == 5  # every department line, idle ones included
    fixed = shared(shared_costs='{"method": "fixed", "weights": {"ENGINEERING": 3, "MARKETING": 1},'
                                ' "items": [{"name": "Vector database", "amount_usd": 1.00}]}')
    assert (fixed["ENGINEERING"], fixed["MARKETING"], fixed["HR"]) == ("0.75", "0.25", "0.00")
    document = statement(method="fixed", weights="engineering:3,MARKETING:1").json()
    assert document["allocation"]["method"] == "fixed"
    assert document["allocation"]["weights"] == {"ENGINEERING": "3", "MARKETING": "1"}
    assert statement(method="even").json()["allocation"]["method"] == "even"
    finance = token_for(gw, "finance")
    eventually_ok(gw, finance)
    assert statement(finance, method="even").status_code == 200

    for params, param in (({"method": "fixed"}, "method"), ({"method": "fixed", "weights": "LEGAL:1"}, "weights"),
                          ({"weights": "HR=1"}, "weights"), ({"method": "weighted"}, "method"),
                          ({"shared_costs": "method: even", "method": "even"}, "shared_costs"),
                          ({"shared_costs": "items: [{name: fee, amount_usd: lots}]"}, "shared_costs"),
                          ({"invoice_total": "lots"}, "invoice_total")):
        refused = statement(**params)
        assert refused.status_code == 400, params
        error = refused.json()["error"]
        assert (error["type"], error["param"]) == ("invalid_request_error", param), (params, error)
